// tests/lease/lease_sqlite_test.cc
//
// The SQLite backend: the conformance suite, what the lease table stores
// (metadata, sessions, tokens across restarts), and the cross-process safety
// checks with real processes sharing one database file, and a holder whose
// wall clock jumps (libfaketime) while its monotonic clock does not.
#include "tierlock/lease_sqlite.h"

#include <glob.h>
#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "lease/conformance.h"
#include "lease/history.h"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "tierlock/lease.h"

namespace tierlock::testing {
namespace {

using namespace std::chrono_literals;

// One directory for the suite's database files (removed at exit).
const std::filesystem::path& suite_dir() {
  static TempDir* dir = new TempDir;
  static struct Remove {
    ~Remove() { delete dir; }
  } remove;
  return dir->path();
}

std::shared_ptr<SqliteLeaseBackend> open_db(const std::filesystem::path& path,
                                            std::string session = "") {
  SqliteLeaseOptions o;
  o.path = path;
  o.session = std::move(session);
  absl::StatusOr<std::shared_ptr<SqliteLeaseBackend>> b =
      SqliteLeaseBackend::create(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : nullptr;
}

std::filesystem::path fresh_db() {
  static std::atomic<int> n{0};
  return suite_dir() / absl::StrCat("leases", n++, ".db");
}

INSTANTIATE_TEST_SUITE_P(
    Sqlite, LeaseConformanceTest,
    ::testing::Values(LeaseBackendFactory{
        "sqlite",
        [] { return std::shared_ptr<LeaseBackend>(open_db(fresh_db())); }}),
    [](const auto& p) { return p.param.name; });

class SqliteLeaseBackendTest : public ::testing::Test {
 protected:
  TempDir tmp_;
  std::filesystem::path db_ = tmp_.path() / "leases.db";
};

TEST_F(SqliteLeaseBackendTest, StoresMetadataSessionAndToken) {
  auto b = open_db(db_, "runner-1");
  ASSERT_OK_AND_ASSIGN(
      LeaseLock locks,
      LeaseLock::create(b, {.ttl = 30s, .metadata = "job 42"}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("build/x"));
  ASSERT_TRUE(a.has_value());
  ASSERT_OK_AND_ASSIGN(std::vector<SqliteLeaseRow> rows, b->list());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].key, "build/x");
  EXPECT_EQ(rows[0].owner_id, a->owner_id());
  EXPECT_EQ(rows[0].session, "runner-1");
  EXPECT_EQ(rows[0].metadata, "job 42");
  EXPECT_EQ(rows[0].token, *a->token());
  EXPECT_TRUE(rows[0].held);
}

TEST_F(SqliteLeaseBackendTest, DefaultSessionIsHostAndPid) {
  auto b = open_db(db_);
  EXPECT_NE(b->session().find(absl::StrCat(":", ::getpid())),
            std::string::npos);
}

TEST_F(SqliteLeaseBackendTest, LeasesAndTokensSurviveTheHoldersProcess) {
  // A process takes the lease and dies without releasing (SIGKILL).
  Process holder = Process::spawn(
      {lease_helper_path(), "hold", "sqlite:" + db_.string(), "k", "60000"});
  std::optional<std::string> held = holder.read_line();
  ASSERT_TRUE(held && held->rfind("held 1 ", 0) == 0) << held.value_or("");
  ::kill(holder.pid(), SIGKILL);
  holder.wait();
  auto b = open_db(db_, "restarted");
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> busy, locks.try_acquire("k"));
  EXPECT_FALSE(busy.has_value())
      << "the dead holder's lease lasts until its TTL";
  ASSERT_OK_AND_ASSIGN(std::vector<SqliteLeaseRow> rows, b->list());
  ASSERT_EQ(rows.size(), 1u);
  // Its session (host:pid of the helper) is released as a whole.
  ASSERT_OK_AND_ASSIGN(int n, b->release_all(rows[0].session));
  EXPECT_EQ(n, 1);
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> mine, locks.try_acquire("k"));
  ASSERT_TRUE(mine.has_value());
  EXPECT_EQ(*mine->token(), 2u) << "the counter row survives the holder";
}

TEST_F(SqliteLeaseBackendTest, ReleaseAllMakesThatSessionsLeasesLost) {
  auto a = open_db(db_, "a");
  auto other = open_db(db_, "b");
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(a, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> l1, locks.try_acquire("k1"));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> l2, locks.try_acquire("k2"));
  ASSERT_OK_AND_ASSIGN(int none, other->release_all("b"));
  EXPECT_EQ(none, 0);
  ASSERT_OK_AND_ASSIGN(int n, other->release_all("a"));
  EXPECT_EQ(n, 2);
  ASSERT_OK_AND_ASSIGN(bool extended, l1->extend(30s));
  EXPECT_FALSE(extended);
  ASSERT_OK_AND_ASSIGN(bool released, l2->release());
  EXPECT_FALSE(released);
}

TEST_F(SqliteLeaseBackendTest, ReclaimDeletesOnlyExpiredRows) {
  auto b = open_db(db_);
  ASSERT_OK_AND_ASSIGN(LeaseLock shorts, LeaseLock::create(b, {.ttl = 10ms}));
  ASSERT_OK_AND_ASSIGN(LeaseLock longs, LeaseLock::create(b, {.ttl = 60s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> s, shorts.try_acquire("short"));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> l, longs.try_acquire("long"));
  ASSERT_TRUE(wait_until([&] { return s->lost().stop_requested(); }));
  // lost() fires a clock-drift margin before the row expires: poll.
  int n = 0;
  EXPECT_TRUE(wait_until([&] {
    absl::StatusOr<int> r = b->reclaim_expired();
    n = r.ok() ? *r : -1;
    return n != 0;
  }));
  EXPECT_EQ(n, 1);
  ASSERT_OK_AND_ASSIGN(std::vector<SqliteLeaseRow> rows, b->list());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].key, "long");
}

TEST_F(SqliteLeaseBackendTest, UnopenableFileIsAnErrorNamingThePath) {
  SqliteLeaseOptions o;
  o.path = tmp_.path() / "missing-dir" / "x.db";
  absl::Status s = SqliteLeaseBackend::create(o).status();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("missing-dir"), std::string::npos) << s;
}

// A symbolic link planted where the database goes (a shared directory) once
// made SQLite create the database, -wal and -shm at the link's target.
TEST_F(SqliteLeaseBackendTest,
       SymlinkedDatabaseIsRefusedAndNothingIsCreatedAtItsTarget) {
  const std::filesystem::path elsewhere = tmp_.path() / "elsewhere";
  std::filesystem::create_directory(elsewhere);
  std::filesystem::create_symlink(elsewhere / "target.db", db_);
  SqliteLeaseOptions o;
  o.path = db_;
  absl::Status s = SqliteLeaseBackend::create(o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find(db_.string() + "': is a symbolic link"),
            std::string::npos)
      << s;
  EXPECT_TRUE(std::filesystem::is_empty(elsewhere));
}

// SQLite opens -wal and -shm with O_NOFOLLOW, so a link there is not followed
// even without the check; the check makes the error name it.
TEST_F(SqliteLeaseBackendTest, PlantedWalOrShmSymlinkIsRefusedNamingIt) {
  for (const char* suffix : {"-wal", "-shm"}) {
    const std::filesystem::path elsewhere =
        tmp_.path() / (std::string("elsewhere") + suffix);
    std::filesystem::create_directory(elsewhere);
    const std::filesystem::path link = db_.string() + suffix;
    std::filesystem::create_symlink(elsewhere / "target", link);
    SqliteLeaseOptions o;
    o.path = db_;
    absl::Status s = SqliteLeaseBackend::create(o).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition)
        << suffix << ": " << s;
    EXPECT_NE(s.message().find(link.string() + "': is a symbolic link"),
              std::string::npos)
        << s;
    EXPECT_TRUE(std::filesystem::is_empty(elsewhere)) << suffix;
    std::filesystem::remove(link);
  }
}

TEST_F(SqliteLeaseBackendTest, SymlinkedDirectoryInThePathIsRefused) {
  const std::filesystem::path real = tmp_.path() / "real";
  std::filesystem::create_directory(real);
  std::filesystem::create_directory_symlink(real, tmp_.path() / "link");
  SqliteLeaseOptions o;
  o.path = tmp_.path() / "link" / "leases.db";
  absl::Status s = SqliteLeaseBackend::create(o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("symbolic link"), std::string::npos) << s;
  EXPECT_NE(s.message().find(o.path.string()), std::string::npos) << s;
  EXPECT_TRUE(std::filesystem::is_empty(real));
}

TEST_F(SqliteLeaseBackendTest,
       HistoryOfFourProcessesHasNoOverlapAndFencesEveryWrite) {
  EXPECT_EQ(
      check_history("sqlite:" + db_.string(), "hist", 4, 25, tmp_.path(), true),
      "");
}

TEST_F(SqliteLeaseBackendTest, KilledHolderFreesTheKeyWithinItsTtl) {
  EXPECT_EQ(check_sigkill("sqlite:" + db_.string(), "killed", 1000ms,
                          1000ms + 2000ms),
            "");
}

TEST_F(SqliteLeaseBackendTest, PausedHolderLosesTheLeaseAndItsWriteIsFenced) {
  std::string figures;
  EXPECT_EQ(check_sigstop("sqlite:" + db_.string(), "paused", 500ms,
                          tmp_.path(), &figures),
            "");
  std::cout << "sqlite SIGSTOP: " << figures << std::endl;
}

TEST_F(SqliteLeaseBackendTest,
       RenewalBlockedByAnotherWriterEndsByTheLeasesDeadline) {
  SqliteLeaseOptions o;
  o.path = db_;
  o.busy_timeout = 10s;  // far longer than the ttl
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<SqliteLeaseBackend> b,
                       SqliteLeaseBackend::create(o));
  ASSERT_OK_AND_ASSIGN(
      LeaseLock locks,
      LeaseLock::create(b, {.ttl = 600ms, .auto_renew = true}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("busy"));
  ASSERT_TRUE(a.has_value());
  // Another connection takes the write lock: the renewals wait on it.
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(db_.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr),
            SQLITE_OK);
  ASSERT_TRUE(wait_until([&] { return a->lost().stop_requested(); }, 5s));
  const auto lost_at = std::chrono::steady_clock::now();
  EXPECT_LE(lost_at, a->valid_until() + 50ms) << "lost() late";
  // At the deadline, not through an early error: the renewal was waiting.
  EXPECT_GE(lost_at, a->valid_until())
      << "lost " << (a->valid_until() - lost_at) / 1ms << " ms early";
  // The renewal gave up at the deadline, not after the 10 s busy timeout:
  // the backend's connection is free again while the writer still holds
  // the database (a WAL reader does not need the write lock).
  ASSERT_OK(b->list().status());
  EXPECT_LT(std::chrono::steady_clock::now() - lost_at, 1s)
      << "the renewal outlived the lease";
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  ASSERT_OK_AND_ASSIGN(bool released, a->release());
  EXPECT_FALSE(released);
}

// ------------------------------------------------------------ wall-clock jumps

// This process's ASAN_OPTIONS, followed by ':' when not empty.
std::string asan_options() {
  const char* o = std::getenv("ASAN_OPTIONS");
  return o == nullptr || *o == '\0' ? std::string() : absl::StrCat(o, ":");
}

// Runs a lease holder under libfaketime with its wall clock (CLOCK_REALTIME,
// time(), gettimeofday) offset by what the test writes to a file, read again
// on every call, and its monotonic clock untouched: the client side of the
// leases must not notice (it reads only the monotonic clock; SQLite stores
// CLOCK_MONOTONIC times, which every process of the host shares).
class WallClockJump {
 public:
  explicit WallClockJump(const std::filesystem::path& dir)
      : file_(dir / "faketime") {
    glob_t g{};
    if (::glob("/usr/lib/*/faketime/libfaketime.so.1", 0, nullptr, &g) == 0 &&
        g.gl_pathc > 0) {
      lib_ = g.gl_pathv[0];
    }
    ::globfree(&g);
    set("+0");
  }
  // Empty if libfaketime is not installed.
  const std::string& lib() const { return lib_; }
  // `offset`: libfaketime's relative form, e.g. "+1d", "-2d", "+0".
  void set(const std::string& offset) {
    const std::filesystem::path tmp = file_.string() + ".tmp";
    std::ofstream(tmp) << offset << "\n";
    std::filesystem::rename(tmp, file_);  // readers see the old or the new
  }
  std::vector<std::string> argv(const std::vector<std::string>& command) const {
    std::vector<std::string> a = {"env", "LD_PRELOAD=" + lib_,
                                  "FAKETIME_TIMESTAMP_FILE=" + file_.string(),
                                  "FAKETIME_NO_CACHE=1",
                                  "FAKETIME_DONT_FAKE_MONOTONIC=1",
                                  // ASan wants its runtime first in the library
                                  // list; keep the caller's other options.
                                  absl::StrCat("ASAN_OPTIONS=", asan_options(),
                                               "verify_asan_link_order=0")};
    a.insert(a.end(), command.begin(), command.end());
    return a;
  }

 private:
  std::filesystem::path file_;
  std::string lib_;
};

// "k1=v1 k2=v2" -> integers by key (a missing or bad value: absent).
std::map<std::string, std::int64_t> fields(
    const std::optional<std::string>& line) {
  std::map<std::string, std::int64_t> out;
  if (!line) return out;
  for (absl::string_view kv : absl::StrSplit(*line, ' ')) {
    std::pair<absl::string_view, absl::string_view> p =
        absl::StrSplit(kv, absl::MaxSplits('=', 1));
    std::int64_t v = 0;
    if (absl::SimpleAtoi(p.second, &v)) out[std::string(p.first)] = v;
  }
  return out;
}

std::map<std::string, std::int64_t> check(Process& holder) {
  EXPECT_TRUE(holder.write_line("check"));
  std::optional<std::string> line = holder.read_line();
  EXPECT_TRUE(line && line->rfind("lost=", 0) == 0)
      << line.value_or("(nothing)");
  return fields(line);
}

std::int64_t wall_now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::int64_t steady_now_ns() {
  return std::chrono::steady_clock::now().time_since_epoch().count();
}

TEST_F(SqliteLeaseBackendTest,
       AutoRenewedLeaseSurvivesItsHoldersWallClockJumps) {
  WallClockJump jump(tmp_.path());
  ASSERT_FALSE(jump.lib().empty())
      << "libfaketime not installed; run scripts/deps.sh";
  constexpr std::int64_t kTtlMs = 600;
  Process holder = Process::spawn(
      jump.argv({lease_helper_path(), "hold", "sqlite:" + db_.string(), "k",
                 "600", "--auto-renew"}));
  std::optional<std::string> held = holder.read_line();
  ASSERT_TRUE(held && held->rfind("held 1 ", 0) == 0) << held.value_or("");
  const std::int64_t first_valid_until = check(holder)["valid_until_ns"];

  jump.set("+1d");
  std::map<std::string, std::int64_t> c = check(holder);
  ASSERT_GT(c["wall_s"], wall_now_s() + 86'000)
      << "libfaketime did not move the wall clock";
  EXPECT_EQ(c["lost"], 0);
  // Renewals go on (valid_until moves on the monotonic clock) and the lease
  // is never lost, through a jump forward and one back, for several TTLs.
  const std::int64_t ttl_ns = kTtlMs * 1'000'000;
  ASSERT_TRUE(wait_until(
      [&] {
        c = check(holder);
        return c["lost"] != 0 ||
               c["valid_until_ns"] > first_valid_until + ttl_ns;
      },
      20s));
  EXPECT_EQ(c["lost"], 0);
  jump.set("-2d");
  c = check(holder);
  ASSERT_LT(c["wall_s"], wall_now_s() - 86'000)
      << "libfaketime did not move the wall clock";
  ASSERT_TRUE(wait_until(
      [&] {
        c = check(holder);
        return c["lost"] != 0 ||
               c["valid_until_ns"] > first_valid_until + 3 * ttl_ns;
      },
      20s));
  EXPECT_EQ(c["lost"], 0);
  // Another process (whose wall clock never moved) still finds it held.
  auto b = open_db(db_, "other");
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> busy, locks.try_acquire("k"));
  EXPECT_FALSE(busy.has_value());
}

TEST_F(SqliteLeaseBackendTest,
       LeaseWithoutRenewalExpiresOnTheMonotonicClockDespiteWallClockJumps) {
  WallClockJump jump(tmp_.path());
  ASSERT_FALSE(jump.lib().empty())
      << "libfaketime not installed; run scripts/deps.sh";
  constexpr std::int64_t kTtlMs = 2000;
  const std::int64_t start = steady_now_ns();
  Process holder = Process::spawn(jump.argv(
      {lease_helper_path(), "hold", "sqlite:" + db_.string(), "k", "2000"}));
  std::optional<std::string> held = holder.read_line();
  ASSERT_TRUE(held && held->rfind("held 1 ", 0) == 0) << held.value_or("");
  // A day back: a lease timed on the wall clock would now last a day.
  jump.set("-1d");
  std::map<std::string, std::int64_t> c = check(holder);
  ASSERT_LT(c["wall_s"], wall_now_s() - 86'000)
      << "libfaketime did not move the wall clock";
  const std::int64_t valid_until = c["valid_until_ns"];
  EXPECT_LE(valid_until, steady_now_ns() + kTtlMs * 1'000'000);
  // A day forward: one timed on the wall clock would have expired at once.
  jump.set("+1d");
  c = check(holder);
  if (c["now_ns"] < valid_until) {
    EXPECT_EQ(c["lost"], 0)
        << "lost before its TTL after a wall-clock jump forward";
  }
  // It is lost at its TTL, not before and not a day later.
  ASSERT_TRUE(holder.write_line("wait-lost 20000"));
  std::map<std::string, std::int64_t> lost = fields(holder.read_line(30s));
  ASSERT_EQ(lost["lost"], 1)
      << "not lost within 20 s of a " << kTtlMs << " ms TTL";
  EXPECT_GE(lost["at_ns"], valid_until);
  EXPECT_EQ(lost["valid_until_ns"], valid_until)
      << "valid_until moved without a renewal";
  EXPECT_LT(lost["at_ns"] - start, (kTtlMs + 10'000) * 1'000'000);
  // And another process can take the key once the database's expiry
  // passes too (the holder's valid_until is a drift margin earlier).
  auto b = open_db(db_, "other");
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  std::optional<Lease> mine;
  EXPECT_TRUE(wait_until([&] {
    absl::StatusOr<std::optional<Lease>> r = locks.try_acquire("k");
    if (r.ok() && r->has_value()) mine = std::move(*r);
    return mine.has_value();
  }));
}

}  // namespace
}  // namespace tierlock::testing

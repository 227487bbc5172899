// tests/lease/lease_holder_test.cc
//
// Who holds a lease: LeaseLock::holder / LeaseBackend::holder_of on memory,
// SQLite, Redis and the PostgreSQL lease table (each if built; real servers),
// another process's lease seen through `tierlock run --backend`, hostile
// bytes in the holder's command line, `tierlock status --backend` (text and
// JSON), holders named in contention messages, and databases whose tables
// an older tierlock made.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "lease/servers.h"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "tierlock/lease.h"
#include "tierlock/lease_memory.h"
#include "tierlock/text.h"
#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
#include <libpq-fe.h>

#include "tierlock/lease_postgres.h"
#endif
#ifdef TIERLOCK_HAVE_LEASE_SQLITE
#include <sqlite3.h>

#include "tierlock/lease_sqlite.h"
#endif
#ifdef TIERLOCK_HAVE_LEASE_REDIS
#include "tierlock/lease_redis.h"
#endif

namespace tierlock::testing {
namespace {

using namespace std::chrono_literals;

// A command-line argument no terminal should see raw: an escape sequence
// (retitles the window), a bidi override, a newline, invalid UTF-8.
const std::string kHostile = "evil\x1b]0;pwned\x07\xe2\x80\xae\n\xff end";

// This process's command line as the backends record it.
std::string own_program() {
  std::FILE* f = std::fopen("/proc/self/cmdline", "rb");
  std::string out;
  if (f == nullptr) return out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  while (!out.empty() && out.back() == '\0') out.pop_back();
  std::replace(out.begin(), out.end(), '\0', ' ');
  return out.substr(0, 512);
}

std::string hex_of(std::string_view bytes) {
  std::string hex;
  for (char c : bytes) {
    absl::StrAppend(&hex,
                    absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
  }
  return hex;
}

std::string hostname() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

struct HolderBackend {
  std::string name;
  std::function<std::shared_ptr<LeaseBackend>()> make;
  // The URL `tierlock run --backend` takes for the same service; empty: not
  // reachable from another process (memory).
  std::function<std::string()> url;
};

void PrintTo(const HolderBackend& b, std::ostream* os) { *os << b.name; }

// A shared SQLite file per test binary run (each test uses its own keys).
const TempDir& sqlite_dir() {
  static const TempDir* dir = new TempDir;
  return *dir;
}

std::vector<HolderBackend> backends() {
  std::vector<HolderBackend> out;
  out.push_back({"memory",
                 [] {
                   static auto b = MemoryLeaseBackend::create();
                   return std::shared_ptr<LeaseBackend>(b);
                 },
                 nullptr});
#ifdef TIERLOCK_HAVE_LEASE_SQLITE
  out.push_back({"sqlite",
                 []() -> std::shared_ptr<LeaseBackend> {
                   auto b = SqliteLeaseBackend::create(
                       {.path = sqlite_dir().path() / "leases.db"});
                   EXPECT_TRUE(b.ok()) << b.status();
                   return b.ok() ? *b : nullptr;
                 },
                 [] {
                   return "sqlite:" +
                          (sqlite_dir().path() / "leases.db").string();
                 }});
#endif
#ifdef TIERLOCK_HAVE_LEASE_REDIS
  out.push_back({"redis",
                 []() -> std::shared_ptr<LeaseBackend> {
                   auto b = RedisLeaseBackend::create(
                       {.host = "127.0.0.1", .port = shared_redis().port()});
                   EXPECT_TRUE(b.ok()) << b.status();
                   return b.ok() ? *b : nullptr;
                 },
                 [] { return shared_redis().url(); }});
#endif
#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
  out.push_back({"postgres_table",
                 []() -> std::shared_ptr<LeaseBackend> {
                   PostgresLeaseOptions o;
                   o.conninfo = shared_postgres().conninfo();
                   o.mode = PostgresLeaseOptions::Mode::kLeaseTable;
                   auto b = PostgresLeaseBackend::create(o);
                   EXPECT_TRUE(b.ok()) << b.status();
                   return b.ok() ? *b : nullptr;
                 },
                 [] {
                   return absl::StrCat("postgresql://tl@127.0.0.1:",
                                       shared_postgres().port(), "/postgres");
                 }});
#endif
  return out;
}

class LeaseHolderTest : public ::testing::TestWithParam<HolderBackend> {
 protected:
  void SetUp() override {
    backend_ = GetParam().make();
    ASSERT_NE(backend_, nullptr);
    key_ = absl::StrCat(
        "holder-",
        ::testing::UnitTest::GetInstance()->current_test_info()->name(), "-",
        ::getpid());
    std::replace(key_.begin(), key_.end(), '/', '-');
  }
  LeaseLock locks() {
    absl::StatusOr<LeaseLock> l = LeaseLock::create(backend_, {.ttl = 30s});
    EXPECT_TRUE(l.ok()) << l.status();
    return *std::move(l);
  }
  // `tierlock run --backend URL --key KEY -- sh -c 'read x' sh HOSTILE`:
  // holds the lease until its stdin closes.
  std::vector<std::string> hold_argv() const {
    return {TIERLOCK_CLI_PATH,
            "run",
            "--backend",
            GetParam().url(),
            "--key",
            key_,
            "--",
            "sh",
            "-c",
            "read x; true",
            "sh",
            kHostile};
  }
  std::vector<std::string> status_argv(bool json) const {
    std::vector<std::string> a = {TIERLOCK_CLI_PATH, "status", "--backend",
                                  GetParam().url(),  "--key",  key_};
    if (json) a.push_back("--json");
    return a;
  }

  std::shared_ptr<LeaseBackend> backend_;
  std::string key_;
};

TEST_P(LeaseHolderTest, ReportsOwnMetadataWhileHeldAndNothingAfterRelease) {
  LeaseLock l = locks();
  ASSERT_OK_AND_ASSIGN(std::optional<Holder> free, l.holder(key_));
  EXPECT_FALSE(free.has_value()) << key_ << " is free";
  const auto before = std::chrono::system_clock::now();
  ASSERT_OK_AND_ASSIGN(Lease lease, l.acquire(key_));
  ASSERT_OK_AND_ASSIGN(std::optional<Holder> h, l.holder(key_));
  ASSERT_TRUE(h.has_value()) << key_;
  EXPECT_EQ(h->owner_id, lease.owner_id());
  EXPECT_EQ(h->token, lease.token());
  EXPECT_EQ(h->pid, ::getpid());
  EXPECT_EQ(h->host, hostname());
  EXPECT_EQ(h->program, own_program());
  ASSERT_TRUE(h->since.has_value());
  // The server's wall clock for PostgreSQL: same host, allow a second.
  EXPECT_GE(*h->since, before - 1s);
  EXPECT_LE(*h->since, std::chrono::system_clock::now() + 1s);
  ASSERT_OK_AND_ASSIGN(bool released, lease.release());
  EXPECT_TRUE(released);
  ASSERT_OK_AND_ASSIGN(std::optional<Holder> after, l.holder(key_));
  EXPECT_FALSE(after.has_value()) << key_ << " was released";
}

TEST_P(LeaseHolderTest, TimeoutAndCliContentionNameTheHolder) {
  LeaseLock l = locks();
  ASSERT_OK_AND_ASSIGN(Lease lease, l.acquire(key_));
  absl::StatusOr<Lease> second = l.acquire(key_, {.timeout = 50ms});
  ASSERT_EQ(second.status().code(), absl::StatusCode::kDeadlineExceeded);
  const std::string msg(second.status().message());
  EXPECT_TRUE(absl::StrContains(msg, absl::StrCat("held by pid ", ::getpid())))
      << msg;
  EXPECT_TRUE(absl::StrContains(msg, absl::StrCat("token ", *lease.token())))
      << msg;
  absl::StatusOr<Lease> async = l.acquire_async(key_, {.timeout = 50ms}).get();
  EXPECT_TRUE(absl::StrContains(async.status().message(),
                                absl::StrCat("held by pid ", ::getpid())))
      << async.status();
  if (!GetParam().url) return;
  // The CLI's try: its message (stderr, joined to stdout) names us.
  RunResult r =
      run({"sh", "-c", "exec \"$@\" 2>&1", "sh", TIERLOCK_CLI_PATH, "run", "-n",
           "--backend", GetParam().url(), "--key", key_, "--", "true"});
  EXPECT_EQ(r.status.code, 75) << r.out;
  EXPECT_TRUE(
      absl::StrContains(r.out, absl::StrCat("held by pid ", ::getpid(), " '")))
      << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, absl::StrCat("token ", *lease.token())))
      << r.out;
}

TEST_P(LeaseHolderTest, AnotherProcessIsReportedExactlyAndPrintedEscaped) {
  if (!GetParam().url) GTEST_SKIP() << "in-process backend";
  Process holder = Process::spawn(hold_argv());
  LeaseLock l = locks();
  std::optional<Holder> h;
  ASSERT_TRUE(wait_until([&] {
    absl::StatusOr<std::optional<Holder>> got = l.holder(key_);
    if (got.ok()) h = *got;
    return got.ok() && h.has_value();
  })) << key_
      << ": the CLI never took the lease";
  EXPECT_EQ(h->pid, holder.pid()) << "tierlock execs tierlock-lease in place";
  ASSERT_TRUE(h->program.has_value());
  EXPECT_TRUE(absl::EndsWith(*h->program, " " + kHostile))
      << escape_text(*h->program);
  EXPECT_TRUE(absl::StrContains(*h->program, " run --backend "))
      << escape_text(*h->program);
  EXPECT_EQ(h->host, hostname());
  EXPECT_TRUE(h->token.has_value());
  EXPECT_TRUE(h->owner_id.has_value());

  RunResult text = run(status_argv(false));
  EXPECT_EQ(text.status.code, 0) << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, ": held\n")) << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, absl::StrCat("pid ", holder.pid())))
      << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, escape_text(kHostile))) << text.out;
  for (char c : text.out) {
    const auto u = static_cast<unsigned char>(c);
    ASSERT_TRUE(c == '\n' || (u >= 0x20 && u < 0x7f))
        << "raw byte " << static_cast<int>(u)
        << " in: " << escape_text(text.out);
  }

  // Valid JSON (python3 parses it), with the exact bytes recoverable.
  RunResult json = run(status_argv(true));
  EXPECT_EQ(json.status.code, 0) << json.out;
  const std::filesystem::path out = sqlite_dir().path() / (key_ + ".json");
  {
    std::FILE* f = std::fopen(out.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(json.out.data(), 1, json.out.size(), f);
    std::fclose(f);
  }
  RunResult parsed =
      run({"python3", "-c",
           "import json,sys\n"
           "j = json.load(open(sys.argv[1]))\n"
           "h = j['holder']\n"
           "p = bytes.fromhex(h['program_bytes'])\n"
           "print(j['state'], h['pid'], h['token'], p.endswith(bytes.fromhex("
           "sys.argv[2])))\n",
           out.string(), hex_of(kHostile)});
  EXPECT_EQ(parsed.status.code, 0) << json.out;
  EXPECT_EQ(parsed.out,
            absl::StrCat("held ", holder.pid(), " ", *h->token, " True\n"))
      << json.out;

  holder.close_stdin();  // `read` returns: the command ends, the lease goes
  EXPECT_EQ(holder.wait().code, 0);
  ASSERT_OK_AND_ASSIGN(std::optional<Holder> after, l.holder(key_));
  EXPECT_FALSE(after.has_value());
  RunResult free = run(status_argv(false));
  EXPECT_EQ(free.status.code, 0);
  EXPECT_TRUE(absl::EndsWith(free.out, ": free\n")) << free.out;
  RunResult free_json = run(status_argv(true));
  EXPECT_TRUE(absl::StrContains(free_json.out, "\"state\":\"free\""))
      << free_json.out;
}

TEST_P(LeaseHolderTest, WaitersAreListedInArrivalOrder) {
  LeaseLock l = locks();
  if (GetParam().name == "memory") {
    EXPECT_EQ(l.waiters(key_).status().code(), absl::StatusCode::kUnimplemented)
        << "no queue to list";
    return;
  }
  ASSERT_OK_AND_ASSIGN(std::vector<Holder> none, l.waiters(key_));
  EXPECT_TRUE(none.empty());
  ASSERT_OK_AND_ASSIGN(Lease lease, l.acquire(key_));
  std::vector<std::string> granted(2);
  std::vector<std::thread> waiters;
  for (int i = 0; i < 2; ++i) {
    // One at a time, so the arrival order is known.
    waiters.emplace_back([&, i] {
      absl::StatusOr<Lease> got = l.acquire(key_, {.timeout = 30s});
      EXPECT_TRUE(got.ok()) << got.status();
      if (!got.ok()) return;
      granted[static_cast<std::size_t>(i)] = got->owner_id();
      EXPECT_OK(got->release());
    });
    ASSERT_TRUE(wait_until([&] {
      absl::StatusOr<std::vector<Holder>> w = l.waiters(key_);
      return w.ok() && w->size() == static_cast<std::size_t>(i + 1);
    })) << key_
        << ": waiter " << i << " never queued";
  }
  ASSERT_OK_AND_ASSIGN(std::vector<Holder> queued, l.waiters(key_));
  ASSERT_EQ(queued.size(), 2u);
  ASSERT_OK(lease.release().status());
  for (std::thread& t : waiters) t.join();
  EXPECT_EQ(queued[0].owner_id, granted[0]);
  EXPECT_EQ(queued[1].owner_id, granted[1]);
  ASSERT_OK_AND_ASSIGN(none, l.waiters(key_));
  EXPECT_TRUE(none.empty());
}

INSTANTIATE_TEST_SUITE_P(Backends, LeaseHolderTest,
                         ::testing::ValuesIn(backends()),
                         [](const auto& p) { return p.param.name; });

TEST(LeaseHolderCliTest, StatusBackendUsageErrors) {
  TempDir tmp;
  const std::string url = "sqlite:" + (tmp.path() / "db").string();
  auto code = [](std::vector<std::string> args) {
    args.insert(args.begin(), {TIERLOCK_CLI_PATH, "status"});
    return run(args).status.code;
  };
  EXPECT_EQ(code({"--backend", url, "--key", "k", tmp.path().string()}), 64)
      << "DIR with --backend";
  EXPECT_EQ(code({"--backend", url}), 64) << "no --key";
  EXPECT_EQ(code({"--key", "k", tmp.path().string()}), 64) << "no --backend";
  EXPECT_EQ(code({"--backend", "nosuch://x", "--key", "k"}), 64);
  EXPECT_EQ(code({}), 64) << "neither DIR nor --backend";
  EXPECT_EQ(code({"--backend", url, "--key", "k"}), 0);
}

#ifdef TIERLOCK_HAVE_LEASE_SQLITE
// Tables as a tierlock without holder records made them.
constexpr char kOldSqliteSchema[] =
    "CREATE TABLE tierlock_leases ("
    " key TEXT PRIMARY KEY, owner TEXT NOT NULL, session TEXT NOT NULL,"
    " token INTEGER NOT NULL, metadata TEXT NOT NULL DEFAULT '',"
    " boot_id TEXT NOT NULL, expires_ns INTEGER NOT NULL);"
    "CREATE TABLE tierlock_lease_tokens (key TEXT PRIMARY KEY, last INTEGER "
    "NOT NULL);";

void sqlite_exec(const std::filesystem::path& path, const char* sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << path << ": " << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

TEST(LeaseHolderSqliteTest, OldSchemaDatabaseGainsHolderRecords) {
  TempDir tmp;
  const auto path = tmp.path() / "old.db";
  sqlite_exec(path, kOldSqliteSchema);
  ASSERT_OK_AND_ASSIGN(auto b, SqliteLeaseBackend::create({.path = path}));
  ASSERT_OK_AND_ASSIGN(LeaseLock l, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(Lease lease, l.acquire("old"));
  ASSERT_OK_AND_ASSIGN(std::optional<Holder> h, l.holder("old"));
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->pid, ::getpid());
  EXPECT_EQ(h->token, lease.token());
  // A grant with no holder row (an older tierlock's): owner and token only.
  sqlite_exec(path, "DELETE FROM tierlock_lease_holders");
  ASSERT_OK_AND_ASSIGN(h, l.holder("old"));
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->owner_id, lease.owner_id());
  EXPECT_EQ(h->token, lease.token());
  EXPECT_FALSE(h->pid.has_value());
  EXPECT_FALSE(h->program.has_value());
  ASSERT_OK_AND_ASSIGN(bool released, lease.release());
  EXPECT_TRUE(released);
  ASSERT_OK_AND_ASSIGN(h, l.holder("old"));
  EXPECT_FALSE(h.has_value());
}
#endif

#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
absl::Status pg_exec(const std::string& conninfo, const std::string& sql) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  absl::Status s;
  if (PQstatus(c) != CONNECTION_OK) {
    s = absl::UnavailableError(PQerrorMessage(c));
  } else {
    PGresult* r = PQexec(c, sql.c_str());
    const ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      s = absl::InternalError(absl::StrCat(sql, ": ", PQerrorMessage(c)));
    }
    PQclear(r);
  }
  PQfinish(c);
  return s;
}

TEST(LeaseHolderPostgresTest, OldSchemaTableGainsHolderRecords) {
  const std::string conninfo = shared_postgres().conninfo();
  // The table as a tierlock without holder records made it.
  ASSERT_OK(pg_exec(conninfo,
                    "CREATE SEQUENCE old_leases_token; "
                    "CREATE TABLE old_leases (key text PRIMARY KEY, owner text "
                    "NOT NULL, token bigint NOT NULL, expires_at timestamptz "
                    "NOT NULL, acquired_at timestamptz NOT NULL DEFAULT "
                    "clock_timestamp()); "
                    "INSERT INTO old_leases VALUES ('stale', 'x', 1, "
                    "clock_timestamp() - interval '1 hour')"));
  PostgresLeaseOptions o;
  o.conninfo = conninfo;
  o.mode = PostgresLeaseOptions::Mode::kLeaseTable;
  o.table = "old_leases";
  ASSERT_OK_AND_ASSIGN(auto b, PostgresLeaseBackend::create(o));
  ASSERT_OK_AND_ASSIGN(LeaseLock l, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Holder> h, l.holder("stale"));
  EXPECT_FALSE(h.has_value()) << "an expired row is free";
  ASSERT_OK_AND_ASSIGN(Lease lease, l.acquire("stale"));
  ASSERT_OK_AND_ASSIGN(h, l.holder("stale"));
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->pid, ::getpid());
  EXPECT_EQ(h->program, own_program());
  EXPECT_EQ(h->token, lease.token());
  ASSERT_OK(pg_exec(conninfo, "DELETE FROM old_leases_holders"));
  ASSERT_OK_AND_ASSIGN(h, l.holder("stale"));
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->owner_id, lease.owner_id());
  EXPECT_FALSE(h->pid.has_value()) << "no holder row: nothing guessed";
  ASSERT_OK_AND_ASSIGN(bool released, lease.release());
  EXPECT_TRUE(released);
}

TEST(LeaseHolderPostgresTest, AdvisoryModeSaysHeldButNotByWhom) {
  PostgresLeaseOptions o;
  o.conninfo = shared_postgres().conninfo();
  o.mode = PostgresLeaseOptions::Mode::kAdvisory;
  ASSERT_OK_AND_ASSIGN(auto b, PostgresLeaseBackend::create(o));
  ASSERT_OK_AND_ASSIGN(LeaseLock l, LeaseLock::create(b));
  const std::string key = absl::StrCat("adv-", ::getpid());
  ASSERT_OK_AND_ASSIGN(std::optional<Holder> h, l.holder(key));
  EXPECT_FALSE(h.has_value());
  ASSERT_OK_AND_ASSIGN(Lease lease, l.acquire(key));
  ASSERT_OK_AND_ASSIGN(h, l.holder(key));
  ASSERT_TRUE(h.has_value());
  EXPECT_FALSE(h->pid.has_value()) << "pg_locks names the server session only";
  EXPECT_FALSE(h->owner_id.has_value());
  ASSERT_OK_AND_ASSIGN(bool released, lease.release());
  EXPECT_TRUE(released);
  ASSERT_OK_AND_ASSIGN(h, l.holder(key));
  EXPECT_FALSE(h.has_value());
}
#endif

}  // namespace
}  // namespace tierlock::testing

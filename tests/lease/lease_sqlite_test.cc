// tests/lease/lease_sqlite_test.cc
//
// The SQLite backend: the conformance suite, what the lease table stores
// (metadata, sessions, tokens across restarts), and the cross-process safety
// checks with real processes sharing one database file.
#include <signal.h>
#include <unistd.h>

#include <atomic>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lease/conformance.h"
#include "lease/history.h"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "tierlock/lease.h"
#include "tierlock/lease_sqlite.h"

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
  absl::StatusOr<std::shared_ptr<SqliteLeaseBackend>> b = SqliteLeaseBackend::create(o);
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
        "sqlite", [] { return std::shared_ptr<LeaseBackend>(open_db(fresh_db())); }}),
    [](const auto& p) { return p.param.name; });

class SqliteLeaseBackendTest : public ::testing::Test {
 protected:
  TempDir tmp_;
  std::filesystem::path db_ = tmp_.path() / "leases.db";
};

TEST_F(SqliteLeaseBackendTest, StoresMetadataSessionAndToken) {
  auto b = open_db(db_, "runner-1");
  ASSERT_OK_AND_ASSIGN(LeaseLock locks,
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
  EXPECT_NE(b->session().find(absl::StrCat(":", ::getpid())), std::string::npos);
}

TEST_F(SqliteLeaseBackendTest, LeasesAndTokensSurviveTheHoldersProcess) {
  // A process takes the lease and dies without releasing (SIGKILL).
  Process holder = Process::spawn({lease_helper_path(), "hold", "sqlite:" + db_.string(),
                                   "k", "60000"});
  std::optional<std::string> held = holder.read_line();
  ASSERT_TRUE(held && held->rfind("held 1 ", 0) == 0) << held.value_or("");
  ::kill(holder.pid(), SIGKILL);
  holder.wait();
  auto b = open_db(db_, "restarted");
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> busy, locks.try_acquire("k"));
  EXPECT_FALSE(busy.has_value()) << "the dead holder's lease lasts until its TTL";
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
  ASSERT_OK_AND_ASSIGN(int n, b->reclaim_expired());
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

TEST_F(SqliteLeaseBackendTest, HistoryOfFourProcessesHasNoOverlapAndFencesEveryWrite) {
  EXPECT_EQ(check_history("sqlite:" + db_.string(), "hist", 4, 25, tmp_.path(), true), "");
}

TEST_F(SqliteLeaseBackendTest, KilledHolderFreesTheKeyWithinItsTtl) {
  EXPECT_EQ(check_sigkill("sqlite:" + db_.string(), "killed", 1000ms, 1000ms + 2000ms), "");
}

TEST_F(SqliteLeaseBackendTest, PausedHolderLosesTheLeaseAndItsWriteIsFenced) {
  EXPECT_EQ(check_sigstop("sqlite:" + db_.string(), "paused", 500ms, tmp_.path()), "");
}

}  // namespace
}  // namespace tierlock::testing

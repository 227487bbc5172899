// tests/lease/lease_redis_test.cc
//
// The Redis backend against a real redis-server 7 started by the test
// (servers.h): the conformance suite, the scripts' edge cases, the
// cross-process safety checks, and what a restart does.
#include "tierlock/lease_redis.h"

#include <atomic>
#include <iostream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lease/conformance.h"
#include "lease/faults.h"
#include "lease/fenced.h"
#include "lease/history.h"
#include "lease/proxy.h"
#include "lease/servers.h"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "tierlock/lease.h"
#include "tierlock/lease_sqlite.h"

namespace tierlock::testing {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<RedisLeaseBackend> make_backend(
    int port, int wait_replicas = 0,
    std::chrono::milliseconds io_timeout = 5s) {
  RedisLeaseOptions o;
  o.port = port;
  o.io_timeout = io_timeout;
  o.wait_replicas = wait_replicas;
  o.wait_timeout = 100ms;
  absl::StatusOr<std::shared_ptr<RedisLeaseBackend>> b =
      RedisLeaseBackend::create(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : nullptr;
}

std::string spec() {
  return absl::StrCat("redis:127.0.0.1:", shared_redis().port());
}

INSTANTIATE_TEST_SUITE_P(Redis, LeaseConformanceTest,
                         ::testing::Values(LeaseBackendFactory{
                             "redis",
                             [] {
                               return std::shared_ptr<LeaseBackend>(
                                   make_backend(shared_redis().port()));
                             }}),
                         [](const auto& p) { return p.param.name; });

TEST(RedisLeaseBackendTest, NoscriptFallsBackToEval) {
  RedisServer& redis = shared_redis();
  auto b = make_backend(redis.port());
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("noscript"));
  ASSERT_TRUE(a.has_value());
  ASSERT_OK(redis.cli("SCRIPT FLUSH"));
  ASSERT_OK_AND_ASSIGN(bool extended, a->extend(30s));
  EXPECT_TRUE(extended);
  ASSERT_OK(redis.cli("SCRIPT FLUSH"));
  ASSERT_OK_AND_ASSIGN(bool released, a->release());
  EXPECT_TRUE(released);
  ASSERT_OK(redis.cli("SCRIPT FLUSH"));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> c, locks.try_acquire("noscript"));
  ASSERT_TRUE(c.has_value());
  EXPECT_GT(*c->token(), *a->token());
}

TEST(RedisLeaseBackendTest,
     ServerSideExpiryHandsTheKeyOverAndFencesTheOldOwner) {
  RedisServer& redis = shared_redis();
  auto b = make_backend(redis.port());
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 60s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("jump"));
  ASSERT_TRUE(a.has_value());
  ASSERT_OK_AND_ASSIGN(std::string value,
                       redis.cli("GET '" + b->lease_key("jump") + "'"));
  EXPECT_EQ(value, a->owner_id());
  // As if the server's clock jumped: the key expires now.
  ASSERT_OK(redis.cli("PEXPIRE '" + b->lease_key("jump") + "' 1"));
  std::optional<Lease> fresh;
  ASSERT_TRUE(wait_until([&] {
    absl::StatusOr<std::optional<Lease>> r = locks.try_acquire("jump");
    if (r.ok() && r->has_value()) fresh = std::move(*r);
    return fresh.has_value();
  }));
  EXPECT_GT(*fresh->token(), *a->token());
  ASSERT_OK_AND_ASSIGN(bool extended, a->extend(60s));
  EXPECT_FALSE(extended);
  EXPECT_TRUE(a->lost().stop_requested());
  ASSERT_OK_AND_ASSIGN(bool released, a->release());
  EXPECT_FALSE(released);
  ASSERT_OK_AND_ASSIGN(std::string still,
                       redis.cli("GET '" + b->lease_key("jump") + "'"));
  EXPECT_EQ(still, fresh->owner_id())
      << "the old owner's release deleted the new lease";
}

TEST(RedisLeaseBackendTest, WaitForMissingReplicasIsAnErrorAndHoldsNothing) {
  RedisServer& redis = shared_redis();
  auto b = make_backend(redis.port(), /*wait_replicas=*/1);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  EXPECT_TRUE(IsError(locks.try_acquire("wait").status(),
                      absl::StatusCode::kUnavailable, "replicas"));
  ASSERT_OK_AND_ASSIGN(std::string exists,
                       redis.cli("EXISTS '" + b->lease_key("wait") + "'"));
  EXPECT_EQ(exists, "0");
}

TEST(RedisLeaseBackendTest, UnreachableServerIsUnavailable) {
  RedisLeaseOptions o;
  o.port = free_port();
  EXPECT_TRUE(IsError(RedisLeaseBackend::create(o).status(),
                      absl::StatusCode::kUnavailable, "connect"));
}

TEST(RedisLeaseBackendTest, RestartWithoutPersistenceForgetsLeasesAndTokens) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<RedisServer> redis,
                       RedisServer::start());
  auto b = make_backend(redis->port());
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("k"));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a2, locks.try_acquire("k2"));
  ASSERT_TRUE(a.has_value());
  ASSERT_OK(redis->stop());
  // Down: an error, never contention.
  EXPECT_TRUE(
      IsError(locks.try_acquire("k").status(), absl::StatusCode::kUnavailable));
  ASSERT_OK(redis->restart_server());
  // The restarted server (no AOF/RDB) granted "k" again: the documented
  // double grant. The old owner finds out at its next extend.
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> again, locks.try_acquire("k"));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again->token(), 1u) << "the token counter was lost with the data";
  ASSERT_OK_AND_ASSIGN(bool extended, a->extend(30s));
  EXPECT_FALSE(extended);
  (void)a2->release();
}

TEST(RedisLeaseHistoryTest,
     HistoryOfFourProcessesHasNoOverlapAndFencesEveryWrite) {
  TempDir tmp;
  EXPECT_EQ(check_history(spec(), "hist", 4, 25, tmp.path(), true), "");
}

TEST(RedisLeaseHistoryTest, KilledHolderFreesTheKeyWithinItsTtl) {
  EXPECT_EQ(check_sigkill(spec(), "killed", 1000ms, 3000ms), "");
}

TEST(RedisLeaseHistoryTest, PausedHolderLosesTheLeaseAndItsWriteIsFenced) {
  TempDir tmp;
  std::string figures;
  EXPECT_EQ(check_sigstop(spec(), "paused", 500ms, tmp.path(), &figures), "");
  std::cout << "redis SIGSTOP: " << figures << std::endl;
}

// Faults between client and server: a loopback proxy (proxy.h).

TEST(RedisLeaseFaultTest, LostReplyMakesAcquireAnErrorAndLeavesNothingHeld) {
  RedisServer& redis = shared_redis();
  TcpProxy proxy(redis.port());
  auto via_proxy = make_backend(proxy.port(), 0, 300ms);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks,
                       LeaseLock::create(via_proxy, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(
      LeaseLock direct,
      LeaseLock::create(make_backend(redis.port()), {.ttl = 30s}));
  proxy.drop_replies_on_open_connections();
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::optional<Lease>> r = locks.try_acquire("lost-reply");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  EXPECT_TRUE(
      IsError(r.status(), absl::StatusCode::kUnavailable, "lost-reply"));
  // The server granted it; the backend deleted the orphan on a new connection.
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> d,
                       direct.try_acquire("lost-reply"));
  EXPECT_TRUE(d.has_value()) << "an orphan grant is still held";
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> again,
                       locks.try_acquire("lost-reply/2"));
  EXPECT_TRUE(again.has_value()) << "the backend did not reconnect";
}

TEST(RedisLeaseFaultTest,
     FrozenConnectionIsAnErrorAndALateGrantLapsesAtItsTtl) {
  RedisServer& redis = shared_redis();
  TcpProxy proxy(redis.port());
  auto via_proxy = make_backend(proxy.port(), 0, 300ms);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks,
                       LeaseLock::create(via_proxy, {.ttl = 1s}));
  ASSERT_OK_AND_ASSIGN(
      LeaseLock direct,
      LeaseLock::create(make_backend(redis.port()), {.ttl = 30s}));
  proxy.freeze(true);
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::optional<Lease>> r = locks.try_acquire("frozen");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_TRUE(IsError(r.status(), absl::StatusCode::kUnavailable));
  // Unfrozen, the buffered request reaches the server late and grants the
  // key to an owner nobody holds: it lapses at its TTL.
  proxy.freeze(false);
  absl::StatusOr<Lease> d = direct.acquire("frozen", {.timeout = 5s});
  ASSERT_OK(d.status());
}

TEST(RedisLeaseFaultTest, CutConnectionFailsOneCallThenReconnects) {
  RedisServer& redis = shared_redis();
  TcpProxy proxy(redis.port());
  auto via_proxy = make_backend(proxy.port(), 0, 1s);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks,
                       LeaseLock::create(via_proxy, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("cut"));
  ASSERT_TRUE(a.has_value());
  proxy.cut();
  // No silent retry (a retried grant or release could misreport): the call
  // on the cut connection fails, the next one reconnects.
  EXPECT_TRUE(IsError(a->extend(30s).status(), absl::StatusCode::kUnavailable));
  ASSERT_OK_AND_ASSIGN(bool extended, a->extend(30s));
  EXPECT_TRUE(extended);
  ASSERT_OK_AND_ASSIGN(bool released, a->release());
  EXPECT_TRUE(released);
}

// Network faults against an auto-renewed lease (faults.h): the holder learns
// of the loss by valid_until() and before anyone else is granted the key.
// Figures go to the log and to docs/leases.md ("Network faults").

TEST(RedisLeaseFaultTest,
     FrozenConnectionLosesTheLeaseByItsDeadlineBeforeAnyoneElseHasIt) {
  RedisServer& redis = shared_redis();
  TcpProxy proxy(redis.port());
  // The default io_timeout (5 s), longer than the ttl: the deadline must not
  // wait for it.
  FaultResult r = measure_fault(
      make_backend(proxy.port()), make_backend(redis.port()), "fault/freeze",
      1500ms, 1000ms, [&] { proxy.freeze(true); },
      [&] { proxy.freeze(false); });
  std::cout << "redis freeze: " << r.summary() << std::endl;
  EXPECT_EQ(check_fault(r), "");
}

TEST(RedisLeaseFaultTest,
     DroppedRepliesLoseTheLeaseByItsDeadlineBeforeAnyoneElseHasIt) {
  RedisServer& redis = shared_redis();
  TcpProxy proxy(redis.port());
  // The renewals reach the server (and extend the key there) but their
  // replies never come back: the holder cannot know, so it must stop.
  FaultResult r = measure_fault(
      make_backend(proxy.port()), make_backend(redis.port()), "fault/drop",
      1500ms, 1000ms, [&] { proxy.drop_replies_on_open_connections(); });
  std::cout << "redis drop replies: " << r.summary() << std::endl;
  EXPECT_EQ(check_fault(r), "");
}

TEST(RedisLeaseFaultTest, CutConnectionLosesTheLeaseBeforeAnyoneElseHasIt) {
  RedisServer& redis = shared_redis();
  TcpProxy proxy(redis.port());
  FaultResult r =
      measure_fault(make_backend(proxy.port()), make_backend(redis.port()),
                    "fault/cut", 1500ms, 1000ms, [&] { proxy.cut(); });
  std::cout << "redis cut: " << r.summary() << std::endl;
  EXPECT_EQ(check_fault(r), "");
}

TEST(RedisLeaseFaultTest, KilledServerLosesTheLeaseByItsDeadline) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<RedisServer> redis,
                       RedisServer::start());
  auto holder = make_backend(redis->port());
  auto other = make_backend(redis->port());
  // Down for 4 s: nobody can be granted the key meanwhile. (A restart
  // without persistence forgets every lease and may grant the key at once,
  // before the holder's next renewal finds out: docs/leases.md.)
  FaultResult r = measure_fault(
      holder, other, "fault/kill", 1500ms, 1000ms,
      [&] { ASSERT_OK(redis->stop()); },
      [&] { ASSERT_OK(redis->restart_server()); }, 4s);
  std::cout << "redis kill: " << r.summary() << std::endl;
  EXPECT_EQ(check_fault(r, /*expect_grant=*/false), "");
}

TEST(RedisLeaseFaultTest,
     FrozenRedisStallsNeitherASqliteLeaseNorItsOwnDeadline) {
  RedisServer& redis = shared_redis();
  TcpProxy proxy(redis.port());
  TempDir tmp;
  SqliteLeaseOptions so;
  so.path = tmp.path() / "leases.db";
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<SqliteLeaseBackend> sqlite,
                       SqliteLeaseBackend::create(so));
  ASSERT_OK_AND_ASSIGN(LeaseLock redis_locks,
                       LeaseLock::create(make_backend(proxy.port()),
                                         {.ttl = 2s, .auto_renew = true}));
  ASSERT_OK_AND_ASSIGN(
      LeaseLock sqlite_locks,
      LeaseLock::create(sqlite, {.ttl = 2s, .auto_renew = true}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> r,
                       redis_locks.try_acquire("mixed"));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> q,
                       sqlite_locks.try_acquire("mixed"));
  ASSERT_TRUE(r.has_value() && q.has_value());
  proxy.freeze(true);
  const auto t0 = std::chrono::steady_clock::now();
  // Redis is lost by its deadline; the SQLite lease, on a healthy backend,
  // is renewed throughout three TTLs.
  ASSERT_TRUE(wait_until([&] { return r->lost().stop_requested(); }, 10s));
  const auto lost_at = std::chrono::steady_clock::now();
  EXPECT_LE(lost_at, r->valid_until() + 50ms) << "lost() late";
  while (std::chrono::steady_clock::now() < t0 + 6s) {
    ASSERT_FALSE(q->lost().stop_requested()) << "the SQLite lease was lost";
    ASSERT_TRUE(q->held());
    std::this_thread::sleep_for(10ms);  // pacing the check, not a sync
  }
  EXPECT_GT(q->valid_until(), t0 + 4s) << "the SQLite lease was not renewed";
  proxy.freeze(false);
  ASSERT_OK_AND_ASSIGN(bool released, q->release());
  EXPECT_TRUE(released);
  (void)r->release();
}

// Replies held back by the proxy longer than the ttl, then delivered in
// order: the renewal's wait ends at valid_until() and it drops its
// connection, so the holder loses the lease on time and the late reply
// reaches nobody; the lease stays lost (watched until every byte held back
// before lost() was due: lost() + delay, lost() <= fault + ttl).
constexpr auto kRedisDelay = 2000ms;  // > ttl 1.5 s

FaultResult delayed(RedisServer& redis, TcpProxy& proxy, const std::string& key,
                    TcpProxy::Direction which) {
  return measure_fault(make_backend(proxy.port()), make_backend(redis.port()),
                       key,
                       {.ttl = 1500ms,
                        .fault = [&] { proxy.delay(kRedisDelay, which); },
                        .after = [&] { proxy.delay(0ms); },
                        .watch = 1500ms + kRedisDelay + 500ms});
}

TEST(RedisLeaseFaultTest,
     DelayedRepliesLoseTheLeaseByItsDeadlineAndLateRepliesDoNotReviveIt) {
  RedisServer& redis = shared_redis();
  TcpProxy proxy(redis.port());
  // Both ways: the held-back renewals reach the server after its key expired
  // (or another owner took it) and are refused there.
  FaultResult r =
      delayed(redis, proxy, "fault/delay", TcpProxy::Direction::kBoth);
  std::cout << "redis delay 2 s both ways: " << r.summary() << std::endl;
  EXPECT_EQ(check_fault(r), "");
  EXPECT_GE(r.watched_after_lost, kRedisDelay)
      << "the late replies were not waited for";
}

TEST(RedisLeaseFaultTest,
     DelayedRepliesOnlyLoseTheLeaseByItsDeadlineAndLateRepliesDoNotReviveIt) {
  RedisServer& redis = shared_redis();
  TcpProxy proxy(redis.port());
  // Requests on time, replies late: the server extends the key on each
  // renewal it gets, so the other owner waits longer; the holder, with no
  // answer, stops at its own deadline all the same.
  FaultResult r = delayed(redis, proxy, "fault/delay-replies",
                          TcpProxy::Direction::kRepliesOnly);
  std::cout << "redis delay 2 s replies only: " << r.summary() << std::endl;
  EXPECT_EQ(check_fault(r), "");
  EXPECT_GE(r.watched_after_lost, kRedisDelay)
      << "the late replies were not waited for";
}

TEST(
    RedisLeaseFaultTest,
    RestartWithoutPersistenceGrantsTheKeyAtOnceAndTheHolderLearnsAtItsNextRenewal) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<RedisServer> redis,
                       RedisServer::start());
  const std::string key = "fault/restart";
  {
    // Two earlier grants: the holder's token is 3, so the reset counter shows.
    ASSERT_OK_AND_ASSIGN(
        LeaseLock warm,
        LeaseLock::create(make_backend(redis->port()), {.ttl = 30s}));
    for (int i = 0; i < 2; ++i) {
      ASSERT_OK_AND_ASSIGN(std::optional<Lease> l, warm.try_acquire(key));
      ASSERT_TRUE(l.has_value());
      ASSERT_OK(l->release().status());
    }
  }
  // ttl 3 s renews every 1 s (at about 1.0 s, 2.0 s, ...): the kill at 1.2 s
  // and the restart (~0.1-0.3 s) fall between two renewals, so the restarted,
  // empty server grants the key before the holder asks again. The holder's
  // next renewal (on the connection the kill broke) fails and fires lost().
  FaultResult r = measure_fault(
      make_backend(redis->port()), make_backend(redis->port()), key,
      {.ttl = 3000ms,
       .fault_after = 1200ms,
       .fault = [&] { ASSERT_OK(redis->stop()); },
       .heal = [&] { ASSERT_OK(redis->restart_server()); },
       .limit = 10s});
  std::cout << "redis restart without persistence: " << r.summary()
            << std::endl;
  // lost() still comes by valid_until(); the overlap is whatever lies between
  // the new grant and the holder's next renewal (0 only if that renewal hit
  // the server while it was down), so at most the renewal interval (ttl/3)
  // plus that renewal's round trip -- never 0 by design.
  EXPECT_EQ(check_fault(r, {.no_overlap = false, .tokens_increase = false}),
            "");
  EXPECT_TRUE(r.healed);
  EXPECT_LE(-r.lost_before_grant, 1000ms + 250ms)
      << "fault/restart: the overlap outlasted the holder's renewal interval";
  // The token counter went with the data: the new owner has token 1, below
  // the holder's 3. A resource fencing on tokens rejects the new owner (safe
  // for the resource, but no progress until tokens pass 3) -- fencing does
  // not order the two owners here.
  EXPECT_EQ(r.old_token, 3u);
  EXPECT_EQ(r.new_token, 1u) << "the restarted server kept its token counter?";
  TempDir fence;
  ASSERT_OK_AND_ASSIGN(bool old_accepted,
                       fenced_write(fence.path(), r.old_token));
  ASSERT_OK_AND_ASSIGN(bool new_accepted,
                       fenced_write(fence.path(), r.new_token));
  EXPECT_TRUE(old_accepted);
  EXPECT_FALSE(new_accepted)
      << "token " << r.new_token << " accepted after " << r.old_token;
}

TEST(RedisLeaseCliTest, RunPassesTheToken) {
  ASSERT_NE(std::string(TIERLOCK_CLI_PATH), "") << "tierlock_cli not built";
  const std::string url =
      absl::StrCat("redis://127.0.0.1:", shared_redis().port());
  RunResult a = run({TIERLOCK_CLI_PATH, "run", "--backend", url, "--key", "cli",
                     "--", "sh", "-c", "echo \"$TIERLOCK_TOKEN\"; exit 4"});
  EXPECT_EQ(a.status.code, 4);
  std::uint64_t t = 0;
  EXPECT_TRUE(absl::SimpleAtoi(a.out, &t) && t >= 1) << a.out;
}

// ------------------------------------------------------------------ AUTH

// A server of its own that wants a password (requirepass, so a bare AUTH
// PASSWORD logs in as `default`) and knows an ACL user whose password needs
// %-escapes in a URL.
class RedisAuthTest : public ::testing::Test {
 protected:
  static constexpr char kPassword[] = "s3cret-default";
  static constexpr char kUserPassword[] = "al@ce:pw/1";
  static constexpr char kUserPasswordInUrl[] = "al%40ce%3Apw%2F1";

  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<RedisServer>> s = RedisServer::start();
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = s->release();
    // The ACL user first: after requirepass, redis-cli needs the password.
    ASSERT_TRUE(server_
                    ->cli(absl::StrCat("ACL SETUSER alice on '>", kUserPassword,
                                       "' '~*' '&*' '+@all'"))
                    .ok());
    ASSERT_TRUE(
        server_->cli(absl::StrCat("CONFIG SET requirepass ", kPassword)).ok());
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static std::string url(const std::string& userinfo) {
    return absl::StrCat("redis://", userinfo, userinfo.empty() ? "" : "@",
                        "127.0.0.1:", server_->port());
  }
  static absl::StatusOr<std::shared_ptr<RedisLeaseBackend>> connect(
      const std::string& u) {
    absl::StatusOr<RedisLeaseOptions> o = RedisLeaseOptions::from_url(u);
    if (!o.ok()) return o.status();
    o->io_timeout = 5s;
    return RedisLeaseBackend::create(*o);
  }
  static void expect_grants(const std::shared_ptr<RedisLeaseBackend>& b) {
    absl::StatusOr<std::unique_ptr<LeaseSession>> s = b->try_acquire(
        {.key = absl::StrCat("auth", ++n_), .owner_id = "o", .ttl = 10s});
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_NE(*s, nullptr);
  }
  static inline RedisServer* server_ = nullptr;
  static inline int n_ = 0;
};

TEST_F(RedisAuthTest, PasswordOnlyUrlLogsIn) {
  absl::StatusOr<std::shared_ptr<RedisLeaseBackend>> b =
      connect(url(absl::StrCat(":", kPassword)));
  ASSERT_TRUE(b.ok()) << b.status();
  expect_grants(*b);
}

TEST_F(RedisAuthTest, AclUserWithAPercentEncodedPasswordLogsIn) {
  absl::StatusOr<std::shared_ptr<RedisLeaseBackend>> b =
      connect(url(absl::StrCat("alice:", kUserPasswordInUrl)));
  ASSERT_TRUE(b.ok()) << b.status();
  expect_grants(*b);
}

TEST_F(RedisAuthTest, WrongPasswordIsAnAuthErrorThatDoesNotShowIt) {
  for (const std::string& userinfo :
       std::vector<std::string>{":wrong-pw-123", "alice:wrong-pw-123",
                                absl::StrCat("nobody:", kPassword)}) {
    absl::Status s = connect(url(userinfo)).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
    EXPECT_NE(s.message().find("authentication failed"), std::string::npos)
        << s;
    EXPECT_NE(s.message().find(absl::StrCat("127.0.0.1:", server_->port())),
              std::string::npos)
        << s;
    EXPECT_EQ(s.message().find("wrong-pw"), std::string::npos) << s;
    EXPECT_EQ(s.message().find(kPassword), std::string::npos) << s;
  }
}

TEST_F(RedisAuthTest, NoPasswordIsAnAuthErrorSayingSo) {
  absl::Status s = connect(url("")).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find("no password was given"), std::string::npos) << s;
  EXPECT_NE(s.message().find("NOAUTH"), std::string::npos) << s;
}

// The command takes the same URLs: it logs in with them, and neither a
// refused login nor any other message shows the password.
TEST_F(RedisAuthTest, CliLogsInWithTheUrlAndNeverPrintsThePassword) {
  if (std::string(TIERLOCK_CLI_PATH).empty())
    GTEST_SKIP() << "the CLI is not built";
  auto cli = [](const std::string& u, const std::string& command) {
    return run({"/bin/sh", "-c",
                absl::StrCat("'", TIERLOCK_CLI_PATH, "' run --backend '", u,
                             "' --key k -- ", command, " 2>&1")});
  };
  RunResult ok = cli(url(absl::StrCat("alice:", kUserPasswordInUrl)),
                     "sh -c 'echo token=$TIERLOCK_TOKEN'");
  EXPECT_EQ(ok.status.code, 0) << ok.out;
  EXPECT_NE(ok.out.find("token="), std::string::npos) << ok.out;
  RunResult wrong = cli(url("alice:wrong-pw-123"), "true");
  EXPECT_NE(wrong.status.code, 0) << wrong.out;
  EXPECT_NE(wrong.out.find("authentication failed"), std::string::npos)
      << wrong.out;
  EXPECT_EQ(wrong.out.find("wrong-pw-123"), std::string::npos) << wrong.out;
  RunResult bad = cli("redis://alice:s3cr%zzet@127.0.0.1:1/x", "true");
  EXPECT_NE(bad.status.code, 0) << bad.out;
  EXPECT_EQ(bad.out.find("s3cr"), std::string::npos) << bad.out;
}

TEST(RedisLeaseOptionsTest, FromUrlReadsEveryPart) {
  absl::StatusOr<RedisLeaseOptions> o =
      RedisLeaseOptions::from_url("redis://ci:p%40ss%3Aw@10.0.0.5:6380/2");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->username, "ci");
  EXPECT_EQ(o->password, "p@ss:w");
  EXPECT_EQ(o->host, "10.0.0.5");
  EXPECT_EQ(o->port, 6380);
  EXPECT_EQ(o->database, 2);
  o = RedisLeaseOptions::from_url("redis://:pw@[::1]:7000");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->username, "");
  EXPECT_EQ(o->password, "pw");
  EXPECT_EQ(o->host, "::1");
  EXPECT_EQ(o->port, 7000);
  o = RedisLeaseOptions::from_url("redis://");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->host, "127.0.0.1");
  EXPECT_EQ(o->port, 6379);
  // A password holding an unencoded '@': the userinfo ends at the last '@'.
  o = RedisLeaseOptions::from_url("redis://u:a@b@host");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->password, "a@b");
  EXPECT_EQ(o->host, "host");
}

TEST(RedisLeaseOptionsTest, BadUrlIsInvalidArgumentWithThePasswordHidden) {
  for (const char* bad : {"redis://u:s3cret@host:port",
                          "redis://u:s3cret@host/db", "redis://u:s3cret@host:0",
                          "redis://u:s3cret@[::1", "redis://u:s3cr%zz@host",
                          "rediss://u:s3cret@host", "redis://u:s3cret@host:"}) {
    absl::Status s = RedisLeaseOptions::from_url(bad).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad << ": " << s;
    EXPECT_EQ(s.message().find("s3cr"), std::string::npos) << s;
    EXPECT_NE(s.message().find("u:***@"), std::string::npos) << s;
  }
  absl::Status s =
      RedisLeaseOptions::from_url("redis://justauser@host").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("without a password"), std::string::npos) << s;
}

}  // namespace
}  // namespace tierlock::testing

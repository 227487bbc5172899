// tests/lease/lease_redis_test.cc
//
// The Redis backend against a real redis-server 7 started by the test
// (servers.h): the conformance suite, the scripts' edge cases, the
// cross-process safety checks, and what a restart does.
#include <atomic>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lease/conformance.h"
#include "lease/history.h"
#include "lease/proxy.h"
#include "lease/servers.h"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "tierlock/lease.h"
#include "tierlock/lease_redis.h"

namespace tierlock::testing {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<RedisLeaseBackend> make_backend(int port, int wait_replicas = 0,
                                                std::chrono::milliseconds io_timeout = 5s) {
  RedisLeaseOptions o;
  o.port = port;
  o.io_timeout = io_timeout;
  o.wait_replicas = wait_replicas;
  o.wait_timeout = 100ms;
  absl::StatusOr<std::shared_ptr<RedisLeaseBackend>> b = RedisLeaseBackend::create(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : nullptr;
}

std::string spec() { return absl::StrCat("redis:127.0.0.1:", shared_redis().port()); }

INSTANTIATE_TEST_SUITE_P(
    Redis, LeaseConformanceTest,
    ::testing::Values(LeaseBackendFactory{
        "redis",
        [] { return std::shared_ptr<LeaseBackend>(make_backend(shared_redis().port())); }}),
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

TEST(RedisLeaseBackendTest, ServerSideExpiryHandsTheKeyOverAndFencesTheOldOwner) {
  RedisServer& redis = shared_redis();
  auto b = make_backend(redis.port());
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 60s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("jump"));
  ASSERT_TRUE(a.has_value());
  ASSERT_OK_AND_ASSIGN(std::string value, redis.cli("GET '" + b->lease_key("jump") + "'"));
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
  ASSERT_OK_AND_ASSIGN(std::string still, redis.cli("GET '" + b->lease_key("jump") + "'"));
  EXPECT_EQ(still, fresh->owner_id()) << "the old owner's release deleted the new lease";
}

TEST(RedisLeaseBackendTest, WaitForMissingReplicasIsAnErrorAndHoldsNothing) {
  RedisServer& redis = shared_redis();
  auto b = make_backend(redis.port(), /*wait_replicas=*/1);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  EXPECT_TRUE(IsError(locks.try_acquire("wait").status(), absl::StatusCode::kUnavailable,
                      "replicas"));
  ASSERT_OK_AND_ASSIGN(std::string exists, redis.cli("EXISTS '" + b->lease_key("wait") + "'"));
  EXPECT_EQ(exists, "0");
}

TEST(RedisLeaseBackendTest, UnreachableServerIsUnavailable) {
  RedisLeaseOptions o;
  o.port = free_port();
  EXPECT_TRUE(IsError(RedisLeaseBackend::create(o).status(), absl::StatusCode::kUnavailable,
                      "connect"));
}

TEST(RedisLeaseBackendTest, RestartWithoutPersistenceForgetsLeasesAndTokens) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<RedisServer> redis, RedisServer::start());
  auto b = make_backend(redis->port());
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("k"));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a2, locks.try_acquire("k2"));
  ASSERT_TRUE(a.has_value());
  ASSERT_OK(redis->stop());
  // Down: an error, never contention.
  EXPECT_TRUE(IsError(locks.try_acquire("k").status(), absl::StatusCode::kUnavailable));
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

TEST(RedisLeaseHistoryTest, HistoryOfFourProcessesHasNoOverlapAndFencesEveryWrite) {
  TempDir tmp;
  EXPECT_EQ(check_history(spec(), "hist", 4, 25, tmp.path(), true), "");
}

TEST(RedisLeaseHistoryTest, KilledHolderFreesTheKeyWithinItsTtl) {
  EXPECT_EQ(check_sigkill(spec(), "killed", 1000ms, 3000ms), "");
}

TEST(RedisLeaseHistoryTest, PausedHolderLosesTheLeaseAndItsWriteIsFenced) {
  TempDir tmp;
  EXPECT_EQ(check_sigstop(spec(), "paused", 500ms, tmp.path()), "");
}

// Faults between client and server: a loopback proxy (proxy.h).

TEST(RedisLeaseFaultTest, LostReplyMakesAcquireAnErrorAndLeavesNothingHeld) {
  RedisServer& redis = shared_redis();
  TcpProxy proxy(redis.port());
  auto via_proxy = make_backend(proxy.port(), 0, 300ms);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(via_proxy, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(LeaseLock direct, LeaseLock::create(make_backend(redis.port()),
                                                           {.ttl = 30s}));
  proxy.drop_replies_on_open_connections();
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::optional<Lease>> r = locks.try_acquire("lost-reply");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  EXPECT_TRUE(IsError(r.status(), absl::StatusCode::kUnavailable, "lost-reply"));
  // The server granted it; the backend deleted the orphan on a new connection.
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> d, direct.try_acquire("lost-reply"));
  EXPECT_TRUE(d.has_value()) << "an orphan grant is still held";
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> again, locks.try_acquire("lost-reply/2"));
  EXPECT_TRUE(again.has_value()) << "the backend did not reconnect";
}

TEST(RedisLeaseFaultTest, FrozenConnectionIsAnErrorAndALateGrantLapsesAtItsTtl) {
  RedisServer& redis = shared_redis();
  TcpProxy proxy(redis.port());
  auto via_proxy = make_backend(proxy.port(), 0, 300ms);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(via_proxy, {.ttl = 1s}));
  ASSERT_OK_AND_ASSIGN(LeaseLock direct, LeaseLock::create(make_backend(redis.port()),
                                                           {.ttl = 30s}));
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
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(via_proxy, {.ttl = 30s}));
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

TEST(RedisLeaseCliTest, RunPassesTheToken) {
  ASSERT_NE(std::string(TIERLOCK_CLI_PATH), "") << "tierlock_cli not built";
  const std::string url = absl::StrCat("redis://127.0.0.1:", shared_redis().port());
  RunResult a = run({TIERLOCK_CLI_PATH, "run", "--backend", url, "--key", "cli", "--", "sh",
                     "-c", "echo \"$TIERLOCK_TOKEN\"; exit 4"});
  EXPECT_EQ(a.status.code, 4);
  std::uint64_t t = 0;
  EXPECT_TRUE(absl::SimpleAtoi(a.out, &t) && t >= 1) << a.out;
}

}  // namespace
}  // namespace tierlock::testing

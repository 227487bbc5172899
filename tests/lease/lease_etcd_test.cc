// tests/lease/lease_etcd_test.cc
//
// The etcd backend against a real 3-member etcd 3.4 cluster started by the
// test (etcd_cluster.h): the conformance suite, etcd's lock recipe as
// `etcdctl lock` sees it (both ways), FIFO order of waiters, URL parsing, and
// (EtcdLeaseFaultTest, label stress) the leader SIGKILLed under a held lease.
#include "tierlock/lease_etcd.h"

#include <signal.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "lease/conformance.h"
#include "lease/etcd_cluster.h"
#include "lease/history.h"
#include "lease/proxy.h"
#include "lease/servers.h"
#include "nlohmann/json.hpp"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "tierlock/lease.h"

namespace tierlock::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::shared_ptr<EtcdLeaseBackend> make_backend(
    const std::vector<std::string>& endpoints,
    std::chrono::milliseconds io_timeout = 5s) {
  EtcdLeaseOptions o;
  o.endpoints = endpoints;
  o.io_timeout = io_timeout;
  absl::StatusOr<std::shared_ptr<EtcdLeaseBackend>> b =
      EtcdLeaseBackend::create(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : nullptr;
}

std::vector<std::string> endpoints(EtcdCluster& c) {
  std::vector<std::string> out;
  for (int i = 0; i < c.size(); ++i) out.push_back(c.client_url(i));
  return out;
}

std::shared_ptr<EtcdLeaseBackend> shared_backend() {
  return make_backend(endpoints(shared_etcd()));
}

// The keys under PREFIX in etcd, in create order, as etcdctl lists them.
std::vector<std::string> keys_under(EtcdCluster& c, const std::string& prefix) {
  absl::StatusOr<std::string> out = c.etcdctl(
      absl::StrCat("get --prefix --keys-only --order=ASCEND --sort-by=CREATE '",
                   prefix, "'"));
  EXPECT_TRUE(out.ok()) << out.status();
  std::vector<std::string> keys;
  if (!out.ok()) return keys;
  for (absl::string_view line : absl::StrSplit(*out, '\n')) {
    if (!line.empty()) keys.emplace_back(line);
  }
  return keys;
}

// The create revision of KEY, read with etcdctl.
std::int64_t create_revision(EtcdCluster& c, const std::string& key) {
  absl::StatusOr<std::string> out =
      c.etcdctl(absl::StrCat("get -w json '", key, "'"));
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return -1;
  const nlohmann::json j = nlohmann::json::parse(*out, nullptr, false);
  if (!j.is_object() || !j.contains("kvs")) return 0;
  return j["kvs"][0].value("create_revision", std::int64_t{0});
}

INSTANTIATE_TEST_SUITE_P(
    Etcd, LeaseConformanceTest,
    ::testing::Values(LeaseBackendFactory{
        "etcd",
        [] { return std::shared_ptr<LeaseBackend>(shared_backend()); }}),
    [](const auto& p) { return p.param.name; });

TEST(EtcdLeaseOptionsTest, FromUrlTakesAListOfHostsWithDefaultPort) {
  ASSERT_OK_AND_ASSIGN(
      EtcdLeaseOptions o,
      EtcdLeaseOptions::from_url("etcd://10.0.0.5,10.0.0.6:2380,[::1]:3000"));
  EXPECT_EQ(o.endpoints, (std::vector<std::string>{"http://10.0.0.5:2379",
                                                   "http://10.0.0.6:2380",
                                                   "http://[::1]:3000"}));
  for (const char* bad :
       {"etcd://", "etcd://h:0", "etcd://h:x", "etcd://h,,g", "etcd://h/p",
        "etcd://u:p@h", "http://h:2379", "etcd://[::1"}) {
    EXPECT_TRUE(IsError(EtcdLeaseOptions::from_url(bad).status(),
                        absl::StatusCode::kInvalidArgument, "etcd URL"))
        << bad;
  }
}

TEST(EtcdLeaseBackendTest, UnreachableClusterIsUnavailableNamingTheEndpoint) {
  const std::string ep = absl::StrCat("http://127.0.0.1:", free_port());
  EtcdLeaseOptions o;
  o.endpoints = {ep};
  o.io_timeout = 500ms;
  EXPECT_TRUE(IsError(EtcdLeaseBackend::create(o).status(),
                      absl::StatusCode::kUnavailable, ep));
}

TEST(EtcdLeaseBackendTest, ADeadEndpointFirstInTheListIsSkipped) {
  std::vector<std::string> eps = endpoints(shared_etcd());
  eps.insert(eps.begin(), absl::StrCat("http://127.0.0.1:", free_port()));
  auto b = make_backend(eps);
  ASSERT_NE(b, nullptr);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a,
                       locks.try_acquire("dead-endpoint-first"));
  EXPECT_TRUE(a.has_value());
}

TEST(EtcdLeaseBackendTest,
     TheLockKeyIsEtcdsRecipeAndTheTokenItsCreateRevision) {
  EtcdCluster& etcd = shared_etcd();
  auto b = shared_backend();
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("recipe"));
  ASSERT_TRUE(a.has_value());
  const std::vector<std::string> keys =
      keys_under(etcd, b->lock_prefix("recipe"));
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_TRUE(keys[0].starts_with("recipe/")) << keys[0];
  EXPECT_EQ(keys[0].find_first_not_of("0123456789abcdef", 7), std::string::npos)
      << keys[0];
  EXPECT_EQ(create_revision(etcd, keys[0]),
            static_cast<std::int64_t>(*a->token()));
  // The key is on an etcd lease whose TTL is the lease's, in whole seconds.
  ASSERT_OK(a->release());
  EXPECT_TRUE(keys_under(etcd, b->lock_prefix("recipe")).empty())
      << "release left the lock key behind";
}

TEST(EtcdLeaseBackendTest, ATryThatFindsTheLockHeldLeavesNoKeyBehind) {
  EtcdCluster& etcd = shared_etcd();
  auto b = shared_backend();
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("try-clean"));
  ASSERT_TRUE(a.has_value());
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> none,
                       locks.try_acquire("try-clean"));
  EXPECT_FALSE(none.has_value());
  EXPECT_TRUE(IsError(locks.acquire("try-clean", {.timeout = 50ms}).status(),
                      absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(keys_under(etcd, b->lock_prefix("try-clean")).size(), 1u)
      << "a failed try or a timed-out wait left its queued key";
}

TEST(EtcdLeaseBackendTest, EtcdctlLockHolderExcludesTierlockUntilItUnlocks) {
  EtcdCluster& etcd = shared_etcd();
  Process holder = Process::spawn({"etcdctl", "--endpoints", etcd.client_urls(),
                                   "lock", "interop-etcdctl-first"});
  // etcdctl prints the key it holds once it has the lock.
  std::optional<std::string> held = holder.read_line();
  ASSERT_TRUE(held.has_value()) << "etcdctl lock did not get the lock";
  EXPECT_TRUE(held->starts_with("interop-etcdctl-first/")) << *held;
  const std::int64_t etcdctl_revision = create_revision(etcd, *held);
  EXPECT_GT(etcdctl_revision, 0);

  auto b = shared_backend();
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> none,
                       locks.try_acquire("interop-etcdctl-first"));
  EXPECT_FALSE(none.has_value()) << "tierlock got a key etcdctl lock holds";

  std::atomic<bool> done{false};
  absl::StatusOr<Lease> got = absl::UnknownError("not run");
  std::thread waiter([&] {
    got = locks.acquire("interop-etcdctl-first", {.timeout = 30s});
    done = true;
  });
  // Queued behind etcdctl's key (its own key is second), and not granted.
  EXPECT_TRUE(wait_until(
      [&] { return keys_under(etcd, "interop-etcdctl-first/").size() == 2; },
      10s));
  EXPECT_FALSE(done.load());
  // etcdctl unlocks on SIGTERM.
  ::kill(holder.pid(), SIGTERM);
  waiter.join();
  ASSERT_OK(got.status());
  EXPECT_GT(static_cast<std::int64_t>(*got->token()), etcdctl_revision);
  EXPECT_EQ(holder.wait(10s).timed_out, false);
}

TEST(EtcdLeaseBackendTest, TierlockHolderMakesEtcdctlLockWait) {
  EtcdCluster& etcd = shared_etcd();
  auto b = shared_backend();
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a,
                       locks.try_acquire("interop-tierlock-first"));
  ASSERT_TRUE(a.has_value());
  Process waiter = Process::spawn({"etcdctl", "--endpoints", etcd.client_urls(),
                                   "lock", "interop-tierlock-first"});
  // etcdctl has queued its key behind ours and prints nothing while it waits.
  ASSERT_TRUE(wait_until(
      [&] { return keys_under(etcd, "interop-tierlock-first/").size() == 2; },
      10s));
  EXPECT_FALSE(waiter.io().readable_now())
      << "etcdctl lock got a key tierlock holds";
  ASSERT_OK_AND_ASSIGN(bool released, a->release());
  EXPECT_TRUE(released);
  std::optional<std::string> held = waiter.read_line();
  ASSERT_TRUE(held.has_value())
      << "etcdctl lock did not get the lock after the release";
  EXPECT_TRUE(held->starts_with("interop-tierlock-first/")) << *held;
  EXPECT_GT(create_revision(etcd, *held),
            static_cast<std::int64_t>(*a->token()));
  ::kill(waiter.pid(), SIGTERM);
  EXPECT_EQ(waiter.wait(10s).timed_out, false);
}

TEST(EtcdLeaseBackendTest, ThreeWaitersAreGrantedInArrivalOrder) {
  EtcdCluster& etcd = shared_etcd();
  const std::string key = "fifo";
  auto b = shared_backend();
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> holder, locks.try_acquire(key));
  ASSERT_TRUE(holder.has_value());
  std::mutex mu;
  std::vector<int> order;
  std::vector<std::uint64_t> tokens;
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i) {
    waiters.emplace_back([&, i] {
      absl::StatusOr<Lease> l = locks.acquire(key, {.timeout = 30s});
      {
        std::lock_guard<std::mutex> lk(mu);
        order.push_back(l.ok() ? i : -1);
        if (l.ok()) tokens.push_back(*l->token());
      }
      if (l.ok()) (void)l->release();
    });
    // Arrival order: the next waiter starts once this one's key is queued.
    ASSERT_TRUE(wait_until(
        [&] {
          return keys_under(etcd, key + "/").size() ==
                 static_cast<std::size_t>(2 + i);
        },
        10s));
  }
  ASSERT_OK(holder->release());
  for (std::thread& t : waiters) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
  ASSERT_EQ(tokens.size(), 3u);
  EXPECT_LT(*holder->token(), tokens[0]);
  EXPECT_LT(tokens[0], tokens[1]);
  EXPECT_LT(tokens[1], tokens[2]);
}

// Worker processes (tl_lease_helper) through the backend spec "etcd:HOSTS".
std::string spec() { return "etcd:" + shared_etcd().hosts(); }

TEST(EtcdLeaseHistoryTest,
     HistoryOfFourProcessesHasNoOverlapAndFencesEveryWrite) {
  TempDir tmp;
  EXPECT_EQ(check_history(spec(), "hist", 4, 25, tmp.path(), true), "");
}

TEST(EtcdLeaseHistoryTest, KilledHolderFreesTheKeyWithinItsTtl) {
  // etcd's ttl is whole seconds and its leader checks expiry every 500 ms.
  EXPECT_EQ(check_sigkill(spec(), "killed", 1000ms, 3000ms), "");
}

TEST(EtcdLeaseHistoryTest, PausedHolderLosesTheLeaseAndItsWriteIsFenced) {
  TempDir tmp;
  std::string figures;
  EXPECT_EQ(check_sigstop(spec(), "paused", 500ms, tmp.path(), &figures), "");
  std::cout << "etcd SIGSTOP: " << figures << std::endl;
}

TEST(EtcdLeaseCliTest, RunHoldsTheEtcdLockWhileTheCommandRuns) {
  EtcdCluster& etcd = shared_etcd();
  const std::string url = "etcd://" + etcd.hosts();
  Process cli = Process::spawn(
      {TIERLOCK_CLI_PATH, "run", "--backend", url, "--key", "cli", "--ttl", "5",
       "--", "sh", "-c", "echo token=$TIERLOCK_TOKEN; read x || exit 0"});
  std::optional<std::string> line = cli.read_line();
  ASSERT_TRUE(line.has_value() && line->starts_with("token="))
      << line.value_or("(none)");
  const std::int64_t token = std::stoll(line->substr(6));
  // The command runs under etcd's lock on "cli": its key, its token.
  const std::vector<std::string> keys = keys_under(etcd, "cli/");
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(create_revision(etcd, keys[0]), token);
  auto b = shared_backend();
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> none, locks.try_acquire("cli"));
  EXPECT_FALSE(none.has_value()) << "granted while tierlock run holds it";
  cli.close_stdin();  // the command exits, tierlock run releases
  EXPECT_EQ(cli.wait().code, 0);
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> after, locks.try_acquire("cli"));
  ASSERT_TRUE(after.has_value()) << "tierlock run left the lock held";
  EXPECT_GT(static_cast<std::int64_t>(*after->token()), token);
  // A malformed URL is a usage error (64), naming the URL.
  RunResult bad =
      run({"/bin/sh", "-c",
           std::string(TIERLOCK_CLI_PATH) +
               " run --backend etcd://127.0.0.1:0 --key k -- true 2>&1"});
  EXPECT_EQ(bad.status.code, 64) << bad.out;
  EXPECT_NE(bad.out.find("etcd URL 'etcd://127.0.0.1:0'"), std::string::npos)
      << bad.out;
}

// The leader dies while a lease is held (auto-renewed, ttl 3 s) and a waiter
// is queued: the holder keeps its lease through the election (no lost()),
// nobody else is granted meanwhile, and the waiter gets it after the release
// with a higher token.
TEST(EtcdLeaseFaultTest,
     LeaderKilledWhileHeldHolderKeepsItAndTheWaiterFollows) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<EtcdCluster> etcd, EtcdCluster::start());
  ASSERT_OK_AND_ASSIGN(int leader, etcd->leader());
  // The leader first in every client's list: requests go to it until it dies.
  std::vector<std::string> eps = {etcd->client_url(leader)};
  for (int i = 0; i < etcd->size(); ++i) {
    if (i != leader) eps.push_back(etcd->client_url(i));
  }
  auto b = make_backend(eps);
  auto other = make_backend(eps);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(other, nullptr);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks,
                       LeaseLock::create(b, {.ttl = 3s, .auto_renew = true}));
  ASSERT_OK_AND_ASSIGN(LeaseLock contender,
                       LeaseLock::create(other, {.ttl = 3s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("failover"));
  ASSERT_TRUE(a.has_value());
  absl::StatusOr<Lease> queued = absl::UnknownError("not run");
  // A jthread: a failed assertion below stops (and joins) it on the way out.
  std::jthread waiter([&](std::stop_token stop) {
    queued = contender.acquire("failover", {.timeout = 60s, .stop = stop});
  });
  ASSERT_TRUE(wait_until(
      [&] { return keys_under(*etcd, "failover/").size() == 2; }, 10s));

  const Clock::time_point killed = Clock::now();
  ASSERT_OK(etcd->kill(leader));
  ASSERT_OK_AND_ASSIGN(int new_leader, etcd->leader());
  const auto election = Clock::now() - killed;
  EXPECT_NE(new_leader, leader);
  // Two TTLs after the kill: the holder's lease would have lapsed twice over
  // without renewals through the new leader.
  int refused = 0;
  while (Clock::now() - killed < 6s) {
    absl::StatusOr<std::optional<Lease>> t = contender.try_acquire("failover");
    if (t.ok()) {
      ASSERT_FALSE(t->has_value())
          << "granted to another owner while the holder held it";
      ++refused;
    }
    ASSERT_FALSE(a->lost().stop_requested())
        << "the holder lost its lease in the failover";
    std::this_thread::sleep_for(100ms);  // pacing the contender, not a sync
  }
  EXPECT_GT(refused, 0);
  EXPECT_TRUE(a->held());
  ASSERT_OK_AND_ASSIGN(bool released, a->release());
  EXPECT_TRUE(released);
  waiter.join();
  ASSERT_OK(queued.status());
  EXPECT_GT(*queued->token(), *a->token());
  std::cerr
      << "leader SIGKILLed: new leader after "
      << std::chrono::duration_cast<std::chrono::milliseconds>(election).count()
      << " ms; the holder kept its 3 s lease through 6 s; " << refused
      << " contender tries refused\n";
  ASSERT_OK(queued->release());
  ASSERT_OK(etcd->restart(leader));
}

// A member the holder talks to is paused (SIGSTOP: its sockets stay open and
// silent): the renewal in flight gives that member half of what is left of
// the validity, then moves to the next one; the holder keeps its lease.
TEST(EtcdLeaseFaultTest, PausedMemberTheHolderTalksToIsLeftForAnother) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<EtcdCluster> etcd, EtcdCluster::start());
  ASSERT_OK_AND_ASSIGN(int leader, etcd->leader());
  const int paused = (leader + 1) % etcd->size();
  std::vector<std::string> eps = {etcd->client_url(paused)};
  std::vector<std::string> others;
  for (int i = 0; i < etcd->size(); ++i) {
    if (i != paused) {
      eps.push_back(etcd->client_url(i));
      others.push_back(etcd->client_url(i));
    }
  }
  auto b = make_backend(eps);
  auto other = make_backend(others);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(other, nullptr);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks,
                       LeaseLock::create(b, {.ttl = 3s, .auto_renew = true}));
  ASSERT_OK_AND_ASSIGN(LeaseLock contender,
                       LeaseLock::create(other, {.ttl = 3s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a,
                       locks.try_acquire("paused-member"));
  ASSERT_TRUE(a.has_value());
  const Clock::time_point t0 = Clock::now();
  ASSERT_OK(etcd->pause(paused));
  int refused = 0;
  while (Clock::now() - t0 < 6s) {
    absl::StatusOr<std::optional<Lease>> t =
        contender.try_acquire("paused-member");
    ASSERT_OK(t.status());
    ASSERT_FALSE(t->has_value())
        << "granted to another owner while the holder held it";
    ++refused;
    ASSERT_FALSE(a->lost().stop_requested())
        << "the holder lost its lease to a paused member";
    std::this_thread::sleep_for(100ms);  // pacing the contender, not a sync
  }
  EXPECT_GT(a->valid_until(), t0 + 3s)
      << "no renewal went through another member";
  ASSERT_OK(etcd->resume(paused));
  ASSERT_OK_AND_ASSIGN(bool released, a->release());
  EXPECT_TRUE(released);
  std::cerr << "member paused 6 s: the holder kept its 3 s lease; " << refused
            << " contender tries refused\n";
}

// Two of three members die: acquires fail with kUnavailable, the held lease
// is lost by its deadline, and when quorum returns nobody is granted the key
// before the old holder knew it had lost it.
TEST(EtcdLeaseFaultTest,
     QuorumLostAcquiresFailAndTheHeldLeaseIsLostByItsDeadline) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<EtcdCluster> etcd, EtcdCluster::start());
  auto b = make_backend(endpoints(*etcd), 1s);
  auto other = make_backend(endpoints(*etcd), 1s);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(other, nullptr);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks,
                       LeaseLock::create(b, {.ttl = 3s, .auto_renew = true}));
  ASSERT_OK_AND_ASSIGN(LeaseLock contender,
                       LeaseLock::create(other, {.ttl = 3s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("quorum"));
  ASSERT_TRUE(a.has_value());
  std::atomic<std::int64_t> lost_ns{0};
  std::stop_callback on_lost(
      a->lost(), [&] { lost_ns = Clock::now().time_since_epoch().count(); });
  const Clock::time_point killed = Clock::now();
  ASSERT_OK(etcd->kill(0));
  ASSERT_OK(etcd->kill(1));

  const Clock::time_point t0 = Clock::now();
  absl::StatusOr<std::optional<Lease>> refused =
      contender.try_acquire("quorum-other");
  const auto took = Clock::now() - t0;
  EXPECT_TRUE(
      IsError(refused.status(), absl::StatusCode::kUnavailable, "quorum-other"))
      << refused.status();
  EXPECT_LT(took, 10s);

  ASSERT_TRUE(wait_until([&] { return lost_ns.load() != 0; }, 10s))
      << "lost() never fired";
  const Clock::time_point lost_at{Clock::duration(lost_ns.load())};
  EXPECT_LE(lost_at, a->valid_until() + 100ms) << "lost() late";
  EXPECT_FALSE(a->held());

  ASSERT_OK(etcd->restart(0));
  ASSERT_OK(etcd->restart(1));
  const Clock::time_point sent = Clock::now();
  absl::StatusOr<Lease> next = contender.acquire("quorum", {.timeout = 30s});
  ASSERT_OK(next.status());
  EXPECT_GT(sent, lost_at)
      << "the key was granted before the holder knew it had lost it";
  EXPECT_GT(*next->token(), *a->token());
  std::cerr
      << "quorum lost: an acquire failed kUnavailable after "
      << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
      << " ms; the holder's lost() "
      << std::chrono::duration_cast<std::chrono::milliseconds>(lost_at - killed)
             .count()
      << " ms after the kill ("
      << std::chrono::duration_cast<std::chrono::milliseconds>(lost_at -
                                                               a->valid_until())
             .count()
      << " ms from valid_until); the next owner was granted "
      << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() -
                                                               killed)
             .count()
      << " ms after the kill\n";
}

// The connection to one member freezes (the test proxy stops forwarding, as
// in a partition between this client and that member): the holder's
// renewals and the waiter's watch move to the other members; the holder
// keeps its lease and the waiter is woken by the release.
TEST(EtcdLeaseFaultTest, FrozenConnectionToOneMemberIsLeftByHolderAndWaiter) {
  EtcdCluster& etcd = shared_etcd();
  TcpProxy proxy(etcd.client_port(0));
  const std::vector<std::string> eps = {
      absl::StrCat("http://127.0.0.1:", proxy.port()), etcd.client_url(1),
      etcd.client_url(2)};
  auto b = make_backend(eps);
  auto w = make_backend(eps);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(w, nullptr);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks,
                       LeaseLock::create(b, {.ttl = 3s, .auto_renew = true}));
  ASSERT_OK_AND_ASSIGN(LeaseLock waiting, LeaseLock::create(w, {.ttl = 3s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a,
                       locks.try_acquire("frozen-member"));
  ASSERT_TRUE(a.has_value());
  std::atomic<std::int64_t> granted_ns{0};
  absl::StatusOr<Lease> queued = absl::UnknownError("not run");
  std::jthread waiter([&](std::stop_token stop) {
    queued = waiting.acquire("frozen-member", {.timeout = 60s, .stop = stop});
    granted_ns = Clock::now().time_since_epoch().count();
  });
  ASSERT_TRUE(wait_until(
      [&] { return keys_under(etcd, "frozen-member/").size() == 2; }, 10s));
  const Clock::time_point frozen = Clock::now();
  proxy.freeze(true);
  while (Clock::now() - frozen < 5s) {
    ASSERT_FALSE(a->lost().stop_requested())
        << "the holder lost its lease to a frozen member";
    ASSERT_EQ(granted_ns.load(), 0)
        << "the waiter was granted while the holder held it";
    std::this_thread::sleep_for(100ms);  // pacing the checks, not a sync
  }
  EXPECT_GT(a->valid_until(), frozen + 3s)
      << "no renewal went through another member";
  const Clock::time_point released_at = Clock::now();
  ASSERT_OK_AND_ASSIGN(bool released, a->release());
  EXPECT_TRUE(released);
  ASSERT_TRUE(wait_until([&] { return granted_ns.load() != 0; }, 20s))
      << "the waiter was not woken by the release";
  waiter.join();
  ASSERT_OK(queued.status());
  const auto wake =
      Clock::time_point(Clock::duration(granted_ns.load())) - released_at;
  EXPECT_LT(wake, 2s) << "the waiter's watch stayed on the frozen member";
  EXPECT_GT(*queued->token(), *a->token());
  std::cerr
      << "connection to one member frozen 5 s: the holder kept its 3 s lease; "
         "the waiter "
      << "was granted "
      << std::chrono::duration_cast<std::chrono::milliseconds>(wake).count()
      << " ms after the release\n";
  proxy.freeze(false);
}

// A grant whose reply is lost (the proxy drops the replies on the open
// connection) may have happened: the acquire fails, and the lease it may
// have created is revoked first, so nothing is left holding anything.
TEST(EtcdLeaseFaultTest, LostGrantReplyIsRevokedBeforeTheErrorIsReported) {
  EtcdCluster& etcd = shared_etcd();
  TcpProxy proxy(etcd.client_port(0));
  auto b = make_backend({absl::StrCat("http://127.0.0.1:", proxy.port())}, 1s);
  ASSERT_NE(b, nullptr);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(b, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::string leases_before, etcd.etcdctl("lease list"));
  // The backend's pooled connection (opened by create()) carries the grant.
  proxy.drop_replies_on_open_connections();
  absl::StatusOr<std::optional<Lease>> r = locks.try_acquire("lost-reply");
  EXPECT_TRUE(IsError(r.status(), absl::StatusCode::kUnavailable, "lost-reply",
                      "revoked in case it was granted"))
      << r.status();
  ASSERT_OK_AND_ASSIGN(std::string leases_after, etcd.etcdctl("lease list"));
  EXPECT_EQ(leases_after, leases_before)
      << "the grant whose reply was lost is still there";
  EXPECT_TRUE(keys_under(etcd, "lost-reply/").empty());
  // And the key is free.
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> next,
                       locks.try_acquire("lost-reply"));
  EXPECT_TRUE(next.has_value());
}

}  // namespace
}  // namespace tierlock::testing

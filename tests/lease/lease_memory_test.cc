// tests/lease/lease_memory_test.cc
//
// The lease front over the in-memory backend: the conformance suite on the
// real clock, and the TTL semantics driven by a ManualLeaseClock.
#include "tierlock/lease_memory.h"

#include <atomic>
#include <thread>

#include "gtest/gtest.h"
#include "lease/conformance.h"
#include "support/fixture.h"
#include "support/status.h"
#include "support/temp_dir.h"
#include "support/tier_mode.h"
#include "support/wait.h"
#include "tierlock/lease.h"
#include "tierlock/tierlock.h"

namespace tierlock::testing {
namespace {

using namespace std::chrono_literals;

INSTANTIATE_TEST_SUITE_P(Memory, LeaseConformanceTest,
                         ::testing::Values(LeaseBackendFactory{
                             "memory",
                             [] {
                               return std::shared_ptr<LeaseBackend>(
                                   MemoryLeaseBackend::create());
                             }}),
                         [](const auto& p) { return p.param.name; });

class MemoryLeaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::thread([] {}).join();
    threads_ = count_threads();
  }
  void TearDown() override {
    wait_until([&] { return count_threads() <= threads_; }, 5s);
    EXPECT_LE(count_threads(), threads_) << "a lease thread was left behind";
  }
  LeaseLock lock(LeaseOptions o) {
    absl::StatusOr<LeaseLock> l = LeaseLock::create(backend_, std::move(o));
    EXPECT_TRUE(l.ok()) << l.status();
    return *std::move(l);
  }
  std::shared_ptr<ManualLeaseClock> clock_ =
      std::make_shared<ManualLeaseClock>();
  std::shared_ptr<MemoryLeaseBackend> backend_ =
      MemoryLeaseBackend::create(clock_);
  int threads_ = 0;
};

TEST_F(MemoryLeaseTest, BackendErrorIsAnErrorNotContention) {
  LeaseLock locks = lock({.ttl = 1s});
  backend_->fail_next(absl::UnavailableError("injected outage"));
  absl::StatusOr<std::optional<Lease>> r = locks.try_acquire("k");
  EXPECT_TRUE(IsError(r.status(), absl::StatusCode::kUnavailable,
                      "injected outage", "'k'"));
  EXPECT_EQ(backend_->holder("k"), std::nullopt);
  // acquire() does not retry an error as if it were contention.
  backend_->fail_next(absl::UnavailableError("injected outage"));
  EXPECT_TRUE(IsError(locks.acquire("k", {.timeout = 5s}).status(),
                      absl::StatusCode::kUnavailable));
}

TEST_F(MemoryLeaseTest, TtlExpiryFollowsTheInjectedClock) {
  LeaseLock locks = lock({.ttl = 10s});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("k"));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->valid_until(), clock_->now() + 10s);
  clock_->advance(9s);
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> b, locks.try_acquire("k"));
  EXPECT_FALSE(b.has_value());
  EXPECT_FALSE(a->lost().stop_requested());
  clock_->advance(1s);
  EXPECT_TRUE(wait_until([&] { return a->lost().stop_requested(); }));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> c, locks.try_acquire("k"));
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(*c->token(), *a->token() + 1);
  EXPECT_EQ(backend_->holder("k"), c->owner_id());
  ASSERT_OK_AND_ASSIGN(bool released, a->release());
  EXPECT_FALSE(released);
  EXPECT_EQ(backend_->holder("k"), c->owner_id())
      << "deleted another owner's lease";
}

TEST_F(MemoryLeaseTest, ValidUntilCountsFromWhenTheRequestWasSent) {
  // A backend that takes 3 s (on the clock) to answer.
  class Slow final : public LeaseBackend {
   public:
    Slow(std::shared_ptr<MemoryLeaseBackend> inner,
         std::shared_ptr<ManualLeaseClock> c)
        : inner_(std::move(inner)), clock_(std::move(c)) {}
    std::string_view name() const override { return "slow"; }
    LeaseCapabilities capabilities() const override {
      return inner_->capabilities();
    }
    LeaseClock& clock() const override { return *clock_; }
    absl::StatusOr<std::unique_ptr<LeaseSession>> try_acquire(
        const LeaseRequest& r) override {
      auto s = inner_->try_acquire(r);
      clock_->advance(3s);
      return s;
    }
    std::shared_ptr<MemoryLeaseBackend> inner_;
    std::shared_ptr<ManualLeaseClock> clock_;
  };
  auto slow = std::make_shared<Slow>(backend_, clock_);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(slow, {.ttl = 10s}));
  const auto sent = clock_->now();
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("k"));
  ASSERT_TRUE(a.has_value());
  // Less the clock-drift margin (a wrapper keeps the default one).
  EXPECT_EQ(a->valid_until(), sent + 10s - slow->clock_drift_margin(10s));
}

TEST_F(MemoryLeaseTest, ExtendAfterLossReturnsFalseWithoutAskingTheBackend) {
  LeaseLock locks = lock({.ttl = 1s});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("k"));
  ASSERT_TRUE(a.has_value());
  clock_->advance(2s);
  // The backend would fail if asked; a lost lease does not ask.
  backend_->fail_next(absl::InternalError("asked"));
  ASSERT_OK_AND_ASSIGN(bool extended, a->extend(1s));
  EXPECT_FALSE(extended);
  EXPECT_TRUE(a->lost().stop_requested());
  backend_->fail_next(absl::OkStatus(), 0);
}

TEST_F(MemoryLeaseTest, ExtendErrorIsNotALoss) {
  LeaseLock locks = lock({.ttl = 1s});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("k"));
  ASSERT_TRUE(a.has_value());
  clock_->advance(999ms);
  ASSERT_OK_AND_ASSIGN(bool ok, a->extend(5s));
  EXPECT_TRUE(ok);
  EXPECT_EQ(a->valid_until(), clock_->now() + 5s);
  backend_->fail_next(absl::UnavailableError("network"));
  EXPECT_TRUE(IsError(a->extend(5s).status(), absl::StatusCode::kUnavailable));
  EXPECT_FALSE(a->lost().stop_requested())
      << "an error is not a loss for extend()";
}

TEST_F(MemoryLeaseTest, AutoRenewRenewsAtAThirdOfTheTtl) {
  LeaseLock locks = lock({.ttl = 3s, .auto_renew = true});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("k"));
  ASSERT_TRUE(a.has_value());
  const auto first = a->valid_until();
  clock_->advance(500ms);  // before ttl/3: no renewal
  clock_->advance(600ms);  // past ttl/3
  ASSERT_TRUE(wait_until([&] { return a->valid_until() > first; }));
  EXPECT_EQ(a->valid_until(), clock_->now() + 3s);
  for (int i = 0; i < 5; ++i) {
    const auto before = a->valid_until();
    clock_->advance(1100ms);
    ASSERT_TRUE(wait_until([&] { return a->valid_until() > before; }));
  }
  EXPECT_FALSE(a->lost().stop_requested());
  LeaseLock other = lock({.ttl = 3s});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> b, other.try_acquire("k"));
  EXPECT_FALSE(b.has_value());
}

TEST_F(MemoryLeaseTest, FailedRenewalFiresLost) {
  LeaseLock locks = lock({.ttl = 3s, .auto_renew = true});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("k"));
  ASSERT_TRUE(a.has_value());
  backend_->fail_next(absl::UnavailableError("renewal outage"));
  clock_->advance(1100ms);
  EXPECT_TRUE(wait_until([&] { return a->lost().stop_requested(); }));
  ASSERT_OK_AND_ASSIGN(bool ext, a->extend(3s));
  EXPECT_FALSE(ext);
}

TEST_F(MemoryLeaseTest, LostCallbackMayCallIntoTheLease) {
  LeaseLock locks = lock({.ttl = 3s, .auto_renew = true});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("k"));
  ASSERT_TRUE(a.has_value());
  std::atomic<int> seen{0};
  std::stop_callback on_lost(a->lost(), [&] {
    seen = a->held() ? 1 : 2;  // takes the lease's mutex: must not deadlock
  });
  backend_->fail_next(absl::UnavailableError("renewal outage"));
  clock_->advance(1100ms);  // the renewer's failed renewal fires lost()
  ASSERT_TRUE(wait_until([&] { return seen.load() != 0; }));
  EXPECT_EQ(seen.load(), 2);
  // From extend() on the caller's thread, too.
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> b, locks.try_acquire("k2"));
  std::atomic<bool> fired{false};
  std::stop_callback on_lost_b(b->lost(), [&] { fired = !b->held(); });
  clock_->advance(10s);
  ASSERT_OK_AND_ASSIGN(bool extended, b->extend(3s));
  EXPECT_FALSE(extended);
  EXPECT_TRUE(fired.load());
}

TEST_F(MemoryLeaseTest, MovedLeaseReleasesOnce) {
  LeaseLock locks = lock({.ttl = 3s});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("k"));
  Lease moved = std::move(*a);
  a.reset();
  EXPECT_EQ(backend_->holder("k"), moved.owner_id());
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> b, locks.try_acquire("k2"));
  moved = std::move(*b);  // releases "k"
  EXPECT_EQ(backend_->holder("k"), std::nullopt);
  EXPECT_EQ(backend_->holder("k2"), moved.owner_id());
}

TEST_F(MemoryLeaseTest, TierIsKeptWithACopyOfItsName) {
  std::string name = "jobs";
  LeaseLock locks = lock({.tier = Tier{30, name}});
  name = "overwritten";
  ASSERT_TRUE(locks.tier().has_value());
  EXPECT_EQ(*locks.tier(), (Tier{30, "jobs"}));
}

// Leases take part in tier ordering like directory locks: checked before
// anything is asked of the backend, held in the LockContext until release.
class LeaseTierTest : public MemoryLeaseTest {
 protected:
  DirLock open_dir(Tier tier) {
    LockOptions o;
    o.tier = tier;
    absl::StatusOr<DirLock> d = DirLock::open(dir_.path(), o);
    EXPECT_TRUE(d.ok()) << d.status();
    return *std::move(d);
  }
  static constexpr Tier kWorkspace{10, "workspace"};
  static constexpr Tier kJobs{30, "jobs"};
  TempDir dir_;
  ScopedTierCheckMode mode_{TierCheckMode::kFail};
};

TEST_F(LeaseTierTest,
       LowerTierLeaseUnderAHigherLockIsRefusedAndNothingIsAsked) {
  DirLock jobs_dir = open_dir(kJobs);
  LeaseLock workspace = lock({.tier = kWorkspace});
  ASSERT_OK_AND_ASSIGN(Guard held, jobs_dir.acquire());
  absl::StatusOr<Lease> refused = workspace.acquire("ws");
  EXPECT_TRUE(IsError(refused.status(), absl::StatusCode::kFailedPrecondition,
                      "lease:memory/ws"));
  EXPECT_EQ(backend_->holder("ws"), std::nullopt) << "the backend was asked";
  // A try cannot wait, so it is never refused for order (tier.h).
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> tried, workspace.try_acquire("ws"));
  EXPECT_TRUE(tried.has_value());
  EXPECT_EQ(LockContext::current().held().size(), 2u);
}

TEST_F(LeaseTierTest, LeaseIsHeldInTheContextUntilReleased) {
  LeaseLock workspace = lock({.tier = kWorkspace});
  DirLock jobs_dir = open_dir(kJobs);
  ASSERT_OK_AND_ASSIGN(Lease lease, workspace.acquire("ws"));
  std::vector<HeldLock> held = LockContext::current().held();
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].lock_file, "lease:memory/ws");
  EXPECT_EQ(held[0].tier, kWorkspace);
  {
    // In order: a higher tier under the lease.
    ASSERT_OK_AND_ASSIGN(Guard inner, jobs_dir.acquire());
  }
  // Same tier again (another key) is refused while the lease is held.
  LeaseLock other = lock({.tier = kWorkspace});
  EXPECT_EQ(other.acquire("ws2").status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_OK_AND_ASSIGN(bool was_held, lease.release());
  EXPECT_TRUE(was_held);
  EXPECT_TRUE(LockContext::current().held().empty());
  ASSERT_OK_AND_ASSIGN(Lease again, other.acquire("ws2"));
}

TEST_F(LeaseTierTest, FailedOrContendedAcquireRecordsNothing) {
  LeaseLock workspace = lock({.tier = kWorkspace});
  LeaseLock untiered = lock({});
  ASSERT_OK_AND_ASSIGN(Lease theirs,
                       untiered.acquire("busy"));  // untiered: not recorded
  EXPECT_TRUE(LockContext::current().held().empty());
  absl::StatusOr<std::optional<Lease>> tried = workspace.try_acquire("busy");
  ASSERT_TRUE(tried.ok()) << tried.status();
  EXPECT_FALSE(tried->has_value());
  EXPECT_EQ(workspace.acquire("busy", {.timeout = 0ms}).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  backend_->fail_next(absl::UnavailableError("injected outage"));
  EXPECT_EQ(workspace.acquire("other").status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(LockContext::current().held().empty());
}

TEST_F(LeaseTierTest, ChecksOffRecordNothing) {
  ScopedTierCheckMode off(TierCheckMode::kIgnore);
  DirLock jobs_dir = open_dir(kJobs);
  LeaseLock workspace = lock({.tier = kWorkspace});
  ASSERT_OK_AND_ASSIGN(Guard held, jobs_dir.acquire());
  ASSERT_OK_AND_ASSIGN(Lease lease, workspace.acquire("ws"));
  EXPECT_TRUE(LockContext::current().held().empty());
}

TEST_F(MemoryLeaseTest, AsyncOptionsAreRejected) {
  LeaseLock locks = lock({});
  WorkerPool* pool = reinterpret_cast<WorkerPool*>(&locks);  // never used
  EXPECT_TRUE(IsError(locks.acquire("k", {.pool = pool}).status(),
                      absl::StatusCode::kInvalidArgument, "pool"));
}

}  // namespace
}  // namespace tierlock::testing

// tests/lease/conformance.cc -- see conformance.h.
#include "lease/conformance.h"

#include <atomic>
#include <mutex>
#include <stop_token>
#include <thread>
#include <vector>

#include "support/fixture.h"
#include "support/status.h"
#include "support/wait.h"

namespace tierlock::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string unique_key() {
  const ::testing::TestInfo* t =
      ::testing::UnitTest::GetInstance()->current_test_info();
  static std::atomic<int> n{0};
  return std::string(t->test_suite_name()) + "/" + t->name() + "/" +
         std::to_string(::getpid()) + "-" + std::to_string(n++);
}

}  // namespace

void LeaseConformanceTest::SetUp() {
  std::thread([] {}).join();  // TSan's helper thread, see fixture.cc
  threads_ = count_threads();
  backend_ = GetParam().make();
  ASSERT_NE(backend_, nullptr);
  key_ = unique_key();
}

void LeaseConformanceTest::TearDown() {
  backend_.reset();
  // The shared renewer thread exits once no lease is left.
  wait_until([&] { return count_threads() <= threads_; }, 5s);
  EXPECT_LE(count_threads(), threads_) << "a lease thread was left behind";
}

// Binaries without a backend instance (lease_cli_test) link this too.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(LeaseConformanceTest);

namespace {

LeaseLock make_lock(const std::shared_ptr<LeaseBackend>& b,
                    LeaseOptions o = {}) {
  if (!b->capabilities().ttl) o.ttl.reset();
  absl::StatusOr<LeaseLock> l = LeaseLock::create(b, o);
  EXPECT_TRUE(l.ok()) << l.status();
  return *std::move(l);
}

TEST_P(LeaseConformanceTest, TryAcquireReportsContentionAsEmptyNotError) {
  LeaseLock locks = make_lock(backend_, {.ttl = 30s});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key_));
  ASSERT_TRUE(a.has_value());
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> b, locks.try_acquire(key_));
  EXPECT_FALSE(b.has_value());
  EXPECT_EQ(a->owner_id().size(), 32u);
  EXPECT_TRUE(a->held());
  ASSERT_OK_AND_ASSIGN(bool released, a->release());
  EXPECT_TRUE(released);
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> c, locks.try_acquire(key_));
  EXPECT_TRUE(c.has_value());
}

TEST_P(LeaseConformanceTest, KeysAreIndependent) {
  LeaseLock locks = make_lock(backend_, {.ttl = 30s});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key_ + "/a"));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> b, locks.try_acquire(key_ + "/b"));
  EXPECT_TRUE(a.has_value());
  EXPECT_TRUE(b.has_value());
}

TEST_P(LeaseConformanceTest, TokensStrictlyIncreasePerKey) {
  if (!backend_->capabilities().fencing) {
    LeaseLock locks = make_lock(backend_);
    ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key_));
    ASSERT_TRUE(a.has_value());
    EXPECT_FALSE(a->token().has_value())
        << "no fencing capability, but a token";
    EXPECT_FALSE(LeaseLock::create(backend_, {.require_fencing = true}).ok());
    return;
  }
  LeaseLock locks = make_lock(backend_, {.ttl = 30s});
  std::uint64_t last = 0;
  for (int i = 0; i < 5; ++i) {
    ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key_));
    ASSERT_TRUE(a.has_value());
    ASSERT_TRUE(a->token().has_value());
    EXPECT_GT(*a->token(), last);
    last = *a->token();
    // Another key's grants do not break this key's order.
    ASSERT_OK_AND_ASSIGN(std::optional<Lease> other,
                         locks.try_acquire(key_ + "/x"));
    ASSERT_TRUE(other.has_value());
  }
}

TEST_P(LeaseConformanceTest, ReleaseIsIdempotentAndDestructorReleases) {
  LeaseLock locks = make_lock(backend_, {.ttl = 30s});
  {
    ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key_));
    ASSERT_TRUE(a.has_value());
  }
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> b, locks.try_acquire(key_));
  ASSERT_TRUE(b.has_value()) << "the destructor did not release";
  ASSERT_OK_AND_ASSIGN(bool first, b->release());
  EXPECT_TRUE(first);
  ASSERT_OK_AND_ASSIGN(bool second, b->release());
  EXPECT_FALSE(second);
  EXPECT_FALSE(b->held());
  EXPECT_TRUE(IsError(b->extend(1s).status(),
                      backend_->capabilities().ttl
                          ? absl::StatusCode::kFailedPrecondition
                          : absl::StatusCode::kUnimplemented));
}

TEST_P(LeaseConformanceTest, ExpiredLeaseIsTakenOverAndOldOwnerCannotTouchIt) {
  if (!backend_->capabilities().ttl) {
    // Connection-bound: no ttl to expire, and asking for one is refused.
    EXPECT_TRUE(IsError(LeaseLock::create(backend_, {.ttl = 200ms}).status(),
                        absl::StatusCode::kUnimplemented, "ttl"));
    return;
  }
  LeaseLock short_locks = make_lock(backend_, {.ttl = 200ms});
  LeaseLock locks = make_lock(backend_, {.ttl = 30s});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> old, short_locks.try_acquire(key_));
  ASSERT_TRUE(old.has_value());
  const Clock::time_point t0 = Clock::now();
  std::optional<Lease> fresh;
  ASSERT_TRUE(wait_until(
      [&] {
        absl::StatusOr<std::optional<Lease>> r = locks.try_acquire(key_);
        if (r.ok() && r->has_value()) fresh = std::move(*r);
        return fresh.has_value();
      },
      10s));
  // Not before the TTL passed, measured from before the request was sent.
  EXPECT_GE(Clock::now() - t0, 150ms);
  EXPECT_TRUE(wait_until([&] { return old->lost().stop_requested(); }, 5s));
  if (backend_->capabilities().fencing) {
    EXPECT_GT(*fresh->token(), *old->token());
  }
  ASSERT_OK_AND_ASSIGN(bool extended, old->extend(30s));
  EXPECT_FALSE(extended);
  ASSERT_OK_AND_ASSIGN(bool released, old->release());
  EXPECT_FALSE(released);
  // The new owner's lease survived the old owner's release.
  EXPECT_TRUE(fresh->held());
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> third, locks.try_acquire(key_));
  EXPECT_FALSE(third.has_value())
      << "the old owner's release deleted the new lease";
  ASSERT_OK_AND_ASSIGN(bool ext, fresh->extend(30s));
  EXPECT_TRUE(ext);
}

TEST_P(LeaseConformanceTest, LostFiresWhenTtlPassesWithoutRenewal) {
  if (!backend_->capabilities().ttl) {
    // Connection-bound: valid while the connection lives; lost() unfired.
    LeaseLock locks = make_lock(backend_);
    ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key_));
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->valid_until(), Clock::time_point::max());
    EXPECT_FALSE(a->lost().stop_requested());
    return;
  }
  LeaseLock locks = make_lock(backend_, {.ttl = 200ms});
  const Clock::time_point before = Clock::now();
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key_));
  ASSERT_TRUE(a.has_value());
  // Measured from the send, less the backend's clock-drift margin.
  EXPECT_GE(a->valid_until(),
            before + 200ms - backend_->clock_drift_margin(200ms));
  EXPECT_LE(a->valid_until(),
            Clock::now() + 200ms - backend_->clock_drift_margin(200ms));
  std::atomic<bool> fired{false};
  std::stop_callback cb(a->lost(), [&] { fired = true; });
  ASSERT_TRUE(wait_until([&] { return fired.load(); }, 5s));
  EXPECT_GE(Clock::now(), a->valid_until());
  EXPECT_FALSE(a->held());
}

TEST_P(LeaseConformanceTest, AutoRenewKeepsTheLeasePastItsTtl) {
  if (!backend_->capabilities().ttl) {
    EXPECT_TRUE(
        IsError(LeaseLock::create(backend_, {.auto_renew = true}).status(),
                absl::StatusCode::kUnimplemented, "auto-renew"));
    return;
  }
  // ttl/3 renewals leave 2/3 of the TTL as slack for a loaded (sanitizer)
  // machine: 600 ms.
  LeaseLock locks = make_lock(backend_, {.ttl = 900ms, .auto_renew = true});
  LeaseLock other = make_lock(backend_, {.ttl = 900ms});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key_));
  ASSERT_TRUE(a.has_value());
  const auto first_until = a->valid_until();
  // For two TTLs, nobody else gets it and lost() does not fire.
  const Clock::time_point end = Clock::now() + 1800ms;
  while (Clock::now() < end) {
    ASSERT_OK_AND_ASSIGN(std::optional<Lease> b, other.try_acquire(key_));
    ASSERT_FALSE(b.has_value()) << "granted while auto-renewed";
    ASSERT_FALSE(a->lost().stop_requested());
    std::this_thread::sleep_for(20ms);  // pacing the contender, not a sync
  }
  EXPECT_GT(a->valid_until(), first_until + 900ms);
  ASSERT_OK_AND_ASSIGN(bool released, a->release());
  EXPECT_TRUE(released);
}

TEST_P(LeaseConformanceTest, ExtendMovesValidUntil) {
  if (!backend_->capabilities().ttl) {
    LeaseLock locks = make_lock(backend_);
    ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key_));
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->valid_until(), Clock::time_point::max());
    EXPECT_TRUE(
        IsError(a->extend(1s).status(), absl::StatusCode::kUnimplemented));
    return;
  }
  LeaseLock locks = make_lock(backend_, {.ttl = 1s});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key_));
  ASSERT_TRUE(a.has_value());
  const Clock::time_point before = Clock::now();
  ASSERT_OK_AND_ASSIGN(bool ok, a->extend(60s));
  EXPECT_TRUE(ok);
  EXPECT_GE(a->valid_until(), before + 60s - backend_->clock_drift_margin(60s));
  EXPECT_TRUE(
      IsError(a->extend(1ms).status(), absl::StatusCode::kInvalidArgument));
}

TEST_P(LeaseConformanceTest, AcquireTimesOutPromptlyHoldingNothing) {
  LeaseLock locks = make_lock(backend_, {.ttl = 30s});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key_));
  ASSERT_TRUE(a.has_value());
  const Clock::time_point t0 = Clock::now();
  absl::StatusOr<Lease> b = locks.acquire(key_, {.timeout = 100ms});
  const auto took = Clock::now() - t0;
  EXPECT_TRUE(IsError(b.status(), absl::StatusCode::kDeadlineExceeded, key_));
  EXPECT_GE(took, 100ms);
  EXPECT_LT(took, 1000ms);
  // The timed-out waiter holds nothing: after a's release the key is free.
  ASSERT_OK(a->release());
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> c, locks.try_acquire(key_));
  EXPECT_TRUE(c.has_value());
  // Zero timeout: one try.
  EXPECT_TRUE(IsError(locks.acquire(key_, {.timeout = 0ms}).status(),
                      absl::StatusCode::kDeadlineExceeded));
}

TEST_P(LeaseConformanceTest, AcquireCancelReturnsPromptlyHoldingNothing) {
  LeaseLock locks = make_lock(backend_, {.ttl = 30s});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key_));
  ASSERT_TRUE(a.has_value());
  std::stop_source stop;
  std::atomic<bool> started{false};
  Clock::time_point stopped_at;
  absl::StatusOr<Lease> b = absl::UnknownError("not run");
  std::thread waiter([&] {
    started = true;
    b = locks.acquire(key_, {.stop = stop.get_token()});
  });
  ASSERT_TRUE(wait_until([&] { return started.load(); }));
  // Let it reach its wait: poll until the waiter is off the CPU would be
  // backend-specific; any moment is a valid moment to cancel.
  std::this_thread::sleep_for(50ms);
  stopped_at = Clock::now();
  stop.request_stop();
  waiter.join();
  EXPECT_LT(Clock::now() - stopped_at, 1000ms);
  EXPECT_TRUE(IsError(b.status(), absl::StatusCode::kCancelled, key_));
  ASSERT_OK(a->release());
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> c, locks.try_acquire(key_));
  EXPECT_TRUE(c.has_value()) << "the cancelled waiter holds the key";
  // An already-stopped token: kCancelled without waiting.
  EXPECT_TRUE(IsError(
      locks.acquire(key_ + "/free", {.stop = stop.get_token()}).status(),
      absl::StatusCode::kCancelled));
}

// Hooks of blocking acquires run on WorkerPool::global()'s timer thread,
// which then lives for the rest of the process: start it (one hooked wait on
// a key of its own, stopped by its hook) and count threads again.
void start_global_timer_thread(LeaseLock& locks, const std::string& key) {
  absl::StatusOr<std::optional<Lease>> held = locks.try_acquire(key + "/warm");
  ASSERT_OK(held.status());
  ASSERT_TRUE(held->has_value());
  std::stop_source stop;
  AcquireOptions o;
  o.timeout = 20s;
  o.stop = stop.get_token();
  o.on_wait = [&](const WaitInfo&) { stop.request_stop(); };
  EXPECT_EQ(locks.acquire(key + "/warm", std::move(o)).status().code(),
            absl::StatusCode::kCancelled);
}

TEST_P(LeaseConformanceTest, WaitHookIsToldOnceWhileAnotherOwnerHoldsTheKey) {
  LeaseLock locks = make_lock(backend_, {.ttl = 30s});
  start_global_timer_thread(locks, key_);
  threads_ = count_threads();
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key_));
  ASSERT_TRUE(a.has_value());
  std::mutex mu;
  std::vector<WaitInfo> told;
  absl::StatusOr<Lease> b = absl::UnknownError("not run");
  std::atomic<bool> returned{false};
  const auto start = Clock::now();
  std::thread waiter([&] {
    AcquireOptions o;
    o.timeout = 20s;
    o.on_wait_after = 30ms;
    o.on_wait = [&](const WaitInfo& info) {
      std::lock_guard<std::mutex> lk(mu);
      told.push_back(info);
    };
    b = locks.acquire(key_, std::move(o));
    returned = true;
  });
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard<std::mutex> lk(mu);
    return !told.empty();
  }));
  EXPECT_FALSE(returned.load()) << "told after the acquire returned";
  ASSERT_OK(a->release());
  waiter.join();
  ASSERT_OK(b.status());
  std::lock_guard<std::mutex> lk(mu);
  ASSERT_EQ(told.size(), 1U);
  EXPECT_EQ(told[0].lock,
            "lease:" + std::string(backend_->name()) + "/" + key_);
  EXPECT_GE(told[0].waited, 30ms);
  EXPECT_LE(told[0].waited, Clock::now() - start);
  // The holder as holder() reports it, where the backend can say.
  absl::StatusOr<std::optional<Holder>> direct = locks.holder(key_);
  if (told[0].holders.ok()) {
    ASSERT_EQ(told[0].holders->size(), 1U);
    const Holder& h = told[0].holders->front();
    if (h.owner_id.has_value()) {
      EXPECT_EQ(*h.owner_id, a->owner_id());
    }
    if (h.pid.has_value()) {
      EXPECT_EQ(*h.pid, ::getpid());
    }
  } else {
    EXPECT_EQ(told[0].holders.status().code(), direct.status().code())
        << told[0].holders.status();
  }
}

TEST_P(LeaseConformanceTest, WaitHookIsNeverToldForAFreeKeyOrATry) {
  LeaseLock locks = make_lock(backend_, {.ttl = 30s});
  start_global_timer_thread(locks, key_);
  threads_ = count_threads();
  std::atomic<int> told{0};
  {
    AcquireOptions o;
    o.on_wait = [&](const WaitInfo&) { ++told; };  // at once if it waits
    ASSERT_OK_AND_ASSIGN(Lease l, locks.acquire(key_, std::move(o)));
    AcquireOptions t;
    t.timeout = 0s;
    t.on_wait = [&](const WaitInfo&) { ++told; };
    EXPECT_EQ(locks.acquire(key_, std::move(t)).status().code(),
              absl::StatusCode::kDeadlineExceeded);
  }
  // A later hook with an earlier or equal time fires after any armed above
  // would have (the timer thread runs them in time order).
  start_global_timer_thread(locks, key_);
  EXPECT_EQ(told.load(), 0);
}

TEST_P(LeaseConformanceTest, AsyncAcquireRefusesAWaitHookItCannotHonour) {
  LeaseLock locks = make_lock(backend_, {.ttl = 30s});
  WorkerPool pool(1);
  AcquireOptions o;
  o.pool = &pool;
  o.on_wait = [](const WaitInfo&) {};
  absl::StatusOr<Lease> r = locks.acquire_async(key_, std::move(o)).get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented) << r.status();
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> free, locks.try_acquire(key_));
  EXPECT_TRUE(free.has_value()) << "the refused acquire holds the key";
}

TEST_P(LeaseConformanceTest, AcquireWaitsUntilTheHolderReleases) {
  LeaseLock locks = make_lock(backend_, {.ttl = 30s});
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key_));
  ASSERT_TRUE(a.has_value());
  std::atomic<bool> got{false};
  absl::StatusOr<Lease> b = absl::UnknownError("not run");
  std::thread waiter([&] {
    b = locks.acquire(key_, {.timeout = 20s});
    got = true;
  });
  EXPECT_FALSE(got.load());
  ASSERT_OK(a->release());
  waiter.join();
  ASSERT_OK(b.status());
  EXPECT_TRUE(b->held());
  if (backend_->capabilities().fencing) {
    EXPECT_GT(*b->token(), *a->token());
  }
}

TEST_P(LeaseConformanceTest, WithLeaseRunsTheCallableUnderTheLease) {
  LeaseLock locks = make_lock(backend_, {.ttl = 30s});
  absl::StatusOr<int> r =
      with_lease(locks, key_, {.timeout = 5s}, [&](Lease& l) {
        absl::StatusOr<std::optional<Lease>> again = locks.try_acquire(key_);
        EXPECT_TRUE(again.ok() && !again->has_value())
            << "not held inside with_lease";
        return l.held() ? 42 : 0;
      });
  ASSERT_OK(r);
  EXPECT_EQ(*r, 42);
  absl::Status s = with_lease(locks, key_, {}, [](Lease&) {
    return absl::AbortedError("callable failed");
  });
  EXPECT_TRUE(IsError(s, absl::StatusCode::kAborted, "callable failed"));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> after, locks.try_acquire(key_));
  EXPECT_TRUE(after.has_value()) << "with_lease did not release";
}

TEST_P(LeaseConformanceTest, BadKeysAndOptionsAreRejectedNamingTheKey) {
  LeaseLock locks = make_lock(backend_, {.ttl = 30s});
  EXPECT_TRUE(IsError(locks.try_acquire("").status(),
                      absl::StatusCode::kInvalidArgument, "empty"));
  EXPECT_TRUE(IsError(locks.try_acquire("a\nb").status(),
                      absl::StatusCode::kInvalidArgument, "a\\nb", "0x0a"));
  EXPECT_TRUE(IsError(locks.acquire(std::string(300, 'k')).status(),
                      absl::StatusCode::kInvalidArgument, "300 bytes"));
  EXPECT_TRUE(IsError(locks.acquire(key_, {.mode = Mode::kShared}).status(),
                      absl::StatusCode::kUnimplemented, "shared"));
  if (backend_->capabilities().ttl) {
    EXPECT_TRUE(IsError(LeaseLock::create(backend_, {.ttl = 1ms}).status(),
                        absl::StatusCode::kInvalidArgument, "ttl"));
    EXPECT_TRUE(IsError(LeaseLock::create(backend_, {.ttl = 30 * 24h}).status(),
                        absl::StatusCode::kInvalidArgument, "ttl"));
  } else {
    EXPECT_TRUE(IsError(LeaseLock::create(backend_, {.ttl = 1s}).status(),
                        absl::StatusCode::kUnimplemented, "ttl"));
    EXPECT_TRUE(
        IsError(LeaseLock::create(backend_, {.auto_renew = true}).status(),
                absl::StatusCode::kUnimplemented, "auto-renew"));
  }
  if (!backend_->capabilities().survives_failover) {
    EXPECT_TRUE(IsError(
        LeaseLock::create(backend_, {.require_failover_safety = true}).status(),
        absl::StatusCode::kUnimplemented, "failover"));
  }
  if (!backend_->capabilities().metadata) {
    EXPECT_TRUE(IsError(LeaseLock::create(backend_, {.metadata = "m"}).status(),
                        absl::StatusCode::kUnimplemented, "metadata"));
  }
}

TEST_P(LeaseConformanceTest, ThreadsContendingNeverHoldAtOnce) {
  LeaseLock locks = make_lock(backend_, {.ttl = 30s});
  std::atomic<int> inside{0};
  std::atomic<int> max_inside{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        absl::StatusOr<Lease> l = locks.acquire(key_, {.timeout = 20s});
        if (!l.ok()) {
          ++errors;
          continue;
        }
        const int now_inside = ++inside;
        int prev = max_inside.load();
        while (now_inside > prev &&
               !max_inside.compare_exchange_weak(prev, now_inside)) {
        }
        --inside;
        if (!l->release().ok()) ++errors;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(max_inside.load(), 1);
}

}  // namespace
}  // namespace tierlock::testing

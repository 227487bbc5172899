// tests/api/wait_hook_test.cc
//
// AcquireOptions::on_wait (tierlock/acquire_options.h): told once, after
// on_wait_after, that an acquire is still waiting and who holds the lock;
// never for an acquire granted or ended sooner, never for a try, never after
// the acquire has returned; blocking, async and acquire_all.
//
// The hooks of blocking acquires run on WorkerPool::global()'s timer thread:
// the fixture starts that pool and its timer before it counts threads.

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "tierlock/acquire_options.h"
#include "tierlock/dir_lock.h"
#include "tierlock/executor.h"
#include "tierlock/guard.h"

namespace {

using tierlock::AcquireOptions;
using tierlock::DirLock;
using tierlock::Guard;
using tierlock::Holder;
using tierlock::Mode;
using tierlock::WaitInfo;
using tierlock::WorkerPool;
using namespace tierlock::testing;  // NOLINT: test support vocabulary
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// What the hooks of one test were told, in order, from whichever thread.
class Calls {
 public:
  std::function<void(const WaitInfo&)> hook() {
    return [this](const WaitInfo& info) {
      std::lock_guard<std::mutex> lk(mu_);
      infos_.push_back(info);
      thread_ids_.push_back(std::this_thread::get_id());
    };
  }
  std::size_t count() const {
    std::lock_guard<std::mutex> lk(mu_);
    return infos_.size();
  }
  WaitInfo at(std::size_t i) const {
    std::lock_guard<std::mutex> lk(mu_);
    return infos_.at(i);
  }
  std::thread::id thread_at(std::size_t i) const {
    std::lock_guard<std::mutex> lk(mu_);
    return thread_ids_.at(i);
  }

 private:
  mutable std::mutex mu_;
  std::vector<WaitInfo> infos_;
  std::vector<std::thread::id> thread_ids_;
};

bool names_pid(const WaitInfo& info, pid_t pid) {
  if (!info.holders.ok()) return false;
  for (const Holder& h : *info.holders) {
    if (h.pid == pid) return true;
  }
  return false;
}

// A hook armed after every earlier one, with an earlier or equal fire time,
// that fires: the timer thread runs timers in time order, so once it has
// run, an earlier hook that was going to run has run too. Lets a test show
// that a hook was never called without sleeping for "long enough".
void flush_global_timers(const std::filesystem::path& dir) {
  Process holder = start_holder(dir);
  ASSERT_EQ(holder.read_line(), "locked");
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir));
  std::atomic<bool> told{false};
  AcquireOptions o;
  o.timeout = 60s;
  std::stop_source stop;
  o.stop = stop.get_token();
  o.on_wait = [&](const WaitInfo&) {
    told = true;
    stop.request_stop();
  };
  EXPECT_EQ(lock.acquire(std::move(o)).status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_TRUE(told);
  stop_holder(holder);
}

class WaitHookTest : public TierlockTest {
 protected:
  void SetUp() override {
    // The global pool and its timer thread live for the rest of the process:
    // start both now, with a hooked acquire that waits (it always sets a
    // timer; an async acquire with a short timeout may time out before it
    // queues, under a sanitizer, and set none).
    {
      TempDir warm;
      flush_global_timers(warm.path());
    }
    TierlockTest::SetUp();
  }
};

TEST_F(WaitHookTest, ToldOnceWithTheHolderWhenTheAcquireWaitsPastTheDelay) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Calls calls;
  const auto start = Clock::now();
  std::future<absl::StatusOr<Guard>> got = std::async(std::launch::async, [&] {
    AcquireOptions o;
    o.on_wait = calls.hook();
    o.on_wait_after = 50ms;
    return lock.acquire(std::move(o));
  });
  ASSERT_TRUE(wait_until([&] { return calls.count() == 1; }));
  EXPECT_EQ(got.wait_for(0s), std::future_status::timeout)
      << "told while it still waits";
  stop_holder(holder);
  ASSERT_OK_AND_ASSIGN(Guard guard, got.get());
  EXPECT_TRUE(guard.held());
  ASSERT_EQ(calls.count(), 1U);
  const WaitInfo info = calls.at(0);
  EXPECT_EQ(info.lock, lock.lock_file().string());
  EXPECT_EQ(info.mode, Mode::kExclusive);
  EXPECT_GE(info.waited, 50ms);
  EXPECT_LE(info.waited, Clock::now() - start);
  ASSERT_TRUE(info.holders.ok()) << info.holders.status();
  EXPECT_TRUE(names_pid(info, holder.pid()))
      << "the holders named are not the helper " << holder.pid();
  EXPECT_NE(calls.thread_at(0), std::this_thread::get_id());
}

TEST_F(WaitHookTest, SharedAcquireIsToldItsModeAndTheExclusiveHolder) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Calls calls;
  std::future<absl::StatusOr<Guard>> got = std::async(std::launch::async, [&] {
    AcquireOptions o;
    o.mode = Mode::kShared;
    o.on_wait = calls.hook();
    return lock.acquire(std::move(o));
  });
  ASSERT_TRUE(wait_until([&] { return calls.count() == 1; }));
  stop_holder(holder);
  EXPECT_OK(got.get());
  const WaitInfo info = calls.at(0);
  EXPECT_EQ(info.mode, Mode::kShared);
  ASSERT_TRUE(info.holders.ok());
  ASSERT_FALSE(info.holders->empty());
  EXPECT_EQ(info.holders->front().mode, Mode::kExclusive);
}

TEST_F(WaitHookTest, NeverToldForAnUncontendedAcquireATryOrAnEarlyGrant) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Calls calls;
  {
    AcquireOptions o;
    o.on_wait = calls.hook();  // fires at once if the acquire has to wait
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire(std::move(o)));
  }
  {
    Process holder = start_holder(dir());
    ASSERT_EQ(holder.read_line(), "locked");
    AcquireOptions o;
    o.timeout = 0s;  // a try never waits
    o.on_wait = calls.hook();
    EXPECT_EQ(lock.acquire(std::move(o)).status().code(),
              absl::StatusCode::kDeadlineExceeded);
    // Timed out before the delay.
    AcquireOptions timed;
    timed.timeout = 30ms;
    timed.on_wait = calls.hook();
    timed.on_wait_after = 10min;
    EXPECT_EQ(lock.acquire(std::move(timed)).status().code(),
              absl::StatusCode::kDeadlineExceeded);
    stop_holder(holder);
  }
  {
    // Granted before the delay: another thread of this process holds it
    // briefly.
    std::promise<void> taken;
    std::thread releaser([&] {
      absl::StatusOr<Guard> held = lock.acquire();
      EXPECT_OK(held);
      taken.set_value();
      std::this_thread::sleep_for(20ms);  // pacing: the acquire below waits
    });
    taken.get_future().wait();
    AcquireOptions o;
    o.on_wait = calls.hook();
    o.on_wait_after = 10min;
    EXPECT_OK(lock.acquire(std::move(o)));
    releaser.join();
  }
  TempDir other;
  flush_global_timers(other.path());
  EXPECT_EQ(calls.count(), 0U);
}

TEST_F(WaitHookTest, TheAcquireDoesNotReturnWhileItsHookRuns) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::mutex mu;
  std::condition_variable cv;
  bool hook_entered = false;
  bool let_hook_return = false;
  std::atomic<bool> hook_returned{false};
  std::atomic<bool> returned_after_hook{false};
  std::thread acquirer([&] {
    AcquireOptions o;
    o.on_wait = [&](const WaitInfo&) {
      std::unique_lock<std::mutex> lk(mu);
      hook_entered = true;
      cv.notify_all();
      cv.wait(lk, [&] { return let_hook_return; });
      hook_returned = true;
    };
    absl::StatusOr<Guard> g = lock.acquire(std::move(o));
    returned_after_hook = hook_returned.load();
    EXPECT_OK(g);
  });
  {
    std::unique_lock<std::mutex> lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, kTimeout, [&] { return hook_entered; }));
  }
  // The grant arrives while the hook runs: the acquire takes the lock (the
  // helper can exit), but must not return before the hook has.
  stop_holder(holder);
  ASSERT_TRUE(wait_until([&] { return try_in_other_process(dir()) == kBusy; }))
      << "the waiting acquire never took the lock";
  {
    std::lock_guard<std::mutex> lk(mu);
    let_hook_return = true;
  }
  cv.notify_all();
  acquirer.join();
  EXPECT_TRUE(returned_after_hook);
}

TEST_F(WaitHookTest, ACancelledAcquireIsToldFirstAndHoldsNothing) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::stop_source stop;
  Calls calls;
  AcquireOptions o;
  o.stop = stop.get_token();
  o.on_wait = [&](const WaitInfo& info) {
    calls.hook()(info);
    stop.request_stop();  // like a user pressing ^C on "waiting for ..."
  };
  EXPECT_EQ(lock.acquire(std::move(o)).status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(calls.count(), 1U);
  stop_holder(holder);
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(WaitHookTest, AsyncAcquireIsToldBeforeItCompletes) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Calls calls;
  std::atomic<std::size_t> told_at_completion{99};
  std::promise<absl::StatusOr<Guard>> done;
  {
    WorkerPool pool(1);
    AcquireOptions o;
    o.pool = &pool;
    o.on_wait = calls.hook();
    o.on_wait_after = 20ms;
    lock.acquire_async(std::move(o), [&](absl::StatusOr<Guard> g) {
      told_at_completion = calls.count();
      done.set_value(std::move(g));
    });
    ASSERT_TRUE(wait_until([&] { return calls.count() == 1; }));
    stop_holder(holder);
    std::future<absl::StatusOr<Guard>> f = done.get_future();
    ASSERT_EQ(f.wait_for(kTimeout), std::future_status::ready);
    EXPECT_OK(f.get());
  }
  EXPECT_EQ(told_at_completion, 1U);
  EXPECT_TRUE(names_pid(calls.at(0), holder.pid()));
}

TEST_F(WaitHookTest, AsyncAcquireGrantedSoonerIsNeverTold) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Calls calls;
  WorkerPool pool(1);
  {
    AcquireOptions o;
    o.pool = &pool;
    o.on_wait = calls.hook();
    ASSERT_OK(lock.acquire_async(std::move(o)).get());  // uncontended
  }
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  AcquireOptions o;
  o.pool = &pool;
  o.timeout = 20ms;
  o.on_wait = calls.hook();
  o.on_wait_after = 10min;
  EXPECT_EQ(lock.acquire_async(std::move(o)).get().status().code(),
            absl::StatusCode::kDeadlineExceeded);
  stop_holder(holder);
  EXPECT_EQ(calls.count(), 0U);
}

TEST_F(WaitHookTest, AcquireAllIsToldOnceAboutTheLockItWaitsFor) {
  TempDir second;
  ASSERT_OK_AND_ASSIGN(DirLock a, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(DirLock b, DirLock::open(second.path()));
  Process holder = start_holder(second.path());
  ASSERT_EQ(holder.read_line(), "locked");
  Calls calls;
  std::vector<DirLock> locks = {a, b};
  std::future<absl::StatusOr<std::vector<Guard>>> got =
      std::async(std::launch::async, [&] {
        AcquireOptions o;
        o.on_wait = calls.hook();
        return tierlock::acquire_all(locks, std::move(o));
      });
  ASSERT_TRUE(wait_until([&] { return calls.count() == 1; }));
  stop_holder(holder);
  EXPECT_OK(got.get());
  EXPECT_EQ(calls.count(), 1U);
  const WaitInfo info = calls.at(0);
  EXPECT_EQ(info.lock, b.lock_file().string());
  EXPECT_TRUE(names_pid(info, holder.pid()));
}

TEST_F(WaitHookTest, BlockingAcquireStillRefusesAPool) {
  // The hook's timer thread is the global pool's; a pool stays async-only.
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  WorkerPool pool(1);
  AcquireOptions o;
  o.pool = &pool;
  o.on_wait = [](const WaitInfo&) {};
  EXPECT_EQ(lock.acquire(std::move(o)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace

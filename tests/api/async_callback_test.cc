// tests/api/async_callback_test.cc
//
// Asynchronous acquires (DirLock::acquire_async), callback and future forms:
// FIFO completion under the lock, in one process and across three; user
// executors; dropped futures and dropped completions releasing their lock.
// (tests/api/async_pool_test.cc: the WorkerPool; async_cancel_test.cc:
// cancellation and timeouts.)
//
// Every test passes its own WorkerPool (AcquireOptions::pool) except
// AsyncGlobalPoolTest, so the fixture's thread count stays meaningful.

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "gtest/gtest.h"
#include "support/acquire_checks.h"
#include "support/async_completions.h"
#include "support/counter.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/internal.h"
#include "support/proc_locks.h"
#include "support/rendezvous.h"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/sys_counter.h"
#include "support/threads.h"
#include "support/wait.h"
#include "tierlock/acquire_options.h"
#include "tierlock/dir_lock.h"
#include "tierlock/executor.h"
#include "tierlock/guard.h"
#include "tierlock/registry.h"

namespace {

using tierlock::AcquireOptions;
using tierlock::DirLock;
using tierlock::Executor;
using tierlock::Guard;
using tierlock::LockOptions;
using tierlock::Mode;
using tierlock::WorkerPool;
using tierlock::internal::LockEntry;
using namespace tierlock::testing;  // NOLINT: test support vocabulary
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class AsyncAcquireTest : public TierlockTest {};
class AsyncCrossProcessTest : public TierlockTest {};

// Uses WorkerPool::global(), which is started once and never destroyed: start
// it before the fixture counts this process's threads.
class AsyncGlobalPoolTest : public TierlockTest {
 protected:
  void SetUp() override {
    (void)WorkerPool::global();
    TierlockTest::SetUp();
  }
};

// Runs tasks on one thread of its own, in order; drains and joins on
// destruction.
class ThreadExecutor final : public Executor {
 public:
  ThreadExecutor() : thread_([this] { run(); }) {}
  ~ThreadExecutor() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      closed_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void execute(absl::AnyInvocable<void() &&> task) override {
    std::lock_guard<std::mutex> l(mu_);
    tasks_.push_back(std::move(task));
    cv_.notify_one();
  }
  std::thread::id id() const { return thread_.get_id(); }

 private:
  void run() {
    for (;;) {
      absl::AnyInvocable<void() &&> task;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return closed_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      std::move(task)();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<absl::AnyInvocable<void() &&>> tasks_;
  bool closed_ = false;
  std::thread thread_;  // last: starts once the rest is constructed
};

// An executor that is shutting down: destroys every task without running it.
class DroppingExecutor final : public Executor {
 public:
  void execute(absl::AnyInvocable<void() &&> task) override {
    { auto dropped = std::move(task); }
    dropped_.fetch_add(1);
  }
  int dropped() const { return dropped_.load(); }

 private:
  std::atomic<int> dropped_{0};
};

// ------------------------------------------------------------ FIFO, counting

TEST_F(AsyncAcquireTest, ThousandCallbacksCompleteInFifoOrderUnderTheLock) {
  constexpr int kWaiters = 1'000;
  Completions done;
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  ASSERT_OK_AND_ASSIGN(Guard held, lock.acquire());

  for (int i = 0; i < kWaiters; ++i)
    lock.acquire_async(on(pool), done.callback(i));
  // All of them queue (the lock is held), in submission order.
  EXPECT_EQ(entry->waiting(), static_cast<std::size_t>(kWaiters));
  EXPECT_EQ(done.count(), 0u);
  // Waiting in-process costs no kernel wait.
  EXPECT_EQ(count_waiters_by(locks_on(lock.lock_file()), ::getpid()), 0);

  ASSERT_OK(held.release());
  ASSERT_TRUE(done.wait_for(kWaiters)) << done.count() << " completions ran";
  EXPECT_EQ(done.counter(), kWaiters);
  EXPECT_EQ(done.grant_order(), iota(0, kWaiters));
  EXPECT_EQ(done.overlaps(), 0);
  EXPECT_TRUE(done.errors().empty());
  for (const auto& o : done.outcomes()) {
    EXPECT_OK(o.status);
    EXPECT_NE(o.thread, std::this_thread::get_id())
        << "a completion ran inline";
  }
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AsyncCrossProcessTest,
       ThreeProcessesOfThousandAsyncIncrementsCountExactly) {
  constexpr int kProcesses = 3;
  constexpr int kEach = 1'000;
  std::vector<Process> workers;
  for (int i = 0; i < kProcesses; ++i) {
    workers.push_back(
        Process::spawn({helper_path(), "async-count", dir().string(),
                        std::to_string(kEach), "2"}));
  }
  for (Process& w : workers) ASSERT_EQ(w.read_line(), "ready");
  for (Process& w : workers) ASSERT_TRUE(w.write_line("go"));
  for (Process& w : workers) {
    EXPECT_EQ(w.read_line(std::chrono::seconds(120)),
              "done " + std::to_string(kEach));
    ExitStatus st = w.wait(std::chrono::seconds(120));
    EXPECT_EQ(st.code, 0) << "worker " << w.pid() << ": " << st.describe();
  }
  EXPECT_EQ(read_counter(dir() / "counter"), kProcesses * kEach);
  EXPECT_TRUE(locks_on(dir() / ".lock").empty())
      << describe(locks_on(dir() / ".lock"));
}

// ------------------------------------------------------- futures, executors

TEST_F(AsyncAcquireTest, FutureFormReturnsTheGuard) {
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  {
    std::future<absl::StatusOr<Guard>> f = lock.acquire_async(on(pool));
    ASSERT_EQ(f.wait_for(kTimeout), std::future_status::ready);
    absl::StatusOr<Guard> g = f.get();
    ASSERT_OK(g);
    EXPECT_TRUE(g->held());
    EXPECT_EQ(g->mode(), Mode::kExclusive);
    EXPECT_EQ(try_in_other_process(dir()), kBusy);
  }
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);

  std::future<absl::StatusOr<Guard>> queued;  // before the hold
  ASSERT_OK_AND_ASSIGN(Guard held, lock.acquire());
  queued = lock.acquire_async(on(pool, Mode::kShared));
  EXPECT_EQ(queued.wait_for(0s), std::future_status::timeout);
  ASSERT_OK(held.release());
  ASSERT_EQ(queued.wait_for(kTimeout), std::future_status::ready);
  absl::StatusOr<Guard> g = queued.get();
  ASSERT_OK(g);
  EXPECT_EQ(g->mode(), Mode::kShared);
  EXPECT_EQ(try_in_other_process(dir(), Mode::kShared), kAcquired);
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
}

TEST_F(AsyncGlobalPoolTest, DefaultOptionsWaitOnTheGlobalPool) {
  const std::size_t entries_before = tierlock::Registry::global().size();
  {
    ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
    {
      absl::StatusOr<Guard> g = lock.acquire_async().get();
      ASSERT_OK(g);
      EXPECT_EQ(try_in_other_process(dir()), kBusy);
    }
    Completions done;
    std::optional<Guard> held;
    {
      ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
      held = std::move(g);
    }
    lock.acquire_async({}, done.callback(1));
    EXPECT_EQ(done.count(), 0u);
    ASSERT_OK(held->release());
    ASSERT_TRUE(done.wait_for(1));
    EXPECT_OK(done.outcome(1).status);
    EXPECT_NE(done.outcome(1).thread, std::this_thread::get_id());
    EXPECT_TRUE(HoldsNothing(lock));
  }
  // The global pool outlives the test: after a callback has signalled, its
  // thread may still be finishing the completion task, which owns a
  // reference to the registry entry. Wait for it to let go.
  EXPECT_TRUE(wait_until(
      [&] { return tierlock::Registry::global().size() == entries_before; },
      5'000ms));
}

TEST_F(AsyncAcquireTest, DroppedFutureReleasesTheLockGrantedLater) {
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  ASSERT_OK_AND_ASSIGN(Guard held, lock.acquire());
  { (void)lock.acquire_async(on(pool)); }  // dropped before the grant
  EXPECT_EQ(entry->waiting(), 1u);
  ASSERT_OK(held.release());
  EXPECT_TRUE(wait_until([&] { return try_in_other_thread(lock) == kAcquired; },
                         5'000ms))
      << "the grant of a dropped future was never released";
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AsyncAcquireTest, DroppedFutureReleasesTheLockAfterAKernelWait) {
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  { (void)lock.acquire_async(on(pool)); }  // dropped before the grant
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  EXPECT_EQ(stop_holder(holder).code, 0);
  // The pool takes the lock for the dropped future, then releases it.
  EXPECT_TRUE(wait_until(
      [&] {
        return entry->waiting() == 0 && entry->holders() == 0 &&
               !entry->kernel_held();
      },
      5'000ms))
      << "waiting " << entry->waiting() << ", holders " << entry->holders();
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
  EXPECT_TRUE(HoldsNothing(lock));
}

TEST_F(AsyncAcquireTest, UserExecutorRunsTheCompletions) {
  constexpr int kQueued = 20;
  Completions done;
  ThreadExecutor executor;
  WorkerPool pool(1);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  auto with_executor = [&] {
    AcquireOptions o = on(pool);
    o.executor = &executor;
    return o;
  };
  // Granted at once.
  lock.acquire_async(with_executor(), done.callback(0));
  ASSERT_TRUE(done.wait_for(1));
  EXPECT_OK(done.outcome(0).status);
  EXPECT_EQ(done.outcome(0).thread, executor.id());

  // Queued, then granted one by one in order.
  std::optional<Guard> held;
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    held = std::move(g);
  }
  for (int i = 1; i <= kQueued; ++i) {
    lock.acquire_async(with_executor(), done.callback(i));
  }
  ASSERT_OK(held->release());
  ASSERT_TRUE(done.wait_for(kQueued + 1));
  EXPECT_EQ(done.grant_order(), iota(0, kQueued + 1));
  for (const auto& o : done.outcomes()) {
    EXPECT_OK(o.status);
    EXPECT_EQ(o.thread, executor.id()) << "completion " << o.id;
  }
  EXPECT_TRUE(HoldsNothing(lock));
}

TEST_F(AsyncAcquireTest, ExecutorThatDropsTheCompletionReleasesTheLock) {
  DroppingExecutor executor;
  WorkerPool pool(1);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::atomic<int> ran{0};
  auto with_executor = [&] {
    AcquireOptions o = on(pool);
    o.executor = &executor;
    return o;
  };
  // Granted at once; the completion carrying the Guard is dropped.
  lock.acquire_async(with_executor(), [&](absl::StatusOr<Guard>) { ++ran; });
  ASSERT_TRUE(wait_until([&] { return executor.dropped() == 1; }));
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);

  // Queued first, granted on release, dropped.
  std::optional<Guard> held;
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    held = std::move(g);
  }
  lock.acquire_async(with_executor(), [&](absl::StatusOr<Guard>) { ++ran; });
  ASSERT_OK(held->release());
  ASSERT_TRUE(wait_until([&] { return executor.dropped() == 2; }));
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_thread(lock), kAcquired);
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
  EXPECT_EQ(ran.load(), 0);
}

}  // namespace

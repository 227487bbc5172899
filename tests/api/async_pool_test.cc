// tests/api/async_pool_test.cc
//
// The WorkerPool asynchronous acquires wait on: behaviour swept over pool
// sizes 0, 1, 2, 4 and 8 (FIFO completion, one kernel-waiting thread however
// many async waiters queue, timeouts and cancels), and a pool destroyed with
// waits in flight.
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

class AsyncWorkerPoolTest : public TierlockTest {};
class AsyncPoolSizeTest : public TierlockTest,
                          public ::testing::WithParamInterface<std::size_t> {};

// ---------------------------------------------------------------- pool sizes

TEST_P(AsyncPoolSizeTest, CompletesInFifoOrderBehindAnotherProcess) {
  constexpr int kWaiters = 200;
  Completions done;
  WorkerPool pool(GetParam());
  EXPECT_EQ(pool.size(), GetParam());
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");

  for (int i = 0; i < kWaiters; ++i)
    lock.acquire_async(on(pool), done.callback(i));
  EXPECT_EQ(entry->waiting(), static_cast<std::size_t>(kWaiters));
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  EXPECT_LE(threads_in_flock().size(), 1u) << describe_threads(read_threads());
  EXPECT_EQ(done.count(), 0u);

  EXPECT_EQ(stop_holder(holder).code, 0);
  ASSERT_TRUE(done.wait_for(kWaiters)) << done.count() << " completions ran";
  EXPECT_EQ(done.counter(), kWaiters);
  EXPECT_EQ(done.grant_order(), iota(0, kWaiters));
  EXPECT_EQ(done.overlaps(), 0);
  EXPECT_TRUE(done.errors().empty());
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_P(AsyncPoolSizeTest, OneKernelWaitingThreadForFiftyWaiters) {
  constexpr int kWaiters = 50;
  std::promise<void> marker;  // before the pool: it may run until the pool goes
  Completions done;
  WorkerPool pool(GetParam());
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  const int threads_before = count_threads();

  for (int i = 0; i < kWaiters; ++i)
    lock.acquire_async(on(pool), done.callback(i));
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  if (GetParam() >= 2) {
    // Tasks run in submission order: once a task posted after the waiters
    // runs, every task they posted has started. If each waiter had taken a
    // pool thread into flock, none would be left to run it.
    pool.execute([&marker] { marker.set_value(); });
    EXPECT_EQ(marker.get_future().wait_for(kIntoKernel),
              std::future_status::ready)
        << "no pool thread is free: async waiters are occupying pool threads";
  }
  const std::vector<ThreadState> in_flock = threads_in_flock();
  EXPECT_LE(in_flock.size(), 1u) << describe_threads(in_flock);
  EXPECT_LE(count_waiters_by(locks_on(lock.lock_file()), ::getpid()), 1);
  EXPECT_LE(count_threads(), threads_before + 1)
      << "async waiters cost threads:\n"
      << describe_threads(read_threads());
  EXPECT_EQ(entry->waiting(), static_cast<std::size_t>(kWaiters));

  EXPECT_EQ(stop_holder(holder).code, 0);
  ASSERT_TRUE(done.wait_for(kWaiters)) << done.count() << " completions ran";
  EXPECT_EQ(done.grant_order(), iota(0, kWaiters));
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_P(AsyncPoolSizeTest, TimesOutWhileAnotherProcessHolds) {
  Completions done;
  WorkerPool pool(GetParam());
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");

  AcquireOptions options = on(pool);
  options.timeout = 50ms;
  const auto start = Clock::now();
  lock.acquire_async(std::move(options), done.callback(1));
  ASSERT_TRUE(done.wait_for(1));
  Completions::Outcome o = done.outcome(1);
  EXPECT_TRUE(IsError(o.status, absl::StatusCode::kDeadlineExceeded,
                      lock.lock_file().string(), pid_text(holder.pid())));
  EXPECT_GE(o.at - start, 50ms);
  EXPECT_LT(o.at - start, 5s);
  EXPECT_TRUE(HoldsNothing(lock));
  ReleaseAndOthersGetIt(lock, holder);
}

TEST_P(AsyncPoolSizeTest, CancelWhileAnotherProcessHolds) {
  Completions done;
  WorkerPool pool(GetParam());
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");

  std::stop_source stop;
  AcquireOptions options = on(pool);
  options.stop = stop.get_token();
  lock.acquire_async(std::move(options), done.callback(1));
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  stop.request_stop();
  ASSERT_TRUE(done.wait_for(1, 5'000ms)) << "cancel did not end the async wait";
  EXPECT_TRUE(IsError(done.outcome(1).status, absl::StatusCode::kCancelled,
                      lock.lock_file().string(), "held by another process"));
  EXPECT_TRUE(HoldsNothing(lock));
  ReleaseAndOthersGetIt(lock, holder);
}

TEST_P(AsyncPoolSizeTest,
       DestructorWithWaitsInFlightIsPromptAndLeavesNothingHeld) {
  constexpr int kEach = 5;
  Completions done;  // outlives the pool: completions may run until it goes
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  LockOptions other_options;
  other_options.lock_file_name = "other.lock";
  ASSERT_OK_AND_ASSIGN(DirLock other, DirLock::open(dir(), other_options));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  std::shared_ptr<LockEntry> other_entry = entry_of(other);
  ASSERT_NE(entry, nullptr);
  ASSERT_NE(other_entry, nullptr);
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  ASSERT_OK_AND_ASSIGN(Guard other_held, other.acquire());

  auto pool = std::make_unique<WorkerPool>(GetParam());
  // On `lock`: one leads, blocked in the kernel; the rest queue in-process.
  for (int i = 0; i < kEach; ++i)
    lock.acquire_async(on(*pool), done.callback(i));
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  // On `other`: all queue in-process behind this thread's hold.
  for (int i = 0; i < kEach; ++i) {
    other.acquire_async(on(*pool), done.callback(100 + i));
  }
  EXPECT_EQ(entry->waiting(), static_cast<std::size_t>(kEach));
  EXPECT_EQ(other_entry->waiting(), static_cast<std::size_t>(kEach));

  const auto start = Clock::now();
  pool.reset();
  EXPECT_LT(Clock::now() - start, 5s) << "the pool's destructor hung";

  // Callbacks either ran (cancelled: both locks stayed held by others) or not.
  const std::size_t ran = done.count();
  EXPECT_LE(ran, 2u * kEach);
  for (const auto& o : done.outcomes()) {
    EXPECT_EQ(o.status.code(), absl::StatusCode::kCancelled)
        << "waiter " << o.id << ": " << o.status;
  }
  EXPECT_EQ(entry->waiting(), 0u);
  EXPECT_EQ(other_entry->waiting(), 0u);
  EXPECT_TRUE(HoldsNothing(lock));
  // `other` is held by this thread only.
  EXPECT_EQ(other_entry->holders(), 1u);
  std::vector<ProcLock> entries = locks_on(other.lock_file());
  EXPECT_EQ(count_holders_by(entries, ::getpid()), 1) << describe(entries);
  EXPECT_EQ(count_waiters(entries), 0) << describe(entries);
  ASSERT_OK(other_held.release());
  EXPECT_TRUE(HoldsNothing(other));
  EXPECT_EQ(try_in_other_process(dir(), Mode::kExclusive, "other.lock"),
            kAcquired);

  ReleaseAndOthersGetIt(lock, holder);
  EXPECT_EQ(done.count(), ran)
      << "a completion ran after the pool was destroyed";
}

INSTANTIATE_TEST_SUITE_P(Sizes, AsyncPoolSizeTest,
                         ::testing::Values(std::size_t{0}, std::size_t{1},
                                           std::size_t{2}, std::size_t{4},
                                           std::size_t{8}),
                         [](const ::testing::TestParamInfo<std::size_t>& p) {
                           return "Threads" + std::to_string(p.param);
                         });

// ---------------------------------------------------------- pool lifetime

TEST_F(AsyncWorkerPoolTest,
       DestroyedPoolReleasesAGrantWhoseCompletionNeverRan) {
  // One pool thread, busy in the kernel for `lock`; `free_lock` is granted
  // at once but its completion queues behind that wait. Destroying the pool
  // drops the completion: the grant it carried must be released.
  Completions done;
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  LockOptions free_options;
  free_options.lock_file_name = "free.lock";
  ASSERT_OK_AND_ASSIGN(DirLock free_lock, DirLock::open(dir(), free_options));
  std::shared_ptr<LockEntry> free_entry = entry_of(free_lock);
  ASSERT_NE(free_entry, nullptr);
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");

  auto pool = std::make_unique<WorkerPool>(1);
  lock.acquire_async(on(*pool), done.callback(1));
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  free_lock.acquire_async(on(*pool), done.callback(2));
  EXPECT_EQ(free_entry->holders(), 1u) << "granted, its completion pending";
  EXPECT_EQ(try_in_other_process(dir(), Mode::kExclusive, "free.lock"), kBusy);
  EXPECT_EQ(done.count(), 0u);

  const auto start = Clock::now();
  pool.reset();
  EXPECT_LT(Clock::now() - start, 5s) << "the pool's destructor hung";
  EXPECT_TRUE(HoldsNothing(free_lock));
  EXPECT_EQ(try_in_other_process(dir(), Mode::kExclusive, "free.lock"),
            kAcquired);
  EXPECT_TRUE(HoldsNothing(lock));
  ReleaseAndOthersGetIt(lock, holder);
  for (const auto& o : done.outcomes()) {
    if (o.id == 1) {
      EXPECT_EQ(o.status.code(), absl::StatusCode::kCancelled) << o.status;
    }
  }
}

TEST_F(AsyncWorkerPoolTest, PoolDestroyedRightAfterSubmitCompletesAtMostOnce) {
  // The pool goes while its first task -- the leader's kernel wait -- may be
  // starting. No completion may run twice, nothing may hang or stay held.
  const int kRounds = scaled(200, 100);
  Completions done;
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  const int foreign = ::open(lock.lock_file().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(foreign, 0) << std::strerror(errno);
  ASSERT_EQ(::flock(foreign, LOCK_EX | LOCK_NB), 0) << std::strerror(errno);
  for (int i = 0; i < kRounds; ++i) {
    WorkerPool pool(static_cast<std::size_t>(i % 3));
    lock.acquire_async(on(pool), done.callback(i));
    if (i % 4 == 0) {
      ASSERT_TRUE(
          wait_until([&] { return !threads_in_flock().empty(); }, kIntoKernel))
          << "round " << i << ": the leader never blocked in flock";
    }
  }
  std::vector<int> seen(static_cast<std::size_t>(kRounds), 0);
  for (const auto& o : done.outcomes()) {
    ++seen[static_cast<std::size_t>(o.id)];
    EXPECT_EQ(o.status.code(), absl::StatusCode::kCancelled)
        << "round " << o.id;
  }
  for (int i = 0; i < kRounds; ++i) {
    EXPECT_LE(seen[static_cast<std::size_t>(i)], 1) << "round " << i;
  }
  ::close(foreign);
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}
}  // namespace

// tests/api/async_cancel_test.cc
//
// Asynchronous acquires that are cancelled or time out: while queued in
// process or leading the kernel wait, a stop racing the grant
// (support/cancel_race.h, shared with tests/api/acquire_cancel_test.cc), and
// the waiters a timed-out one leaves behind.
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
#include "support/cancel_race.h"
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
class AsyncCancelRaceTest : public TierlockTest {};

// ------------------------------------------------------ cancel vs. grant race

TEST_F(AsyncCancelRaceTest,
       CancelRacingWithInProcessGrantHasExactlyOneOutcome) {
  const int kRounds = scaled(2'000, 500);
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  std::optional<Guard> held;
  race_cancel_against_release(
      async_acquire(lock, pool), kRounds,
      [&](int) -> std::string {
        absl::StatusOr<std::optional<Guard>> g = lock.try_acquire();
        if (!g.ok()) return "try_acquire: " + g.status().ToString();
        if (!g->has_value()) {
          return "try_acquire found the lock held after the previous round";
        }
        held = std::move(**g);
        return "";
      },
      [&](int) { return entry->waiting() == 1; },
      [&](int) -> std::string {
        absl::Status r = held->release();
        return r.ok() ? "" : "release: " + r.ToString();
      },
      [&](int, bool granted, const Guard& g) {
        return RaceOutcomeProblem(*entry, granted, g);
      });
  held.reset();
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AsyncCancelRaceTest, CancelRacingWithKernelGrantHasExactlyOneOutcome) {
  // The holder is another open file description of the lock file: the async
  // leader blocks in flock on a pool thread exactly as behind another
  // process. Odd rounds fire once it is in the kernel, even ones at once.
  const int kRounds = scaled(1'000, 300);
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  const int foreign = ::open(lock.lock_file().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(foreign, 0) << std::strerror(errno);
  const int probe = ::open(lock.lock_file().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(probe, 0) << std::strerror(errno);
  race_cancel_against_release(
      async_acquire(lock, pool), kRounds,
      [&](int) -> std::string {
        if (::flock(foreign, LOCK_EX | LOCK_NB) != 0) {
          return std::string("the lock is not free at the start of a round: ") +
                 std::strerror(errno) + "\n" +
                 describe(locks_on(lock.lock_file())) +
                 describe_threads(read_threads());
        }
        return "";
      },
      [&](int round) {
        if (round % 2 == 1) {
          return wait_for_locks(
              lock.lock_file(),
              [](const auto& e) { return count_waiters(e) == 1; }, kIntoKernel);
        }
        return true;
      },
      [&](int) -> std::string {
        return ::flock(foreign, LOCK_UN) == 0
                   ? ""
                   : std::string("LOCK_UN: ") + std::strerror(errno);
      },
      [&](int, bool granted, const Guard& g) {
        return RaceOutcomeProblem(*entry, granted, g, probe);
      });
  ::close(probe);
  ::close(foreign);
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AsyncCancelRaceTest, LeaderStoppedAsItStartsCompletesExactlyOnce) {
  // An async leader stopped just as its pool thread starts the kernel wait
  // (before it is inside flock): by a stop token (even rounds, 0-400 us after
  // the submit) or by its own short timeout (odd rounds, 50-540 us). Each
  // completion must run exactly once.
  const int kRounds = scaled(2'000, 500);
  Completions done;
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  const int foreign = ::open(lock.lock_file().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(foreign, 0) << std::strerror(errno);
  ASSERT_EQ(::flock(foreign, LOCK_EX | LOCK_NB), 0) << std::strerror(errno);
  for (int i = 0; i < kRounds; ++i) {
    std::stop_source stop;
    AcquireOptions o = on(pool);
    if (i % 2 == 0) {
      o.stop = stop.get_token();
    } else {
      o.timeout = std::chrono::microseconds(50 + 10 * (i % 50));
    }
    lock.acquire_async(std::move(o), done.callback(i));
    if (i % 2 == 0) {
      // Sweep the stop across the leader's start (0-400 us after the post).
      spin_for(std::chrono::microseconds(2 * ((i / 2) % 200)));
      stop.request_stop();
    }
    ASSERT_TRUE(done.wait_for(static_cast<std::size_t>(i) + 1))
        << "round " << i << ": no completion";
  }
  std::vector<int> seen(static_cast<std::size_t>(kRounds), 0);
  for (const auto& o : done.outcomes()) {
    ++seen[static_cast<std::size_t>(o.id)];
    EXPECT_FALSE(o.status.ok()) << "round " << o.id;
  }
  EXPECT_EQ(seen, std::vector<int>(static_cast<std::size_t>(kRounds), 1));
  ::close(foreign);
  EXPECT_TRUE(HoldsNothing(lock));
}

// ------------------------------------------------- cancellation, timeouts

TEST_F(AsyncAcquireTest, CancelWhileQueuedInProcess) {
  Completions done;
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  std::optional<Guard> held;
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    held = std::move(g);
  }
  std::stop_source stop;
  AcquireOptions cancellable = on(pool);
  cancellable.stop = stop.get_token();
  lock.acquire_async(std::move(cancellable), done.callback(1));
  lock.acquire_async(on(pool), done.callback(2));
  EXPECT_EQ(entry->waiting(), 2u);

  stop.request_stop();
  ASSERT_TRUE(done.wait_for(1, 5'000ms));
  EXPECT_TRUE(IsError(done.outcome(1).status, absl::StatusCode::kCancelled,
                      lock.lock_file().string(), "this process"));
  EXPECT_EQ(entry->waiting(), 1u);
  EXPECT_EQ(entry->holders(), 1u);

  ASSERT_OK(held->release());
  ASSERT_TRUE(done.wait_for(2));
  EXPECT_OK(done.outcome(2).status);
  EXPECT_EQ(done.grant_order(), std::vector<int>{2});
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AsyncAcquireTest, CancelledKernelLeaderHandsTheKernelWaitToTheNext) {
  Completions done;
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");

  std::stop_source stop;
  AcquireOptions cancellable = on(pool);
  cancellable.stop = stop.get_token();
  lock.acquire_async(std::move(cancellable), done.callback(1));
  EXPECT_TRUE(OurKernelWaiters(lock, 1));  // 1 leads, in flock
  lock.acquire_async(on(pool), done.callback(2));
  lock.acquire_async(on(pool), done.callback(3));
  EXPECT_EQ(entry->waiting(), 3u);

  stop.request_stop();
  ASSERT_TRUE(done.wait_for(1, 5'000ms));
  EXPECT_TRUE(IsError(done.outcome(1).status, absl::StatusCode::kCancelled,
                      lock.lock_file().string(), "held by another process"));
  EXPECT_EQ(entry->waiting(), 2u);
  // 2 took over the kernel wait: still exactly one thread of ours in flock.
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  EXPECT_LE(threads_in_flock().size(), 1u) << describe_threads(read_threads());
  EXPECT_EQ(done.count(), 1u);

  EXPECT_EQ(stop_holder(holder).code, 0);
  ASSERT_TRUE(done.wait_for(3));
  EXPECT_EQ(done.grant_order(), (std::vector<int>{2, 3}));
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AsyncAcquireTest, StopAlreadyRequestedIsCancelledWithoutSyscall) {
  Completions done;
  WorkerPool pool(1);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::stop_source stop;
  stop.request_stop();
  std::future<absl::StatusOr<Guard>> f;
  int syscalls = -1;
  {
    SyscallCounter sys;
    AcquireOptions a = on(pool);
    a.stop = stop.get_token();
    lock.acquire_async(std::move(a), done.callback(1));
    AcquireOptions b = on(pool, Mode::kShared);
    b.stop = stop.get_token();
    f = lock.acquire_async(std::move(b));
    EXPECT_TRUE(done.wait_for(1));
    EXPECT_EQ(f.wait_for(kTimeout), std::future_status::ready);
    syscalls = sys.total();
  }
  EXPECT_EQ(syscalls, 0);
  EXPECT_TRUE(IsError(done.outcome(1).status, absl::StatusCode::kCancelled,
                      lock.lock_file().string()));
  EXPECT_TRUE(IsError(f.get().status(), absl::StatusCode::kCancelled,
                      lock.lock_file().string()));
  EXPECT_TRUE(locks_on(lock.lock_file()).empty());
  EXPECT_TRUE(HoldsNothing(lock));
}

TEST_F(AsyncAcquireTest, TimesOutWhileQueuedInProcess) {
  Completions done;
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  std::optional<Guard> held;
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    held = std::move(g);
  }
  AcquireOptions timed = on(pool);
  timed.timeout = 50ms;
  const auto start = Clock::now();
  lock.acquire_async(std::move(timed), done.callback(1));
  ASSERT_TRUE(done.wait_for(1));
  Completions::Outcome o = done.outcome(1);
  EXPECT_TRUE(IsError(o.status, absl::StatusCode::kDeadlineExceeded,
                      lock.lock_file().string(), "this process"));
  EXPECT_GE(o.at - start, 50ms);
  EXPECT_LT(o.at - start, 5s);
  EXPECT_EQ(entry->waiting(), 0u);
  EXPECT_EQ(entry->holders(), 1u);
  ASSERT_OK(held->release());
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AsyncAcquireTest, SharedWaitersBehindATimedOutAsyncWriterAreGranted) {
  Completions readers(/*keep_guards=*/true);
  Completions writer;
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  ASSERT_OK_AND_ASSIGN(Guard reader, lock.acquire(Mode::kShared));

  AcquireOptions w = on(pool);
  w.timeout = 300ms;
  lock.acquire_async(std::move(w), writer.callback(1));
  for (int i = 0; i < 2; ++i) {
    AcquireOptions r = on(pool, Mode::kShared);
    r.timeout = kTimeout;
    lock.acquire_async(std::move(r), readers.callback(i));
  }
  EXPECT_EQ(entry->waiting(), 3u);
  ASSERT_EQ(writer.count(), 0u)
      << "the writer left before the readers queued; the test proves nothing";
  ASSERT_TRUE(writer.wait_for(1));
  EXPECT_TRUE(IsError(writer.outcome(1).status,
                      absl::StatusCode::kDeadlineExceeded,
                      lock.lock_file().string()));
  ASSERT_TRUE(readers.wait_for(2));
  for (const auto& o : readers.outcomes()) EXPECT_OK(o.status);
  EXPECT_EQ(entry->holders(), 3u);
  EXPECT_TRUE(reader.held());
  readers.release_kept();
  ASSERT_OK(reader.release());
  EXPECT_TRUE(HoldsNothing(lock));
}

}  // namespace

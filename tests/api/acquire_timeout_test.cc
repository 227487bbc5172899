// tests/api/acquire_timeout_test.cc
//
// Acquires that time out: AcquireOptions::timeout, acquire_for and the std
// TimedLockable members (tests/api/acquire_cancel_test.cc has the ones that
// are cancelled).
//
// The property every test here comes back to: after kDeadlineExceeded or
// kCancelled this process holds nothing for that waiter, will not take the
// lock later on its behalf, and leaves no thread parked in flock(2). The
// design tierlock replaces left a thread blocked in flock that took the lock
// when the other process let go; HoldsNothing() and ReleaseAndOthersGetIt()
// (support/acquire_checks.h) make that visible: no entry of ours in
// /proc/locks, no thread of ours in the flock syscall, and a third process
// gets the lock at once when the holder releases.
//
// Synchronisation is by pipes (tl_helper), /proc/locks and the queue length
// (LockEntry::waiting()), with bounded waits; never by sleeping.

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <future>
#include <iostream>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "support/acquire_checks.h"
#include "support/acquire_threads.h"
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
#include "tierlock/guard.h"

namespace {

using tierlock::AcquireOptions;
using tierlock::DirLock;
using tierlock::Guard;
using tierlock::Mode;
using tierlock::internal::LockEntry;
using namespace tierlock::testing;  // NOLINT: test support vocabulary
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class AcquireTimeoutTest : public TierlockTest {};
class AcquireTimedLockableTest : public TierlockTest {};

// ------------------------------------------------------------------ timeouts

TEST_F(AcquireTimeoutTest, AcquireForTimesOutAgainstAnotherProcessAndNamesIt) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");

  const auto start = Clock::now();
  absl::StatusOr<Guard> g = lock.acquire_for(50ms);
  const auto waited = Clock::now() - start;

  EXPECT_TRUE(IsError(g.status(), absl::StatusCode::kDeadlineExceeded,
                      lock.lock_file().string(), pid_text(holder.pid())));
  EXPECT_GE(waited, 50ms);
  EXPECT_LT(waited, 5s);
  EXPECT_TRUE(HoldsNothing(lock));
  ReleaseAndOthersGetIt(lock, holder);
}

TEST_F(AcquireTimeoutTest, SharedAcquireForTimesOutAgainstExclusiveProcess) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  const auto start = Clock::now();
  absl::StatusOr<Guard> g = lock.acquire_for(50ms, Mode::kShared);
  const auto waited = Clock::now() - start;
  EXPECT_TRUE(IsError(g.status(), absl::StatusCode::kDeadlineExceeded,
                      lock.lock_file().string(), pid_text(holder.pid())));
  EXPECT_GE(waited, 50ms);
  EXPECT_LT(waited, 5s);
  EXPECT_TRUE(HoldsNothing(lock));
  ReleaseAndOthersGetIt(lock, holder);
}

TEST_F(AcquireTimeoutTest, AcquireForTimesOutAgainstFlockTool) {
  if (flock_path().empty()) GTEST_SKIP() << "flock(1) (util-linux) not found";
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process tool =
      Process::spawn({flock_path(), "-x", lock.lock_file().string(), "cat"});
  std::string table;
  ASSERT_TRUE(wait_for_locks(
      lock.lock_file(),
      [&](const auto& e) { return count_holders_by(e, tool.pid()) == 1; },
      kTimeout, &table))
      << table;

  const auto start = Clock::now();
  absl::StatusOr<Guard> g = lock.acquire_for(50ms);
  const auto waited = Clock::now() - start;
  EXPECT_TRUE(IsError(g.status(), absl::StatusCode::kDeadlineExceeded,
                      lock.lock_file().string(), pid_text(tool.pid())));
  EXPECT_GE(waited, 50ms);
  EXPECT_LT(waited, 5s);
  EXPECT_TRUE(HoldsNothing(lock));

  tool.close_stdin();  // cat exits, flock(1) releases
  EXPECT_EQ(tool.wait().code, 0);
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
  EXPECT_TRUE(HoldsNothing(lock));
}

TEST_F(AcquireTimeoutTest, ZeroTimeoutIsOneNonBlockingTry) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");

  for (std::chrono::nanoseconds timeout :
       {std::chrono::nanoseconds(0), std::chrono::nanoseconds(-1ms)}) {
    SCOPED_TRACE("timeout " + std::to_string(timeout.count()) + "ns");
    for (Mode mode : {Mode::kExclusive, Mode::kShared}) {
      SCOPED_TRACE(std::string(tierlock::mode_name(mode)));
      Timed t;
      int flocks = 0;
      int blocking = 0;
      {
        SyscallCounter sys;
        t = timed_acquire(lock, with_timeout(timeout, mode));
        flocks = sys.flock_calls();
        blocking = sys.blocking_flock_calls();
      }
      EXPECT_TRUE(IsError(t.result.status(),
                          absl::StatusCode::kDeadlineExceeded,
                          lock.lock_file().string(), pid_text(holder.pid())));
      EXPECT_EQ(flocks, 1) << "a zero timeout must be exactly one try";
      EXPECT_EQ(blocking, 0) << "a zero timeout must never block in flock";
      EXPECT_LT(t.waited, 5s);
    }
  }
  // acquire_for(0) is the same single try.
  EXPECT_TRUE(IsError(lock.acquire_for(0ns).status(),
                      absl::StatusCode::kDeadlineExceeded,
                      lock.lock_file().string()));
  EXPECT_TRUE(HoldsNothing(lock));
  ReleaseAndOthersGetIt(lock, holder);

  // When the lock is free, the single try gets it.
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire(with_timeout(0ns)));
  EXPECT_TRUE(g.held());
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
}

TEST_F(AcquireTimeoutTest,
       TimesOutBehindAnotherThreadAndSaysThisProcessHoldsIt) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  std::future<Timed> waiter;  // declared before the hold: released first
  ASSERT_OK_AND_ASSIGN(Guard held, lock.acquire());

  for (Mode mode : {Mode::kExclusive, Mode::kShared}) {
    SCOPED_TRACE(std::string(tierlock::mode_name(mode)));
    waiter = acquire_in_thread(lock, with_timeout(50ms, mode));
    ASSERT_TRUE(ready(waiter));
    Timed t = waiter.get();
    EXPECT_TRUE(IsError(t.result.status(), absl::StatusCode::kDeadlineExceeded,
                        lock.lock_file().string(), "this process"));
    EXPECT_TRUE(IsError(t.result.status(), absl::StatusCode::kDeadlineExceeded,
                        pid_text(::getpid())));
    EXPECT_GE(t.waited, 50ms);
    EXPECT_LT(t.waited, 5s);
    EXPECT_EQ(entry->waiting(), 0u);
    EXPECT_EQ(entry->holders(), 1u);
  }
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
  ASSERT_OK(held.release());
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_thread(lock), kAcquired);
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AcquireTimeoutTest, OtherProcessTimingOutNamesThisProcessAsHolder) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard held, lock.acquire());
  RunResult r = run({helper_path(), "acquire-for", dir().string(), "50"});
  EXPECT_EQ(r.status.code, 1) << r.status.describe() << "\n" << r.out;
  EXPECT_EQ(r.out.rfind("deadline_exceeded: ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find(pid_text(::getpid())), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(lock.lock_file().string()), std::string::npos) << r.out;
}

TEST_F(AcquireTimeoutTest, FirstTimedWaitOfAProcessBlocksInFlock) {
  // A timed wait must block in flock (interruptibly), not poll LOCK_NB: a
  // poll costs up to a polling interval of handoff latency. tl_helper is a
  // fresh process, so this is its first timed kernel wait.
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::optional<Guard> held;
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    held = std::move(g);
  }
  Process waiter =
      Process::spawn({helper_path(), "acquire-for", dir().string(), "30000"});
  std::string table;
  EXPECT_TRUE(wait_for_locks(
      lock.lock_file(),
      [&](const auto& e) { return count_waiters_by(e, waiter.pid()) == 1; },
      kIntoKernel, &table))
      << "the first timed wait of process " << waiter.pid()
      << " is not blocked in flock (polling?); /proc/locks:\n"
      << table;
  ASSERT_OK(held->release());
  EXPECT_EQ(waiter.read_line(), "acquired");
  EXPECT_EQ(waiter.wait().code, 0);
}

// Deadlines of waits blocked in the kernel are kept by one process-wide
// thread: several at once, registered out of order, each ends at its own
// deadline (never before it), and a wait granted in time is never woken by a
// stale one.
TEST_F(AcquireTimeoutTest, StaggeredDeadlinesOnSeveralLocksEachEndAtTheirOwn) {
  constexpr int kLocks = 4;
  std::vector<TempDir> dirs(kLocks);
  std::vector<Process> holders;
  std::vector<DirLock> locks;
  for (int i = 0; i < kLocks; ++i) {
    holders.push_back(start_holder(dirs[static_cast<std::size_t>(i)].path()));
    ASSERT_EQ(holders.back().read_line(), "locked");
    ASSERT_OK_AND_ASSIGN(
        DirLock l, DirLock::open(dirs[static_cast<std::size_t>(i)].path()));
    locks.push_back(std::move(l));
  }
  // Registered latest-first, so each new one is the earliest.
  const std::vector<std::chrono::milliseconds> timeouts = {400ms, 300ms, 200ms,
                                                           100ms};
  std::vector<absl::StatusCode> codes(kLocks, absl::StatusCode::kOk);
  std::vector<Clock::duration> waited(kLocks);
  std::vector<std::thread> threads;
  for (int i = 0; i < kLocks; ++i) {
    threads.emplace_back([&, i] {
      const auto u = static_cast<std::size_t>(i);
      const auto start = Clock::now();
      absl::StatusOr<Guard> g = locks[u].acquire_for(timeouts[u]);
      waited[u] = Clock::now() - start;
      codes[u] = g.status().code();
    });
  }
  for (std::thread& t : threads) t.join();
  for (std::size_t i = 0; i < kLocks; ++i) {
    EXPECT_EQ(codes[i], absl::StatusCode::kDeadlineExceeded) << "lock " << i;
    EXPECT_GE(waited[i], timeouts[i]) << "lock " << i << " ended early";
    EXPECT_LT(waited[i], timeouts[i] + 5s) << "lock " << i;
    EXPECT_TRUE(HoldsNothing(locks[i]));
  }
  // A timed wait that is granted long before its deadline: no stray
  // interrupt later (this thread goes on sleeping and acquiring normally).
  std::thread releaser([&] {
    // Release once the waiter below is blocked in flock.
    EXPECT_TRUE(wait_for_locks(
        locks[0].lock_file(),
        [&](const auto& e) { return count_waiters_by(e, ::getpid()) == 1; },
        kIntoKernel));
    EXPECT_EQ(stop_holder(holders[0]).code, 0);
  });
  ASSERT_OK_AND_ASSIGN(Guard got, locks[0].acquire_for(30s));
  releaser.join();
  EXPECT_OK(got.release());
  for (std::size_t i = 1; i < kLocks; ++i)
    EXPECT_EQ(stop_holder(holders[i]).code, 0);
}

// A fork()ed child has no deadline thread of its parent's: its timed waits
// must still end at their deadline.
TEST_F(AcquireTimeoutTest, ForkedChildsTimedWaitEndsAtItsDeadline) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  const int threads_before = count_threads();
  // The parent's deadline thread exists now; it ends after 50 ms idle. Fork
  // once it has (a fork with other threads running is not what Process::fork
  // supports, and ThreadSanitizer refuses new threads after one).
  EXPECT_EQ(lock.acquire_for(20ms).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(wait_until([&] { return count_threads() <= threads_before; }, 5s))
      << "the deadline thread did not end when idle";
  const std::string path = dir().string();
  Process child = Process::fork([path](LineChannel& ch) -> int {
    absl::StatusOr<DirLock> l = DirLock::open(path);
    if (!l.ok()) return 2;
    const auto start = Clock::now();
    absl::StatusOr<Guard> g = l->acquire_for(100ms);
    const auto waited = Clock::now() - start;
    ch.write_line(std::to_string(static_cast<int>(g.status().code())));
    return waited >= 100ms && waited < 5s ? 0 : 3;
  });
  EXPECT_EQ(
      child.read_line(),
      std::to_string(static_cast<int>(absl::StatusCode::kDeadlineExceeded)));
  EXPECT_EQ(child.wait().code, 0);
  EXPECT_EQ(stop_holder(holder).code, 0);
}

// ------------------------------------------------------------ TimedLockable

TEST_F(AcquireTimedLockableTest, UniqueLockTryLockForAndUntil) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  {
    std::unique_lock<DirLock> ul(lock, std::defer_lock);
    EXPECT_TRUE(ul.try_lock_for(1s));
    EXPECT_TRUE(ul.owns_lock());
    EXPECT_EQ(try_in_other_process(dir()), kBusy);
    // Another thread times out against this process's hold.
    EXPECT_FALSE(std::async(std::launch::async, [&lock] {
                   return lock.try_lock_for(50ms);
                 }).get());
  }
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);

  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  {
    std::unique_lock<DirLock> ul(lock, std::defer_lock);
    auto start = Clock::now();
    EXPECT_FALSE(ul.try_lock_for(50ms));
    auto waited = Clock::now() - start;
    EXPECT_GE(waited, 50ms);
    EXPECT_LT(waited, 5s);

    start = Clock::now();
    EXPECT_FALSE(ul.try_lock_until(Clock::now() + 50ms));
    waited = Clock::now() - start;
    EXPECT_GE(waited, 50ms);
    EXPECT_LT(waited, 5s);

    // A system_clock deadline is converted through a difference of two
    // clock readings taken a few ns apart; allow that much.
    start = Clock::now();
    EXPECT_FALSE(ul.try_lock_until(std::chrono::system_clock::now() + 50ms));
    waited = Clock::now() - start;
    EXPECT_GE(waited, 49ms);
    EXPECT_LT(waited, 5s);

    // A deadline in the past is one try.
    start = Clock::now();
    EXPECT_FALSE(ul.try_lock_until(Clock::now() - 1s));
    EXPECT_LT(Clock::now() - start, 5s);
    EXPECT_FALSE(ul.owns_lock());
  }
  {
    std::unique_lock<DirLock> ul(lock, 50ms);  // calls try_lock_for
    EXPECT_FALSE(ul.owns_lock());
  }
  EXPECT_TRUE(HoldsNothing(lock));
  ReleaseAndOthersGetIt(lock, holder);

  {
    std::unique_lock<DirLock> ul(lock, std::defer_lock);
    EXPECT_TRUE(ul.try_lock_until(std::chrono::system_clock::now() + kTimeout));
    EXPECT_EQ(try_in_other_process(dir()), kBusy);
  }
  {
    std::unique_lock<DirLock> ul(lock, std::defer_lock);
    EXPECT_TRUE(
        ul.try_lock_until(Clock::now() - 1s));  // free: the one try wins
  }
  EXPECT_TRUE(HoldsNothing(lock));
}

TEST_F(AcquireTimedLockableTest, SharedLockTryLockSharedFor) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  {
    Process writer = start_holder(dir());
    ASSERT_EQ(writer.read_line(), "locked");
    std::shared_lock<DirLock> sl(lock, std::defer_lock);
    auto start = Clock::now();
    EXPECT_FALSE(sl.try_lock_for(50ms));  // calls try_lock_shared_for
    auto waited = Clock::now() - start;
    EXPECT_GE(waited, 50ms);
    EXPECT_LT(waited, 5s);
    start = Clock::now();
    EXPECT_FALSE(sl.try_lock_until(Clock::now() + 50ms));
    waited = Clock::now() - start;
    EXPECT_GE(waited, 50ms);
    EXPECT_LT(waited, 5s);
    EXPECT_FALSE(
        lock.try_lock_shared_until(std::chrono::system_clock::now() + 50ms));
    {
      std::shared_lock<DirLock> timed(lock, 50ms);
      EXPECT_FALSE(timed.owns_lock());
    }
    EXPECT_TRUE(HoldsNothing(lock));
    ReleaseAndOthersGetIt(lock, writer);
  }
  {
    Process reader = start_holder(dir(), Mode::kShared);
    ASSERT_EQ(reader.read_line(), "locked");
    {
      std::shared_lock<DirLock> sl(lock, std::defer_lock);
      EXPECT_TRUE(sl.try_lock_for(kTimeout));
      std::vector<ProcLock> entries = locks_on(lock.lock_file());
      EXPECT_EQ(count_holders_by(entries, ::getpid()), 1) << describe(entries);
      EXPECT_EQ(count_holders_by(entries, reader.pid()), 1)
          << describe(entries);
      EXPECT_EQ(try_in_other_process(dir(), Mode::kShared), kAcquired);
      EXPECT_EQ(try_in_other_process(dir()), kBusy);
      // The exclusive timed form from another thread times out against it.
      EXPECT_FALSE(std::async(std::launch::async, [&lock] {
                     return lock.try_lock_for(50ms);
                   }).get());
    }
    EXPECT_TRUE(HoldsNothing(lock));
    EXPECT_EQ(stop_holder(reader).code, 0);
  }
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

}  // namespace

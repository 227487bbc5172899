// tests/api/acquire_test.cc
//
// Acquires that can be stopped: timeouts (AcquireOptions::timeout, acquire_for,
// the std TimedLockable members) and cancellation (AcquireOptions::stop).
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
class AcquireCancelTest : public TierlockTest {};
class AcquireCancelRaceTest : public TierlockTest {};
class AcquireFairnessTest : public TierlockTest {};
class AcquireTimedLockableTest : public TierlockTest {};

// An acquire's result and how long it took.
struct Timed {
  absl::StatusOr<Guard> result;
  Clock::duration waited{};
};

Timed timed_acquire(DirLock& lock, AcquireOptions options) {
  const auto start = Clock::now();
  absl::StatusOr<Guard> r = lock.acquire(std::move(options));
  return Timed{std::move(r), Clock::now() - start};
}

// Runs lock.acquire(options) on a new thread.
std::future<Timed> acquire_in_thread(DirLock& lock, AcquireOptions options) {
  return std::async(std::launch::async,
                    [&lock, o = std::move(options)]() mutable {
                      return timed_acquire(lock, std::move(o));
                    });
}

AcquireOptions with_stop(std::stop_token stop, Mode mode = Mode::kExclusive) {
  AcquireOptions o;
  o.mode = mode;
  o.stop = std::move(stop);
  return o;
}

AcquireOptions with_timeout(std::chrono::nanoseconds timeout,
                            Mode mode = Mode::kExclusive) {
  AcquireOptions o;
  o.mode = mode;
  o.timeout = timeout;
  return o;
}

std::string pid_text(pid_t pid) { return "pid " + std::to_string(pid); }

// How long a thread may take to get from an acquire call into flock(2):
// microseconds normally; bounded generously for sanitizer builds.
constexpr std::chrono::milliseconds kIntoKernel{5'000};

// Waits until this process has `n` blocked waiters on `lock`'s file in
// /proc/locks (a thread of ours is inside flock).
::testing::AssertionResult OurKernelWaiters(const DirLock& lock, int n) {
  std::string table;
  if (wait_for_locks(
          lock.lock_file(),
          [n](const auto& e) { return count_waiters_by(e, ::getpid()) == n; },
          kIntoKernel, &table)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "expected " << n
         << " thread(s) of this process blocked in flock on "
         << lock.lock_file() << "; /proc/locks:\n"
         << table << "threads of this process (a waiter that is \"running\" or "
         << "in futex/nanosleep is polling, not blocked in flock):\n"
         << describe_threads(read_threads());
}

template <typename T>
bool ready(std::future<T>& f, std::chrono::milliseconds timeout = kTimeout) {
  return f.wait_for(timeout) == std::future_status::ready;
}

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

// -------------------------------------------------------------- cancellation

TEST_F(AcquireCancelTest, CancelWhileBlockedInKernelReturnsAndHoldsNothing) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::stop_source stop;
  std::future<Timed> waiter;  // before the holder: on failure, it ends first
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");

  waiter = acquire_in_thread(lock, with_stop(stop.get_token()));
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  // The check after the cancel has teeth: right now a thread is in flock.
  EXPECT_EQ(threads_in_flock().size(), 1u) << describe_threads(read_threads());

  const auto start = Clock::now();
  stop.request_stop();
  ASSERT_TRUE(ready(waiter, 5'000ms)) << "cancel did not end the kernel wait";
  const auto to_return = Clock::now() - start;
  Timed t = waiter.get();
  EXPECT_TRUE(IsError(t.result.status(), absl::StatusCode::kCancelled,
                      lock.lock_file().string(), "held by another process"));
  EXPECT_LT(to_return, 5s);  // the 1 ms p99 bound is measured in bench/
  EXPECT_TRUE(HoldsNothing(lock));
  ReleaseAndOthersGetIt(lock, holder);
}

TEST_F(AcquireCancelTest, CancelWhileWaitingInProcessReturnsAndHoldsNothing) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  std::stop_source stop;
  std::future<Timed> waiter;  // before the hold: on failure, it ends first
  ASSERT_OK_AND_ASSIGN(Guard held, lock.acquire());

  waiter = acquire_in_thread(lock, with_stop(stop.get_token()));
  ASSERT_TRUE(wait_for_waiting(*entry, 1));
  stop.request_stop();
  ASSERT_TRUE(ready(waiter, 5'000ms));
  Timed t = waiter.get();
  EXPECT_TRUE(IsError(t.result.status(), absl::StatusCode::kCancelled,
                      lock.lock_file().string(), "this process"));
  EXPECT_EQ(entry->waiting(), 0u);
  EXPECT_EQ(entry->holders(), 1u);  // ours, untouched
  EXPECT_TRUE(held.held());
  EXPECT_EQ(try_in_other_process(dir()), kBusy);

  ASSERT_OK(held.release());
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_thread(lock), kAcquired);
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AcquireCancelTest, StopAlreadyRequestedIsCancelledWithoutSyscall) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::stop_source stop;
  stop.request_stop();

  auto check_all_forms = [&] {
    SyscallCounter sys;
    for (Mode mode : {Mode::kExclusive, Mode::kShared}) {
      SCOPED_TRACE(std::string(tierlock::mode_name(mode)));
      AcquireOptions plain = with_stop(stop.get_token(), mode);
      AcquireOptions timed = with_stop(stop.get_token(), mode);
      timed.timeout = 10s;
      AcquireOptions one_try = with_stop(stop.get_token(), mode);
      one_try.timeout = 0ns;
      for (AcquireOptions* o : {&plain, &timed, &one_try}) {
        absl::StatusOr<Guard> g = lock.acquire(*o);
        EXPECT_TRUE(IsError(g.status(), absl::StatusCode::kCancelled,
                            lock.lock_file().string()));
      }
    }
    EXPECT_EQ(sys.total(), 0)
        << "flock " << sys.flock_calls() << ", openat " << sys.openat_calls()
        << ", fstatat " << sys.fstatat_calls();
  };

  {
    SCOPED_TRACE("lock free");
    check_all_forms();
    EXPECT_TRUE(locks_on(lock.lock_file()).empty())
        << describe(locks_on(lock.lock_file()));
    EXPECT_TRUE(HoldsNothing(lock));
  }
  {
    SCOPED_TRACE("lock held by another process");
    Process holder = start_holder(dir());
    ASSERT_EQ(holder.read_line(), "locked");
    check_all_forms();
    EXPECT_TRUE(HoldsNothing(lock));
    ReleaseAndOthersGetIt(lock, holder);
  }
}

TEST_F(AcquireCancelTest, CancelledProcessHoldsNothingWhileStillRunning) {
  // The other side of the same property: a tl_helper process cancels its
  // wait for our lock and stays alive; it must neither hold nor wait for the
  // lock, and must not take it when we let go.
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::optional<Guard> held;
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    held = std::move(g);
  }
  Process canceller = Process::spawn({helper_path(), "cancel", dir().string()});
  ASSERT_EQ(canceller.read_line(), "started");
  std::string table;
  EXPECT_TRUE(wait_for_locks(
      lock.lock_file(),
      [&](const auto& e) { return count_waiters_by(e, canceller.pid()) == 1; },
      kIntoKernel, &table))
      << "the other process's waiter is not blocked in flock; /proc/locks:\n"
      << table;

  ASSERT_TRUE(canceller.write_line("cancel"));
  std::optional<std::string> said = canceller.read_line();
  ASSERT_TRUE(said.has_value());
  EXPECT_EQ(said->rfind("cancelled: ", 0), 0u) << *said;
  // A cancel names no pid across processes (reading /proc/locks could delay
  // it by milliseconds); it says where to look.
  EXPECT_NE(said->find("held by another process"), std::string::npos) << *said;

  std::vector<ProcLock> entries = locks_on(lock.lock_file());
  EXPECT_EQ(count_holders_by(entries, canceller.pid()) +
                count_waiters_by(entries, canceller.pid()),
            0)
      << describe(entries);
  ASSERT_OK(held->release());
  // The canceller is still running: had it left a thread in flock, that
  // thread would have the lock now.
  EXPECT_EQ(try_in_other_process(dir()), kAcquired)
      << describe(locks_on(lock.lock_file()));
  entries = locks_on(lock.lock_file());
  EXPECT_EQ(count_holders_by(entries, canceller.pid()) +
                count_waiters_by(entries, canceller.pid()),
            0)
      << describe(entries);
  EXPECT_FALSE(canceller.exited_now());
  ASSERT_TRUE(canceller.write_line("exit"));
  EXPECT_EQ(canceller.read_line(), "bye");
  EXPECT_EQ(canceller.wait().code, 0);
}

// ------------------------------------------------------ cancel vs. grant race

// Drives rounds of: a waiter thread blocks in lock.acquire(stop); then, at
// about the same time, `release` runs on the driving thread and a canceller
// thread requests the stop. `hold` starts a round by taking the lock for the
// releaser; `in_position` says when the waiter is waiting; `inspect` checks
// the outcome (a held Guard, or kCancelled with nothing held) before the
// Guard is released. Anything else -- another error, both, neither -- fails.
struct RaceCounts {
  int granted = 0;
  int cancelled = 0;
};

template <typename Hold, typename InPosition, typename Release,
          typename Inspect>
RaceCounts race_cancel_against_release(DirLock& lock, int rounds, Hold hold,
                                       InPosition in_position, Release release,
                                       Inspect inspect) {
  RaceCounts counts;
  Rendezvous start(3);
  Rendezvous fire(2);
  Rendezvous done(3);
  std::stop_token token;                        // written before `start`
  std::optional<std::stop_source> stop;         // likewise
  std::optional<absl::StatusOr<Guard>> result;  // written before `done`
  int round = 0;
  bool quit = false;
  std::thread waiter([&] {
    for (;;) {
      start.arrive_and_wait("start");
      if (quit) return;
      result = lock.acquire(with_stop(token));
      done.arrive_and_wait("done");
    }
  });
  std::thread canceller([&] {
    for (;;) {
      start.arrive_and_wait("start");
      if (quit) return;
      const int r = round;
      fire.arrive_and_wait("fire");
      if (r % 2 == 0) spin((r / 2) % 40);
      stop->request_stop();
      done.arrive_and_wait("done");
    }
  });
  std::string failure;
  for (round = 0; round < rounds && failure.empty(); ++round) {
    failure = hold(round);
    if (!failure.empty()) break;
    stop.emplace();
    token = stop->get_token();
    result.reset();
    start.arrive_and_wait("start");
    if (!in_position(round)) failure = "the waiter never got into position";
    fire.arrive_and_wait("fire");
    if (round % 2 == 1) spin((round / 2) % 40);
    std::string released = release(round);
    if (failure.empty()) failure = released;
    done.arrive_and_wait("done");
    if (!result.has_value()) {
      failure = "no outcome";
    } else if (result->ok()) {
      ++counts.granted;
      if (failure.empty()) failure = inspect(round, true, **result);
      absl::Status r = (*result)->release();
      if (failure.empty() && !r.ok()) failure = "release: " + r.ToString();
    } else if (result->status().code() == absl::StatusCode::kCancelled) {
      ++counts.cancelled;
      Guard none;
      if (failure.empty()) failure = inspect(round, false, none);
    } else {
      failure =
          "neither a Guard nor kCancelled: " + result->status().ToString();
    }
    if (!failure.empty())
      failure = "round " + std::to_string(round) + ": " + failure;
  }
  quit = true;
  start.arrive_and_wait("start");
  waiter.join();
  canceller.join();
  EXPECT_EQ(failure, "");
  std::cout << "[ outcome  ] " << counts.granted << " granted, "
            << counts.cancelled << " cancelled of " << round << " rounds\n";
  return counts;
}

TEST_F(AcquireCancelRaceTest,
       CancelRacingWithInProcessGrantHasExactlyOneOutcome) {
  const int kRounds = scaled(10'000, 2'000);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  std::optional<Guard> held;

  race_cancel_against_release(
      lock, kRounds,
      [&](int) -> std::string {
        // The next try from another thread than the waiter's must succeed:
        // nothing is left over from the previous round.
        absl::StatusOr<std::optional<Guard>> g = lock.try_acquire();
        if (!g.ok()) return "try_acquire: " + g.status().ToString();
        if (!g->has_value()) {
          return "try_acquire found the lock held after the previous round";
        }
        held = std::move(**g);
        return "";
      },
      [&](int) { return wait_until([&] { return entry->waiting() == 1; }); },
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

TEST_F(AcquireCancelRaceTest, CancelRacingWithKernelGrantHasExactlyOneOutcome) {
  // The holder is another open file description of the lock file, so the
  // waiter blocks in flock exactly as it would behind another process, and
  // a round costs no fork. Odd rounds fire once the waiter is in the kernel,
  // even ones as soon as it is queued (possibly before it enters flock).
  const int kRounds = scaled(2'000, 400);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  const int foreign = ::open(lock.lock_file().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(foreign, 0) << std::strerror(errno);
  const int probe = ::open(lock.lock_file().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(probe, 0) << std::strerror(errno);

  race_cancel_against_release(
      lock, kRounds,
      [&](int) -> std::string {
        // Must be free at once: a thread of ours left in flock would have
        // taken it at the previous round's release.
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
        return wait_until([&] { return entry->waiting() == 1; });
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

// ------------------------------------------------- fairness with cancellation

// Waiter threads that record, under the lock, the order in which they were
// granted.
class OrderLog {
 public:
  // Acquires with `options`; on success appends `id` (while holding) and
  // releases. Returns the acquire's status.
  absl::Status run(DirLock& lock, char id, AcquireOptions options) {
    absl::StatusOr<Guard> g = lock.acquire(std::move(options));
    if (!g.ok()) return g.status();
    {
      std::lock_guard<std::mutex> l(mu_);
      order_.push_back(id);
    }
    return g->release();
  }
  std::string order() {
    std::lock_guard<std::mutex> l(mu_);
    return order_;
  }

 private:
  std::mutex mu_;
  std::string order_;
};

std::future<absl::Status> start_waiter(OrderLog& log, DirLock& lock, char id,
                                       AcquireOptions options = {}) {
  return std::async(std::launch::async,
                    [&log, &lock, id, o = std::move(options)]() mutable {
                      return log.run(lock, id, std::move(o));
                    });
}

TEST_F(AcquireFairnessTest, CancelledWaiterLeavesTheOthersInOrder) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  OrderLog log;
  std::stop_source stop_b;
  std::future<absl::Status> a, b, c;  // before the hold: on failure, end first
  ASSERT_OK_AND_ASSIGN(Guard held, lock.acquire());

  a = start_waiter(log, lock, 'A');
  ASSERT_TRUE(wait_for_waiting(*entry, 1));
  b = start_waiter(log, lock, 'B', with_stop(stop_b.get_token()));
  ASSERT_TRUE(wait_for_waiting(*entry, 2));
  c = start_waiter(log, lock, 'C');
  ASSERT_TRUE(wait_for_waiting(*entry, 3));

  stop_b.request_stop();
  ASSERT_TRUE(ready(b));
  EXPECT_TRUE(IsError(b.get(), absl::StatusCode::kCancelled,
                      lock.lock_file().string()));
  EXPECT_TRUE(wait_for_waiting(*entry, 2));
  EXPECT_EQ(log.order(), "");

  ASSERT_OK(held.release());
  ASSERT_TRUE(ready(a));
  ASSERT_TRUE(ready(c));
  EXPECT_OK(a.get());
  EXPECT_OK(c.get());
  EXPECT_EQ(log.order(), "AC");
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AcquireFairnessTest, CancelledKernelLeaderHandsTheKernelWaitToTheNext) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  OrderLog log;
  std::stop_source stop_a;
  std::future<absl::Status> a, b,
      c;  // before the holder: on failure, end first
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");

  a = start_waiter(log, lock, 'A', with_stop(stop_a.get_token()));
  EXPECT_TRUE(OurKernelWaiters(lock, 1));  // A leads, in flock
  b = start_waiter(log, lock, 'B');
  ASSERT_TRUE(wait_for_waiting(*entry, 2));
  c = start_waiter(log, lock, 'C');
  ASSERT_TRUE(wait_for_waiting(*entry, 3));

  stop_a.request_stop();
  ASSERT_TRUE(ready(a));
  EXPECT_TRUE(IsError(a.get(), absl::StatusCode::kCancelled,
                      lock.lock_file().string(), "held by another process"));
  EXPECT_TRUE(wait_for_waiting(*entry, 2));
  // B took over the kernel wait: exactly one thread of ours is in flock.
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  EXPECT_EQ(threads_in_flock().size(), 1u) << describe_threads(read_threads());
  EXPECT_EQ(b.wait_for(0s), std::future_status::timeout);

  EXPECT_EQ(stop_holder(holder).code, 0);
  ASSERT_TRUE(ready(b));
  ASSERT_TRUE(ready(c));
  EXPECT_OK(b.get());
  EXPECT_OK(c.get());
  EXPECT_EQ(log.order(), "BC");
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AcquireFairnessTest, TimedSharedWaitersBehindTimedOutWriterAreGranted) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  std::future<Timed> writer, r1, r2;  // before the hold: on failure, end first
  ASSERT_OK_AND_ASSIGN(Guard reader, lock.acquire(Mode::kShared));

  // The writer cannot be granted while `reader` holds; the readers queue
  // behind it (a shared request never overtakes a queued exclusive one).
  constexpr auto kWriterTimeout =
      500ms;  // >100x what queueing two readers takes
  writer = acquire_in_thread(lock, with_timeout(kWriterTimeout));
  ASSERT_TRUE(wait_for_waiting(*entry, 1));
  r1 = acquire_in_thread(lock, with_timeout(kTimeout, Mode::kShared));
  ASSERT_TRUE(wait_for_waiting(*entry, 2));
  r2 = acquire_in_thread(lock, with_timeout(kTimeout, Mode::kShared));
  ASSERT_TRUE(wait_for_waiting(*entry, 3));
  ASSERT_EQ(writer.wait_for(0s), std::future_status::timeout)
      << "the writer left before the readers queued; the test proves nothing";

  ASSERT_TRUE(ready(writer));
  Timed w = writer.get();
  EXPECT_TRUE(IsError(w.result.status(), absl::StatusCode::kDeadlineExceeded,
                      lock.lock_file().string()));
  EXPECT_GE(w.waited, kWriterTimeout);
  // The writer leaving unblocks the readers, long before their own timeout.
  ASSERT_TRUE(ready(r1));
  ASSERT_TRUE(ready(r2));
  Timed t1 = r1.get();
  Timed t2 = r2.get();
  ASSERT_OK(t1.result);
  ASSERT_OK(t2.result);
  EXPECT_LT(t1.waited, 5s);
  EXPECT_EQ(entry->holders(), 3u);
  EXPECT_EQ(entry->waiting(), 0u);
  EXPECT_TRUE(reader.held());
  EXPECT_EQ(try_in_other_process(dir(), Mode::kShared), kAcquired);
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
}

TEST_F(AcquireFairnessTest,
       TimedSharedWaitersBehindTimedOutKernelWriterAreGranted) {
  // As above, but the writer is the leader blocked in the kernel behind
  // another process's shared hold.
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  std::future<Timed> writer, r1,
      r2;  // before the holder: on failure, end first
  Process holder = start_holder(dir(), Mode::kShared);
  ASSERT_EQ(holder.read_line(), "locked");

  constexpr auto kWriterTimeout = 500ms;
  writer = acquire_in_thread(lock, with_timeout(kWriterTimeout));
  ASSERT_TRUE(OurKernelWaiters(lock, 1));
  r1 = acquire_in_thread(lock, with_timeout(kTimeout, Mode::kShared));
  ASSERT_TRUE(wait_for_waiting(*entry, 2));
  r2 = acquire_in_thread(lock, with_timeout(kTimeout, Mode::kShared));
  ASSERT_TRUE(wait_for_waiting(*entry, 3));
  ASSERT_EQ(writer.wait_for(0s), std::future_status::timeout)
      << "the writer left before the readers queued; the test proves nothing";

  ASSERT_TRUE(ready(writer));
  Timed w = writer.get();
  EXPECT_TRUE(IsError(w.result.status(), absl::StatusCode::kDeadlineExceeded,
                      lock.lock_file().string(), pid_text(holder.pid())));
  EXPECT_GE(w.waited, kWriterTimeout);
  ASSERT_TRUE(ready(r1));
  ASSERT_TRUE(ready(r2));
  Timed t1 = r1.get();
  Timed t2 = r2.get();
  ASSERT_OK(t1.result);
  ASSERT_OK(t2.result);
  std::vector<ProcLock> entries = locks_on(lock.lock_file());
  EXPECT_EQ(count_holders_by(entries, ::getpid()), 1) << describe(entries);
  EXPECT_EQ(count_holders_by(entries, holder.pid()), 1) << describe(entries);
  EXPECT_EQ(count_waiters(entries), 0) << describe(entries);
  ASSERT_OK(t1.result->release());
  ASSERT_OK(t2.result->release());
  EXPECT_TRUE(HoldsNothing(lock));
  ReleaseAndOthersGetIt(lock, holder);
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

// tests/api/acquire_cancel_test.cc
//
// Acquires that are cancelled (AcquireOptions::stop), a stop racing the
// grant (support/cancel_race.h, shared with the async tests), and the order
// of the waiters a cancelled or timed-out one leaves behind
// (tests/api/acquire_timeout_test.cc has the timeouts).
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
#include "support/cancel_race.h"
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

class AcquireCancelTest : public TierlockTest {};
class AcquireCancelRaceTest : public TierlockTest {};
class AcquireFairnessTest : public TierlockTest {};

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

TEST_F(AcquireCancelRaceTest,
       CancelRacingWithInProcessGrantHasExactlyOneOutcome) {
  const int kRounds = scaled(10'000, 2'000);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  std::optional<Guard> held;

  race_cancel_against_release(
      blocking_acquire(lock), kRounds,
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
      blocking_acquire(lock), kRounds,
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

}  // namespace

// tests/support/acquire_checks.h
//
// Checks shared by the timed, cancellable and async acquire tests:
//   kSanitized          - true in ASan/TSan builds (long loops are shortened
//   there). scaled              - an iteration count, shortened under
//   sanitizers. HoldsNothing        - this process neither holds nor waits for
//   `lock`: not in
//                         the entry, not in /proc/locks, no thread in flock(2).
//   ReleaseAndOthersGetIt - stops a holder process, then a third process must
//                         take the lock at once and we still hold nothing.
//   RaceOutcomeProblem  - what is wrong with the outcome of a stop racing a
//                         grant: exactly one of "holds it" and "holds nothing".
//   kIntoKernel         - how long a thread may take from an acquire call into
//                         flock(2).
//   OurKernelWaiters    - waits until this process has n threads in flock on
//                         a lock's file.
//   pid_text            - "pid N", as messages name a holder.
// Header-only.
#ifndef TIERLOCK_TESTS_SUPPORT_ACQUIRE_CHECKS_H_
#define TIERLOCK_TESTS_SUPPORT_ACQUIRE_CHECKS_H_

#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "support/helpers.h"
#include "support/internal.h"
#include "support/proc_locks.h"
#include "support/subprocess.h"
#include "support/threads.h"
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define TIERLOCK_TESTS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define TIERLOCK_TESTS_SANITIZED 1
#endif
#endif
#ifndef TIERLOCK_TESTS_SANITIZED
#define TIERLOCK_TESTS_SANITIZED 0
#endif

namespace tierlock::testing {

inline constexpr bool kSanitized = TIERLOCK_TESTS_SANITIZED != 0;

// Returns `n`, or `sanitized` in sanitizer builds.
inline constexpr int scaled(int n, int sanitized) {
  return kSanitized ? sanitized : n;
}

// Succeeds if this process holds nothing of `lock` and waits for nothing:
// the registry entry has no holder, no waiter and no kernel lock; /proc/locks
// has no entry (granted or blocked) of this pid on the lock file; and no
// thread of this process is blocked in flock(2) (on any file).
inline ::testing::AssertionResult HoldsNothing(const DirLock& lock) {
  std::shared_ptr<internal::LockEntry> entry = entry_of(lock);
  if (entry == nullptr) return ::testing::AssertionFailure() << "no entry";
  ::testing::AssertionResult r = ::testing::AssertionSuccess();
  bool ok = true;
  std::string why;
  if (entry->holders() != 0) {
    ok = false;
    why += "entry has " + std::to_string(entry->holders()) + " holder(s); ";
  }
  if (entry->waiting() != 0) {
    ok = false;
    why += "entry has " + std::to_string(entry->waiting()) + " waiter(s); ";
  }
  if (entry->kernel_held()) {
    ok = false;
    why += "entry holds the kernel lock; ";
  }
  const std::vector<ProcLock> entries = locks_on(lock.lock_file());
  const pid_t self = ::getpid();
  if (count_holders_by(entries, self) + count_waiters_by(entries, self) != 0) {
    ok = false;
    why += "/proc/locks shows this process on the lock file:\n" +
           describe(entries);
  }
  const std::vector<ThreadState> in_flock = threads_in_flock();
  if (!in_flock.empty()) {
    ok = false;
    why += "threads of this process are blocked in flock:\n" +
           describe_threads(in_flock);
  }
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << why;
}

// Releases `holder` (a tl_helper hold on `lock`'s file), then checks that a
// third process takes the lock at once (a thread of ours left blocked in
// flock would have taken it first), and that we still hold nothing.
inline void ReleaseAndOthersGetIt(const DirLock& lock, Process& holder) {
  EXPECT_EQ(stop_holder(holder).code, 0) << "the holder process failed";
  EXPECT_EQ(try_in_other_process(lock.directory(), Mode::kExclusive,
                                 lock.lock_file().filename().string()),
            kAcquired)
      << "after the holder released, another process could not take the "
         "lock:\n"
      << describe(locks_on(lock.lock_file()));
  EXPECT_TRUE(HoldsNothing(lock));
}

// Checks the outcome of an acquire whose stop raced its grant: the waiter
// has left `entry`'s queue and either (`granted`) `g` holds the lock, the
// entry's only holder, with the kernel lock taken, or it holds nothing at all.
// With `probe_fd` >= 0 (another open file description of the lock file: the
// kernel was involved) also no thread is left in flock, and a granted lock
// is really held in the kernel (`probe_fd` cannot take it). Returns "" or
// what is wrong.
inline std::string RaceOutcomeProblem(const internal::LockEntry& entry,
                                      bool granted, const Guard& g,
                                      int probe_fd = -1) {
  if (entry.waiting() != 0) return "the waiter is still queued";
  if (probe_fd >= 0 && !threads_in_flock().empty()) {
    return "a thread is left in flock:\n" +
           describe_threads(threads_in_flock());
  }
  const std::string state = std::to_string(entry.holders()) +
                            " holder(s), kernel lock " +
                            (entry.kernel_held() ? "held" : "free");
  if (granted) {
    if (!g.held()) return "granted, but the Guard does not hold";
    if (entry.holders() != 1 || !entry.kernel_held()) {
      return "granted, but the entry shows " + state;
    }
    if (probe_fd >= 0 && ::flock(probe_fd, LOCK_EX | LOCK_NB) == 0) {
      ::flock(probe_fd, LOCK_UN);
      return "granted, but the kernel lock is free";
    }
    return "";
  }
  if (entry.holders() != 0 || entry.kernel_held()) {
    return "kCancelled, but the entry shows " + state;
  }
  return "";
}

// Names a process as tierlock's messages do.
inline std::string pid_text(pid_t pid) { return "pid " + std::to_string(pid); }

// How long a thread may take to get from an acquire call into flock(2):
// microseconds normally; bounded generously for sanitizer builds.
inline constexpr std::chrono::milliseconds kIntoKernel{5'000};

// Waits until this process has `n` blocked waiters on `lock`'s file in
// /proc/locks (a thread of ours is inside flock).
inline ::testing::AssertionResult OurKernelWaiters(const DirLock& lock, int n) {
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

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_ACQUIRE_CHECKS_H_

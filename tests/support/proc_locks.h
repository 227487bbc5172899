// tests/support/proc_locks.h
//
// The kernel's view of file locks, from /proc/locks:
//   ProcLock, read_proc_locks - one line / the whole table (support/proc.h,
//                     shared with the benchmarks).
//   locks_on        - the entries for one file (matched by device and inode).
//   wait_for_locks  - polls until a predicate over one file's entries holds.
//   LocksBecome     - the same, as a gtest assertion that prints the table.
//
// /proc/locks is a seq_file produced a page at a time, positionally: while
// other processes lock and unlock, one reading can show an entry twice or
// miss one. So tests never judge a single reading: they wait (bounded) until
// the state they expect is seen. A real violation persists and times out.
#ifndef TIERLOCK_TESTS_SUPPORT_PROC_LOCKS_H_
#define TIERLOCK_TESTS_SUPPORT_PROC_LOCKS_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "support/proc.h"
#include "support/subprocess.h"

namespace tierlock::testing {

// Returns the flock(2) entries (granted and waiting) on `file`. Follows
// symlinks; empty if `file` does not exist. /proc/locks is not read
// atomically (a busy system can show an entry twice or skip one), so this
// returns two consecutive readings that agree.
std::vector<ProcLock> locks_on(const std::filesystem::path& file);

// Counts of `entries` by state.
int count_holders(const std::vector<ProcLock>& entries);
int count_waiters(const std::vector<ProcLock>& entries);
int count_holders_by(const std::vector<ProcLock>& entries, pid_t pid);
int count_waiters_by(const std::vector<ProcLock>& entries, pid_t pid);

// Polls locks_on(file) until `pred` holds, at most `timeout`. Returns whether
// it held; on failure `last` (if given) receives the last table seen.
bool wait_for_locks(
    const std::filesystem::path& file,
    const std::function<bool(const std::vector<ProcLock>&)>& pred,
    std::chrono::milliseconds timeout = kTimeout, std::string* last = nullptr);

// Succeeds once `pred` holds for locks_on(file) (at most `timeout`); the
// failure message shows the last table seen.
::testing::AssertionResult LocksBecome(
    const std::filesystem::path& file,
    const std::function<bool(const std::vector<ProcLock>&)>& pred,
    std::chrono::milliseconds timeout = kTimeout);

// Predicates for LocksBecome.
std::function<bool(const std::vector<ProcLock>&)> no_locks();
// Exactly `holders` granted entries by `pid` (0: none), none waiting by it.
std::function<bool(const std::vector<ProcLock>&)> held_by(pid_t pid,
                                                          int holders = 1);

// Formats entries one per line, for failure messages.
std::string describe(const std::vector<ProcLock>& entries);

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_PROC_LOCKS_H_

// tests/support/internal.h
//
// White-box access to tierlock's internals (src/), for fault injection and
// queue inspection:
//   ScopedSysOverride - swaps entries of the syscall table, restores them on
//   exit. entry_of          - the registry entry (LockEntry) behind a DirLock.
//   wait_for_waiting  - waits until an entry's in-process queue reaches a
//   length.
#ifndef TIERLOCK_TESTS_SUPPORT_INTERNAL_H_
#define TIERLOCK_TESTS_SUPPORT_INTERNAL_H_

#include <chrono>
#include <cstddef>
#include <memory>

#include "platform/posix_sys.h"
#include "queue/lock_entry.h"
#include "support/subprocess.h"
#include "tierlock/dir_lock.h"

namespace tierlock::testing {

// Saves the whole syscall table on construction and restores it on
// destruction. Assign members of sys() in between. Use only while no other
// thread is inside tierlock.
class ScopedSysOverride {
 public:
  ScopedSysOverride() : saved_(internal::posix_sys()) {}
  ~ScopedSysOverride() { internal::posix_sys() = saved_; }
  ScopedSysOverride(const ScopedSysOverride&) = delete;
  ScopedSysOverride& operator=(const ScopedSysOverride&) = delete;

  internal::PosixSys& sys() { return internal::posix_sys(); }

 private:
  internal::PosixSys saved_;
};

// Returns the registry entry `lock` locks through in this process, or null
// (src/api/testing_hooks.h).
std::shared_ptr<internal::LockEntry> entry_of(const DirLock& lock);

// Waits until `entry->waiting()` equals `n`, at most `timeout`.
bool wait_for_waiting(const internal::LockEntry& entry, std::size_t n,
                      std::chrono::milliseconds timeout = kTimeout);

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_INTERNAL_H_

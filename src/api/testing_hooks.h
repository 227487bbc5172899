// src/api/testing_hooks.h
//
// Access to internals for tierlock's own tests (not installed, not API).
//   entry_for_testing - the registry entry a DirLock locks through.
#ifndef TIERLOCK_SRC_API_TESTING_HOOKS_H_
#define TIERLOCK_SRC_API_TESTING_HOOKS_H_

#include <memory>

#include "queue/lock_entry.h"
#include "tierlock/dir_lock.h"

namespace tierlock::internal {

// Returns the entry `lock` uses in this process (after fork(), the child's
// own entry, opening it if needed); null on error.
std::shared_ptr<LockEntry> entry_for_testing(const DirLock& lock);

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_API_TESTING_HOOKS_H_

#include "support/internal.h"

#include "api/testing_hooks.h"
#include "support/wait.h"

namespace tierlock::testing {

std::shared_ptr<internal::LockEntry> entry_of(const DirLock& lock) {
  return internal::entry_for_testing(lock);
}

bool wait_for_waiting(const internal::LockEntry& entry, std::size_t n,
                      std::chrono::milliseconds timeout) {
  return wait_until([&] { return entry.waiting() == n; }, timeout);
}

}  // namespace tierlock::testing

// tierlock/diagnostics.h
//
// Counters for tests and diagnostics; nothing here is needed to use a lock:
//   diagnostics::registry_size - the number of live lock-file entries.
//   Registry                   - the older spelling of the same count.
#ifndef TIERLOCK_DIAGNOSTICS_H_
#define TIERLOCK_DIAGNOSTICS_H_

#include <cstddef>

namespace tierlock {
namespace diagnostics {

// Returns the number of lock files this process has an entry for now. Every
// DirLock and Guard of one lock file (the same inode, however it is reached)
// shares one entry, which owns the single open descriptor and the in-process
// queue; it goes, and its descriptor is closed, when the last of them goes.
// A fork()ed child starts with none. Thread-safe; takes a short internal
// mutex.
std::size_t registry_size();

}  // namespace diagnostics

// Registry
//
// The older spelling of diagnostics::registry_size(), kept for code written
// against it: Registry::global().size() returns the same number.
class Registry {
 public:
  // Returns the process-wide registry. Never destroyed.
  static Registry& global();

  // Returns diagnostics::registry_size().
  std::size_t size() const;

  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

 private:
  Registry() = default;
};

}  // namespace tierlock

#endif  // TIERLOCK_DIAGNOSTICS_H_

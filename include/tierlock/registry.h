// tierlock/registry.h
//
// Defines the process-wide registry behind every DirLock:
//   Registry - maps each lock-file identity to the one entry (descriptor +
//   in-process
//              queue) that all handles of this process share.
#ifndef TIERLOCK_REGISTRY_H_
#define TIERLOCK_REGISTRY_H_

#include <cstddef>

namespace tierlock {

// Registry
//
// One entry per lock-file identity: the (device, inode) pair of the lock file,
// so two paths that reach the same file (symlinked or bind-mounted
// directories, hard links) share one entry, one descriptor and one queue, as
// the kernel's flock does. The map holds entries by weak reference; an entry
// is removed in O(1) when the last DirLock or Guard using it goes, and its
// descriptor is closed then.
//
// Thread-safety: all members are safe to call concurrently.
// After fork(), the child starts with an empty registry; entries inherited
// from the parent are inert there (see DirLock).
class Registry {
 public:
  // Returns the process-wide registry. Never destroyed, so Guards in static
  // storage may be released during exit.
  static Registry& global();

  // Returns the number of live entries (for tests and diagnostics).
  std::size_t size() const;

  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

 private:
  Registry() = default;
};

}  // namespace tierlock

#endif  // TIERLOCK_REGISTRY_H_

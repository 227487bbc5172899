// src/queue/registry_impl.h
//
// The registry's internals: the weak map from lock-file identity to entry.
//   RegistryImpl - find-or-create an entry; O(1) removal when an entry dies.
#ifndef TIERLOCK_SRC_QUEUE_REGISTRY_IMPL_H_
#define TIERLOCK_SRC_QUEUE_REGISTRY_IMPL_H_

#include <filesystem>
#include <memory>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "platform/platform.h"
#include "queue/lock_entry.h"

namespace tierlock::internal {

class RegistryImpl {
 public:
  static RegistryImpl& get();

  // Returns the live entry for `id`, or null.
  std::shared_ptr<LockEntry> find(const platform::FileId& id);

  // Returns the live entry for file.id(), or makes `file` one. When an entry
  // already exists, `file` is closed (the existing descriptor is kept: one per
  // identity).
  std::shared_ptr<LockEntry> find_or_insert(LockFile file);

  // Removes `entry`'s slot if it still points to `entry`. Called by ~LockEntry.
  void erase(const platform::FileId& id, const LockEntry* entry);

  std::size_t size() const;

  // fork() support: lock across fork, reset in the child.
  void before_fork();
  void after_fork_parent();
  void after_fork_child();

 private:
  RegistryImpl() = default;

  struct Slot {
    std::weak_ptr<LockEntry> weak;
    const LockEntry* raw = nullptr;  // identifies the entry the slot is for
  };
  // Plain std::mutex (not the annotated one): before_fork/after_fork lock
  // and unlock it in different functions, which the analysis cannot follow.
  mutable std::mutex mu_;
  absl::flat_hash_map<platform::FileId, Slot> map_;  // guarded by mu_
};

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_QUEUE_REGISTRY_IMPL_H_

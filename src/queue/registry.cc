// The process-wide registry: lock-file identity -> entry, by weak reference.
#include <atomic>

#include "base/fork_generation.h"
#include "queue/registry_impl.h"
#include "tierlock/diagnostics.h"

namespace tierlock {
namespace internal {
namespace {

void prepare_fork() { RegistryImpl::get().before_fork(); }
void parent_after_fork() { RegistryImpl::get().after_fork_parent(); }
void child_after_fork() { RegistryImpl::get().after_fork_child(); }

}  // namespace

RegistryImpl& RegistryImpl::get() {
  // Leaked on purpose: entries (held by Guards in static storage, or by
  // threads still running at exit) unregister themselves until the very end.
  static RegistryImpl* const impl = [] {
    auto* r = new RegistryImpl;
    platform::register_fork_handlers(&prepare_fork, &parent_after_fork,
                                     &child_after_fork);
    return r;
  }();
  return *impl;
}

std::shared_ptr<LockEntry> RegistryImpl::find(const platform::FileId& id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = map_.find(id);
  if (it == map_.end()) return nullptr;
  return it->second.weak.lock();
}

std::shared_ptr<LockEntry> RegistryImpl::find_or_insert(LockFile file) {
  std::lock_guard<std::mutex> lk(mu_);
  Slot& slot = map_[file.id()];
  if (std::shared_ptr<LockEntry> live = slot.weak.lock()) {
    return live;  // one descriptor per identity: `file` is closed on return
  }
  // An expired slot may still await its dying entry's erase(); replacing it
  // here is safe because erase() checks that the slot is still that entry's.
  auto entry = std::make_shared<LockEntry>(std::move(file), fork_generation());
  slot.weak = entry;
  slot.raw = entry.get();
  return entry;
}

void RegistryImpl::erase(const platform::FileId& id, const LockEntry* entry) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = map_.find(id);
  if (it != map_.end() && it->second.raw == entry) map_.erase(it);
}

std::size_t RegistryImpl::size() const {
  std::lock_guard<std::mutex> lk(mu_);
  return map_.size();
}

// The map's mutex is held across fork() so the child never inherits it
// locked by a thread that does not exist there.
void RegistryImpl::before_fork() { mu_.lock(); }
void RegistryImpl::after_fork_parent() { mu_.unlock(); }
void RegistryImpl::after_fork_child() {
  // Entries inherited from the parent share its open file descriptions, so
  // locking through them would lock (and unlocking unlock) the parent's hold.
  // They become stale: inert, and never looked up again.
  g_fork_generation.fetch_add(1, std::memory_order_relaxed);
  map_.clear();
  mu_.unlock();
}

}  // namespace internal

Registry& Registry::global() {
  static Registry* const registry = new Registry;
  return *registry;
}

std::size_t diagnostics::registry_size() {
  return internal::RegistryImpl::get().size();
}

std::size_t Registry::size() const { return diagnostics::registry_size(); }

}  // namespace tierlock

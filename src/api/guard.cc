// Guard: one hold, released once.
#include "tierlock/guard.h"

#include <cstdint>
#include <utility>

#include "queue/lock_entry.h"
#include "tier/tier_context.h"

namespace tierlock {
namespace {

// The header keeps the entry and the context type-erased; only DirLock
// stores them, always as these types.
internal::LockEntry* entry_of(const std::shared_ptr<void>& entry) {
  return static_cast<internal::LockEntry*>(entry.get());
}

}  // namespace

Guard& Guard::operator=(Guard&& other) noexcept {
  if (this != &other) {
    (void)release();
    entry_ = std::move(other.entry_);
    mode_ = other.mode_;
    owner_ = other.owner_;
    context_ = std::exchange(other.context_, nullptr);
    hold_id_ = other.hold_id_;
  }
  return *this;
}

absl::Status Guard::release() {
  // Forget the hold in its context first, while the entry (whose path the
  // record points to) is still alive.
  // In a fork()ed child the context's lock may have been held by a thread
  // that does not exist there: leave the child's copy alone.
  if (context_ != nullptr) {
    if (entry_ == nullptr || !entry_of(entry_)->stale()) {
      internal::forget_hold(*static_cast<internal::ContextState*>(context_),
                            hold_id_);
    }
    context_ = nullptr;
  }
  // The queue's part (nothing in a fork()ed child, where the hold is the
  // parent's: never LOCK_UN it, never touch the entry's mutex).
  // Moved out first: the Guard is empty from here on, whatever the cast does.
  std::shared_ptr<void> entry = std::move(entry_);
  return internal::EntryHold(
             std::static_pointer_cast<internal::LockEntry>(std::move(entry)),
             mode_, internal::ThreadKey{owner_})
      .release();
}

bool Guard::held() const {
  return entry_ != nullptr && !entry_of(entry_)->stale();
}

const std::filesystem::path& Guard::lock_file() const {
  static const std::filesystem::path* const kEmpty = new std::filesystem::path;
  return entry_ != nullptr ? entry_of(entry_)->file().path() : *kEmpty;
}

Guard::native_handle_type Guard::native_handle() const {
  if (entry_ == nullptr || entry_of(entry_)->stale()) {
#ifdef _WIN32
    return internal::platform::kInvalidHandle;
#else
    return -1;
#endif
  }
  return entry_of(entry_)->file().handle();
}

}  // namespace tierlock

// Guard: one hold, released once.
#include "tierlock/guard.h"

#include <atomic>
#include <cstdint>
#include <utility>

#include "queue/lock_entry.h"
#include "tier/tier_context.h"

namespace tierlock {

namespace internal {

ThreadKey current_thread_key() noexcept {
  static std::atomic<std::uint64_t> next{1};
  thread_local const std::uint64_t key =
      next.fetch_add(1, std::memory_order_relaxed);
  return ThreadKey{key};
}

}  // namespace internal

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
    if (entry_ == nullptr || !entry_->stale()) {
      internal::forget_hold(*context_, hold_id_);
    }
    context_ = nullptr;
  }
  std::shared_ptr<internal::LockEntry> entry = std::move(entry_);
  if (entry == nullptr) return absl::OkStatus();
  // In a fork()ed child the hold is the parent's: never LOCK_UN it, never
  // touch the entry's mutex (a vanished parent thread may have held it).
  if (entry->stale()) return absl::OkStatus();
  return entry->release(mode_, owner_);
}

bool Guard::held() const { return entry_ != nullptr && !entry_->stale(); }

const std::filesystem::path& Guard::lock_file() const {
  static const std::filesystem::path* const kEmpty = new std::filesystem::path;
  return entry_ != nullptr ? entry_->file().path() : *kEmpty;
}

Guard::native_handle_type Guard::native_handle() const {
  if (entry_ == nullptr || entry_->stale()) {
#ifdef _WIN32
    return internal::platform::kInvalidHandle;
#else
    return -1;
#endif
  }
  return entry_->file().handle();
}

}  // namespace tierlock

// Guard: one hold, released once.
#include "tierlock/guard.h"

#include <cstdint>
#include <utility>

#include "queue/lock_entry.h"
#include "tier/tier_context.h"

namespace tierlock {

Guard::Guard(internal::EntryHold&& hold, internal::ContextState* context,
             std::uint64_t hold_id) noexcept
    : mode_(hold.mode()),
      owner_(hold.owner().value),
      context_(context),
      hold_id_(hold_id) {
  entry_ = std::move(hold).take();
}

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
  // The queue's part (nothing in a fork()ed child, where the hold is the
  // parent's: never LOCK_UN it, never touch the entry's mutex).
  return internal::EntryHold(std::move(entry_), mode_,
                             internal::ThreadKey{owner_})
      .release();
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

// LockEntry: the in-process FIFO queue in front of one kernel flock.
#include "lock_entry.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "registry_impl.h"
#include "string_util.h"

namespace tierlock::internal {

LockEntry::LockEntry(LockFile file, std::uint64_t generation) noexcept
    : file_(std::move(file)), generation_(generation) {}

LockEntry::~LockEntry() {
  // An entry inherited over fork() belongs to the parent's registry, which
  // the child has discarded.
  if (!stale()) RegistryImpl::get().erase(file_.id(), this);
}

absl::StatusOr<std::optional<Guard>> LockEntry::acquire(
    std::shared_ptr<LockEntry> self, Mode mode, WaitPolicy policy) {
  const std::thread::id me = std::this_thread::get_id();
  absl::StatusOr<bool> got = self->acquire_hold(mode, policy, me);
  if (!got.ok()) return got.status();
  if (!*got) return std::optional<Guard>();
  return std::optional<Guard>(Guard(std::move(self), mode, me));
}

absl::StatusOr<bool> LockEntry::lockable_acquire(
    const std::shared_ptr<LockEntry>& self, Mode mode, WaitPolicy policy) {
  absl::StatusOr<bool> got =
      self->acquire_hold(mode, policy, std::this_thread::get_id());
  if (got.ok() && *got) {
    UniqueLock lk(self->mu_);
    if (self->lockable_holds_++ == 0) self->self_ = self;
  }
  return got;
}

absl::Status LockEntry::lockable_release(Mode mode) {
  std::shared_ptr<LockEntry> keep;  // dropped after mu_ is released
  UniqueLock lk(mu_);
  const bool held = mode == Mode::kExclusive ? exclusive_held_
                                             : !shared_owners_.empty();
  if (lockable_holds_ == 0 || !held) {
    return absl::FailedPreconditionError(absl::StrCat(
        "unlock '", file_.path().native(), "': not held ", to_absl(mode_name(mode)),
        " through lock()/lock_shared() in this process"));
  }
  if (--lockable_holds_ == 0) keep = std::move(self_);
  return release_hold_locked(mode, std::this_thread::get_id(),
                             /*any_owner=*/true);
}

absl::Status LockEntry::release(Mode mode, std::thread::id owner) {
  UniqueLock lk(mu_);
  return release_hold_locked(mode, owner, /*any_owner=*/false);
}

bool LockEntry::holds_locked(std::thread::id thread) const {
  if (exclusive_held_) return exclusive_owner_ == thread;
  return std::find(shared_owners_.begin(), shared_owners_.end(), thread) !=
         shared_owners_.end();
}

void LockEntry::grant_locked(Mode mode, std::thread::id thread) {
  if (mode == Mode::kExclusive) {
    exclusive_held_ = true;
    exclusive_owner_ = thread;
  } else {
    shared_owners_.push_back(thread);
  }
}

absl::StatusOr<bool> LockEntry::take_kernel_locked(Mode mode) {
  // Called only while no thread of this process holds the lock, so even a
  // non-atomic conversion could not expose a critical section. On Linux a
  // downgrade (exclusive -> shared) is atomic: the kernel swaps the lock under
  // one spinlock and nothing can conflict with it, so another process waiting
  // for exclusive never slips in. An upgrade that finds another holder fails
  // having dropped our shared lock; then we hold nothing and wait like anyone.
  absl::StatusOr<bool> got = file_.try_lock(mode);
  if (got.ok() && *got) {
    kernel_ = mode == Mode::kExclusive ? Kernel::kExclusive : Kernel::kShared;
    return true;
  }
  if (kernel_ != Kernel::kNone) (void)unlock_kernel_locked();  // make sure
  return got;
}

absl::Status LockEntry::unlock_kernel_locked() {
  kernel_ = Kernel::kNone;
  return file_.unlock();
}

void LockEntry::push_back_locked(Waiter* w) {
  w->prev = tail_;
  w->next = nullptr;
  if (tail_ != nullptr) {
    tail_->next = w;
  } else {
    head_ = w;
  }
  tail_ = w;
  ++waiting_;
}

void LockEntry::remove_locked(Waiter* w) {
  (w->prev != nullptr ? w->prev->next : head_) = w->next;
  (w->next != nullptr ? w->next->prev : tail_) = w->prev;
  w->prev = w->next = nullptr;
  --waiting_;
}

absl::StatusOr<bool> LockEntry::acquire_uncontended_locked(
    Mode mode, std::thread::id self) {
  const Kernel want =
      mode == Mode::kExclusive ? Kernel::kExclusive : Kernel::kShared;
  if (mode == Mode::kExclusive ? !free_locked() : exclusive_held_) {
    return false;
  }
  if (kernel_ != want) {
    absl::StatusOr<bool> got = take_kernel_locked(mode);
    if (!got.ok() || !*got) return got;
  }
  grant_locked(mode, self);
  return true;
}

absl::StatusOr<bool> LockEntry::acquire_hold(Mode mode, WaitPolicy policy,
                                             std::thread::id self) {
  UniqueLock lk(mu_);
  if (holds_locked(self)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "acquire '", file_.path().native(), "' (", to_absl(mode_name(mode)),
        "): this thread already holds it ",
        exclusive_held_ ? "exclusively" : "shared",
        "; waiting for itself would deadlock"));
  }
  if (head_ == nullptr) {
    absl::StatusOr<bool> got = acquire_uncontended_locked(mode, self);
    if (!got.ok() || *got) return got;
  }
  if (!policy.wait) return false;

  Waiter w(mode, self);
  push_back_locked(&w);
  if (head_ == &w && free_locked() && kernel_ == Kernel::kNone) {
    // Nobody here holds it, so another process does: wait in the kernel.
    w.leader = true;
  }
  for (;;) {
    while (!w.granted && !w.leader && w.error.ok()) w.cv.wait(lk.native());
    if (w.granted) return true;
    if (!w.error.ok()) return w.error;

    // The leader blocks in flock without mu_, so releases, tries and new
    // waiters proceed meanwhile; they queue behind it.
    lk.unlock();
    absl::Status st = file_.lock(mode);
    lk.lock();
    w.leader = false;
    remove_locked(&w);
    if (st.ok()) {
      kernel_ = mode == Mode::kExclusive ? Kernel::kExclusive : Kernel::kShared;
      grant_locked(mode, self);
    }
    dispatch_locked();  // shared waiters behind a shared leader join it
    if (!st.ok()) return st;
    return true;
  }
}

void LockEntry::dispatch_locked() {
  while (head_ != nullptr) {
    Waiter* w = head_;
    if (w->leader) return;  // blocked in the kernel; it dispatches when done
    const bool exclusive = w->mode == Mode::kExclusive;
    if (exclusive ? !free_locked() : exclusive_held_) return;
    const Kernel want = exclusive ? Kernel::kExclusive : Kernel::kShared;
    if (kernel_ != want) {
      absl::StatusOr<bool> got = take_kernel_locked(w->mode);
      if (!got.ok()) {
        remove_locked(w);
        w->error = got.status();
        w->cv.notify_one();
        continue;
      }
      if (!*got) {
        w->leader = true;  // another process holds it
        w->cv.notify_one();
        return;
      }
    }
    remove_locked(w);
    grant_locked(w->mode, w->thread);
    w->granted = true;
    w->cv.notify_one();
    if (exclusive) return;
  }
  if (free_locked() && kernel_ != Kernel::kNone) (void)unlock_kernel_locked();
}

absl::Status LockEntry::release_hold_locked(Mode mode, std::thread::id owner,
                                            bool any_owner) {
  if (mode == Mode::kExclusive) {
    if (!exclusive_held_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "release '", file_.path().native(), "': not held exclusively"));
    }
    exclusive_held_ = false;
    exclusive_owner_ = std::thread::id();
  } else {
    auto it = std::find(shared_owners_.rbegin(), shared_owners_.rend(), owner);
    if (it == shared_owners_.rend() && any_owner && !shared_owners_.empty()) {
      it = shared_owners_.rbegin();
    }
    if (it == shared_owners_.rend()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "release '", file_.path().native(), "': not held shared"));
    }
    shared_owners_.erase(std::next(it).base());
  }
  if (!free_locked()) return absl::OkStatus();
  if (head_ == nullptr) return unlock_kernel_locked();
  // Hand over: same mode keeps the kernel lock (no syscall); otherwise
  // dispatch changes the kernel mode while nobody here holds it.
  dispatch_locked();
  return absl::OkStatus();
}

std::size_t LockEntry::waiting() const {
  UniqueLock lk(mu_);
  return waiting_;
}

bool LockEntry::kernel_held() const {
  UniqueLock lk(mu_);
  return kernel_ != Kernel::kNone;
}

std::size_t LockEntry::holders() const {
  UniqueLock lk(mu_);
  return shared_owners_.size() + (exclusive_held_ ? 1 : 0);
}

}  // namespace tierlock::internal

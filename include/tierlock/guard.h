// tierlock/guard.h
//
// Defines the RAII ownership of one hold on a tierlock lock:
//   Guard - move-only; the lock is held (in the given Mode) while a Guard
//           owns it.
#ifndef TIERLOCK_GUARD_H_
#define TIERLOCK_GUARD_H_

#include <cstdint>
#include <filesystem>
#include <memory>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "tierlock/mode.h"

namespace tierlock {

class DirLock;

// Guard
//
// One hold on a directory lock, returned by DirLock::acquire / try_acquire. The
// hold ends when release() is called or the Guard is destroyed, whichever comes
// first. A Guard may be moved to, and released from, another thread; for
// self-deadlock detection the hold still belongs to the thread that acquired
// it, and for tier checks to the LockContext that took it (lock_context.h).
//
// Thread-safety: a Guard is a value; distinct Guards may be used concurrently,
// one Guard must not be used by two threads at once (like any std object).
// Blocking: nothing in Guard blocks beyond a short internal mutex and one
// non-blocking flock(LOCK_UN).
//
// fork(): a Guard inherited by a child process is inert. The child does not
// hold the lock (held() is false there) and releasing or destroying the Guard
// in the child never unlocks the parent's hold (it only drops the child's
// reference to the inherited descriptor).
//
// Example:
//   absl::StatusOr<tierlock::Guard> g = lock.acquire();
//   if (!g.ok()) return g.status();
//   ... work in the directory ...
//   // released when g goes out of scope, or earlier with g->release().
class [[nodiscard]] Guard {
 public:
  // Constructs an empty guard that holds nothing.
  Guard() noexcept = default;
  // Inline, like the destructor's emptiness test: every acquire moves its
  // Guard into a StatusOr and destroys the moved-from one.
  Guard(Guard&& other) noexcept
      : entry_(std::move(other.entry_)),
        mode_(other.mode_),
        owner_(other.owner_),
        context_(std::exchange(other.context_, nullptr)),
        hold_id_(other.hold_id_) {}
  Guard& operator=(Guard&& other) noexcept;  // releases what *this held first
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;
  // Releases the hold, if any. Errors are ignored here; call release() to see
  // them.
  ~Guard() {
    if (entry_ != nullptr || context_ != nullptr) (void)release();
  }

  // Releases the hold. Idempotent: a second call, or a call on an empty or
  // moved-from Guard, returns OK and does nothing. The hold ends even when an
  // error is returned (the only possible error is the kernel refusing LOCK_UN,
  // which leaves the descriptor to be closed when the last user goes).
  absl::Status release();

  // Returns true while this Guard holds the lock in this process.
  bool held() const;
  // Returns the mode of the hold (meaningful only while held()).
  Mode mode() const { return mode_; }
  // Returns the lock file's path (empty for an empty Guard).
  const std::filesystem::path& lock_file() const;

#ifdef _WIN32
  using native_handle_type = void*;  // a HANDLE
#else
  using native_handle_type = int;  // a file descriptor
#endif
  // Returns the descriptor (a HANDLE on Windows) through which this process
  // holds the kernel lock, or -1 (INVALID_HANDLE_VALUE) for an empty Guard
  // or one inherited over fork(). The library owns it and shares it with the
  // other holds of this lock file in the process: never close it, unlock it
  // or change its flags. It stays valid while the Guard holds the lock.
  //
  // Its use is to pass the lock to a child process: a duplicate (dup(2),
  // inherited across exec without O_CLOEXEC) refers to the same open file
  // description, so the kernel keeps the lock while any process still has
  // that description open, even after this process dies. Releasing the
  // Guard unlocks the description for all of them (flock(LOCK_UN)); the
  // `tierlock run` command passes its lock to its command this way.
  native_handle_type native_handle() const;

 private:
  // Only DirLock (in the library) makes holds. The pointers are opaque here:
  // the library's entry for the lock file (its descriptor and queue) and the
  // tier-check record of the hold. They are type-erased rather than
  // pointers to private types so that this header names nothing of the
  // library's internals; a Guard is still five words, moved without an
  // allocation.
  friend class DirLock;
  Guard(std::shared_ptr<void> entry, Mode mode, std::uint64_t owner,
        void* context, std::uint64_t hold_id) noexcept
      : entry_(std::move(entry)),
        mode_(mode),
        owner_(owner),
        context_(context),
        hold_id_(hold_id) {}

  std::shared_ptr<void> entry_;  // null once released
  Mode mode_ = Mode::kExclusive;
  // The acquiring thread's key (0: none, an async grant), for self-deadlock
  // checks.
  std::uint64_t owner_ = 0;
  // The tier-check context the hold is recorded in (null: not recorded). The
  // record itself keeps the context alive, so no count.
  void* context_ = nullptr;
  std::uint64_t hold_id_ = 0;
};

}  // namespace tierlock

#endif  // TIERLOCK_GUARD_H_

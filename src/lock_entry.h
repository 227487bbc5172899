// src/lock_entry.h
//
// The middle layers of tierlock (internal):
//   HandlePaths - the canonical directory and lock file a handle reports.
//   LockFile    - the one open descriptor onto one lock-file identity.
//   LockEntry   - a registry entry: a LockFile plus the in-process FIFO queue
//                 that decides which threads hold it and when the kernel lock
//                 is taken and released.
//   fork_generation - bumped in the child on fork(); older entries are inert.
#ifndef TIERLOCK_SRC_LOCK_ENTRY_H_
#define TIERLOCK_SRC_LOCK_ENTRY_H_

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mutex.h"
#include "platform/platform.h"
#include "tierlock/guard.h"
#include "tierlock/mode.h"

namespace tierlock::internal {

struct HandlePaths {
  std::filesystem::path directory;
  std::filesystem::path lock_file;
};

// Returns the number of fork()s between the process's start and now, as seen
// by this process (the child's atfork handler increments it).
std::uint64_t fork_generation();

class LockFile {
 public:
  explicit LockFile(platform::OpenedLockFile opened) noexcept;
  LockFile(LockFile&& other) noexcept;
  LockFile& operator=(LockFile&&) = delete;
  LockFile(const LockFile&) = delete;
  ~LockFile();  // closes the descriptor; never LOCK_UN (see fork handling)

  absl::Status lock(Mode mode) const;
  absl::StatusOr<bool> try_lock(Mode mode) const;
  absl::Status unlock() const;

  const platform::FileId& id() const { return id_; }
  platform::NativeHandle handle() const { return handle_; }
  const HandlePaths& paths() const { return paths_; }
  const std::filesystem::path& path() const { return paths_.lock_file; }
  bool read_only() const { return read_only_; }

 private:
  platform::NativeHandle handle_;
  platform::FileId id_;
  HandlePaths paths_;
  bool read_only_;
};

// What an acquire may do while it waits (grows with timed/cancellable waits).
struct WaitPolicy {
  bool wait = true;  // false: a try, never blocks
};

// LockEntry
//
// One per lock-file identity per process (see RegistryImpl). Invariants, under
// mu_:
//   - shared_owners_ non-empty  => kernel_ == kShared, !exclusive_held_
//   - exclusive_held_           => kernel_ == kExclusive
//   - queue non-empty           => its head is the leader (blocked in the
//                                  kernel), or some thread holds the lock
//                                  (whose release dispatches the queue)
//   - no holders, empty queue   => kernel_ == kNone
// The kernel mode only changes while no thread of this process holds the lock,
// so flock's non-atomic conversion never opens a window inside a critical
// section.
class LockEntry {
 public:
  LockEntry(LockFile file, std::uint64_t generation) noexcept;
  ~LockEntry();  // unregisters from the registry (O(1)) unless inherited over fork()

  LockEntry(const LockEntry&) = delete;
  LockEntry& operator=(const LockEntry&) = delete;

  // Acquires `self` (which must own this entry) for the calling thread. With
  // policy.wait, never returns an empty optional. kFailedPrecondition if the
  // calling thread already holds it.
  static absl::StatusOr<std::optional<Guard>> acquire(
      std::shared_ptr<LockEntry> self, Mode mode, WaitPolicy policy);

  // Releases one hold of `mode` taken by `owner` (the acquiring thread).
  absl::Status release(Mode mode, std::thread::id owner);

  // Lockable support: a hold owned by the process rather than by a Guard. The
  // entry keeps itself alive (through `self`) while such holds exist.
  static absl::StatusOr<bool> lockable_acquire(
      const std::shared_ptr<LockEntry>& self, Mode mode, WaitPolicy policy);
  absl::Status lockable_release(Mode mode);

  // True when this entry was inherited from the parent over fork().
  bool stale() const { return generation_ != fork_generation(); }

  const LockFile& file() const { return file_; }
  const platform::FileId& id() const { return file_.id(); }

  // Diagnostics and tests.
  std::size_t waiting() const;   // threads queued in-process
  bool kernel_held() const;      // this process holds the kernel lock
  std::size_t holders() const;   // in-process holds (either mode)

 private:
  enum class Kernel { kNone, kShared, kExclusive };
  struct Waiter {
    Waiter(Mode m, std::thread::id t) : mode(m), thread(t) {}
    const Mode mode;
    const std::thread::id thread;
    std::condition_variable cv;
    Waiter* next = nullptr;
    Waiter* prev = nullptr;
    bool granted = false;
    bool leader = false;  // must take the kernel lock itself, blocking
    absl::Status error;   // set (instead of granted) when the kernel refused
  };

  absl::StatusOr<bool> acquire_hold(Mode mode, WaitPolicy policy,
                                    std::thread::id self);
  absl::StatusOr<bool> acquire_uncontended_locked(Mode mode,
                                                  std::thread::id self)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool holds_locked(std::thread::id thread) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool free_locked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !exclusive_held_ && shared_owners_.empty();
  }
  void grant_locked(Mode mode, std::thread::id thread)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the kernel lock in `mode` without blocking, converting the mode
  // this process holds if any; on failure holds nothing in the kernel.
  absl::StatusOr<bool> take_kernel_locked(Mode mode)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status unlock_kernel_locked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status release_hold_locked(Mode mode, std::thread::id owner,
                                   bool any_owner)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Grants what can be granted from the head of the queue, or elects the
  // head as leader to block in the kernel. mu_ must be held.
  void dispatch_locked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void push_back_locked(Waiter* w)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void remove_locked(Waiter* w)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  LockFile file_;
  const std::uint64_t generation_;

  mutable Mutex mu_;
  Kernel kernel_ ABSL_GUARDED_BY(mu_) = Kernel::kNone;  // what file_ holds in the kernel
  bool exclusive_held_ ABSL_GUARDED_BY(mu_) = false;
  std::thread::id exclusive_owner_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread::id> shared_owners_ ABSL_GUARDED_BY(mu_);  // one element per shared hold
  Waiter* head_ ABSL_GUARDED_BY(mu_) = nullptr;  // FIFO queue, intrusive: waiters live on their
  Waiter* tail_ ABSL_GUARDED_BY(mu_) = nullptr;  // threads' stacks, so queueing never allocates
  std::size_t waiting_ ABSL_GUARDED_BY(mu_) = 0;
  std::size_t lockable_holds_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<LockEntry> self_ ABSL_GUARDED_BY(mu_);  // set while lockable_holds_ > 0
};

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_LOCK_ENTRY_H_

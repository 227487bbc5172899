// src/queue/lock_entry.h
//
// The queue (internal):
//   LockEntry   - a registry entry: a LockFile plus the in-process FIFO queue
//                 that decides which threads hold it and when the kernel lock
//                 is taken and released.
//   EntryHold   - one hold on an entry as the queue hands it back (the api
//                 wraps it into the public Guard).
// (LockFile, the descriptor under an entry: lock_file.h.)
#ifndef TIERLOCK_SRC_QUEUE_LOCK_ENTRY_H_
#define TIERLOCK_SRC_QUEUE_LOCK_ENTRY_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/fork_generation.h"
#include "base/mutex.h"
#include "base/thread_key.h"
#include "holders/holder_writer.h"
#include "platform/platform.h"
#include "queue/lock_file.h"
#include "tierlock/executor.h"
#include "tierlock/mode.h"
#include "tierlock/tier.h"

namespace tierlock::internal {

struct PoolState;
class LockEntry;
class EntryHold;

// What an acquire may do while it waits.
struct WaitPolicy {
  using Clock = std::chrono::steady_clock;
  // Builds the status of a wait on `entry` that was cancelled (kCancelled)
  // or ran out of time (kDeadlineExceeded, also a single try that found it
  // held) after `waited`. The queue reports only the code and the duration:
  // naming the holders is the caller's business.
  using WaitFailed = absl::Status (*)(const LockEntry& entry,
                                      absl::StatusCode code, Mode mode,
                                      Clock::duration waited);
  bool wait = true;                           // false: a try, never blocks
  std::optional<Clock::time_point> deadline;  // nullopt: no limit
  std::stop_token stop;
  // The acquiring handle's tier, for the holder record.
  std::optional<Tier> tier;
  // Null: a status naming only the lock file, the code and the duration.
  WaitFailed wait_failed = nullptr;
  // Called when the acquire joins the entry's queue (it has to wait), at
  // most once per acquire, with the entry's mutex held: it may only
  // schedule (post a task, set a timer), never block or take an entry.
  std::function<void()> queued;
};

// LockEntry
//
// One per lock-file identity per process (see RegistryImpl). Invariants, under
// mu_:
//   - shared_owners_ non-empty  => kernel_ == kShared, !exclusive_held_
//   - exclusive_held_           => kernel_ == kExclusive
//   - queue non-empty           => its head is the leader (about to block, or
//                                  blocked, in the kernel), or some thread
//                                  holds the lock (whose release dispatches)
//   - no holders, empty queue   => kernel_ == kNone
// The kernel mode only changes while no thread of this process holds the lock,
// so flock's non-atomic conversion never opens a window inside a critical
// section.
//
// Replaced lock files: after every kernel grant the entry checks that its
// path still names its file (LockFile::check_path). If the file was deleted
// or replaced meanwhile, the grant excludes nobody who opens the path now, so
// it is not reported: the entry unlocks, becomes *replaced* (holding nothing,
// its queue emptied: every queued waiter is failed with a "replaced" status)
// and stays so. Every acquire that finds a replaced entry, and every failed
// waiter, redoes its acquire on the successor: the entry of the file the path
// names now (successor_of opens, or creates, it). So in-process waiters end up
// queued on the new file's entry, in the order they retry. A replaced entry
// is never granted again unless the path comes to name its file once more
// (renamed back), which revives it.
class LockEntry {
 public:
  using Clock = std::chrono::steady_clock;
  using Done = absl::AnyInvocable<void(absl::StatusOr<EntryHold>) &&>;

  LockEntry(LockFile file, std::uint64_t generation) noexcept;
  ~LockEntry();  // unregisters from the registry (O(1)) unless inherited over
                 // fork()

  LockEntry(const LockEntry&) = delete;
  LockEntry& operator=(const LockEntry&) = delete;

  // Acquires `self` (which must own this entry) for the calling thread.
  // Returns an empty optional only for a try (policy.wait false) that found
  // it held. kFailedPrecondition if the calling thread already holds it;
  // kCancelled / kDeadlineExceeded (holding nothing) per the policy.
  static absl::StatusOr<std::optional<EntryHold>> acquire(
      std::shared_ptr<LockEntry> self, Mode mode, const WaitPolicy& policy);
  // As acquire, for a waiting acquire: never an empty optional, and a
  // single try (policy.wait false with a deadline) that finds it held is
  // kDeadlineExceeded (built by policy.wait_failed).
  static absl::StatusOr<EntryHold> acquire_wait(std::shared_ptr<LockEntry> self,
                                                Mode mode,
                                                const WaitPolicy& policy);

  // Queues an acquire that occupies no thread while it waits in-process; the
  // pool waits in the kernel for it if needed and runs `done` (on
  // `executor` if given). Never blocks.
  static void acquire_async(std::shared_ptr<LockEntry> self, Mode mode,
                            WaitPolicy policy, std::shared_ptr<PoolState> pool,
                            Executor* executor, Done done);

  // Releases one hold of `mode` taken by `owner` (the acquiring thread).
  absl::Status release(Mode mode, ThreadKey owner);

  // Lockable support: a hold owned by the process rather than by an
  // EntryHold. The
  // entry keeps itself alive (through `self`) while such holds exist. Returns
  // false for a try or a deadline that did not get it.
  // `self` becomes the entry that took the hold (its successor if the lock
  // file turned out replaced).
  static absl::StatusOr<bool> lockable_acquire(std::shared_ptr<LockEntry>& self,
                                               Mode mode,
                                               const WaitPolicy& policy);
  absl::Status lockable_release(Mode mode);

  // True when this entry was inherited from the parent over fork().
  bool stale() const { return generation_ != fork_generation(); }

  // True once a grant found the lock file deleted or replaced (see the class
  // comment); acquires then go to successor_of(). Lock-free.
  bool replaced() const {
    return replaced_flag_.load(std::memory_order_acquire);
  }
  // Returns the entry to lock instead of `e`: `e` itself unless replaced,
  // else the entry of the file its path names now (opening or creating it,
  // never following a symlink), following further replacements. Blocks only
  // on those syscalls. Errors: those of open_lock_file, or kAborted if the
  // file keeps being replaced.
  static absl::StatusOr<std::shared_ptr<LockEntry>> current(
      std::shared_ptr<LockEntry> e);

  const LockFile& file() const { return file_; }
  const platform::FileId& id() const { return file_.id(); }
  // One word per lock file that the layers above may cache a value of their
  // own in (the api keeps the file's learned-order node there); 0 until they
  // set it. The queue never reads it.
  std::atomic<std::uint32_t>& tag() const { return tag_; }

  // Diagnostics and tests.
  std::size_t waiting() const;  // waiters queued in-process
  bool kernel_held() const;     // this process holds the kernel lock
  std::size_t holders() const;  // in-process holds (either mode)

 private:
  enum class Kernel { kNone, kShared, kExclusive };
  struct AsyncWaiter;
  // A queued acquire. Sync waiters live on their thread's stack; async ones
  // are AsyncWaiter, owned by shared_ptr. All fields are guarded by mu_.
  struct Waiter {
    Waiter(Mode m, ThreadKey t) : mode(m), thread(t) {}
    const Mode mode;
    const ThreadKey thread;    // zero for async waiters: no owner thread
    std::optional<Tier> tier;  // for the holder record
    Waiter* next = nullptr;
    Waiter* prev = nullptr;
    bool queued = false;
    bool granted = false;
    bool leader = false;     // must take the kernel lock itself, blocking
    bool in_kernel = false;  // leader inside kernel_wait->lock()
    bool woken =
        false;  // sync exclusive head: the lock is free, come and take it
    Clock::time_point since;  // when it was queued (sync waiters)
    bool stopped = false;     // cancelled or timed out; see stop_code
    absl::StatusCode stop_code = absl::StatusCode::kOk;
    absl::Status error;  // set (instead of granted) when the kernel refused
    platform::InterruptibleWait* kernel_wait = nullptr;
    AsyncWaiter* async = nullptr;
    bool completion_posted = false;  // async: its completion is exactly once
    std::condition_variable cv;      // sync waiters only
  };
  // Stop-callback body: cancels (kCancelled) or expires a waiter.
  struct StopWaiter {
    LockEntry* entry;
    Waiter* waiter;
    absl::StatusCode code;
    void operator()() const noexcept;
  };

  // Takes a hold for `self`: the uncontended case inline, under one lock;
  // waiting in acquire_slow.
  absl::StatusOr<bool> acquire_hold(Mode mode, const WaitPolicy& policy,
                                    ThreadKey self);
  absl::StatusOr<bool> acquire_slow(Mode mode, const WaitPolicy& policy,
                                    ThreadKey self);
  absl::Status reentry_error(Mode mode) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<bool> acquire_uncontended_locked(
      Mode mode, ThreadKey self, const std::optional<Tier>& tier)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The leader's kernel wait. Returns with `w` granted (OK) or removed from
  // the queue with nothing held (the error); dispatches either way.
  absl::StatusOr<bool> lead_locked(Waiter& w, const WaitPolicy& policy)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void stop_locked(Waiter* w, absl::StatusCode code)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Wakes `w` after a change of its state: notifies a sync waiter; posts an
  // async waiter's next step to its pool.
  void wake_locked(Waiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void run_async_leader(const std::shared_ptr<AsyncWaiter>& w);
  static void complete_async(const std::shared_ptr<AsyncWaiter>& w);
  // The kCancelled / kDeadlineExceeded status, built by policy.wait_failed.
  absl::Status wait_failed(const WaitPolicy& policy, absl::StatusCode code,
                           Mode mode, Clock::duration waited) const
      ABSL_LOCKS_EXCLUDED(mu_);

  bool holds_locked(ThreadKey thread) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool free_locked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !exclusive_held_ && shared_owners_.empty();
  }
  void grant_locked(Mode mode, ThreadKey thread)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True when a new exclusive request may take the lock ahead of a woken
  // head that has not claimed it yet (see "Fairness" in dir_lock.h).
  bool may_barge_locked(Mode mode) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the kernel lock in `mode` without blocking, converting the mode
  // this process holds if any; on failure holds nothing in the kernel.
  absl::StatusOr<bool> take_kernel_locked(Mode mode,
                                          const std::optional<Tier>& tier)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status unlock_kernel_locked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a kernel grant (mu_ held, nothing recorded yet): OK if the path
  // still names the file; otherwise releases the kernel lock and returns why:
  // the replaced status (after retire_locked), or the lookup's error.
  absl::Status verify_grant_locked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the entry replaced and fails every queued waiter with `why`.
  void retire_locked(const absl::Status& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status replaced_status() const;
  // Takes a hold as acquire_hold does, on `self` or, when `self` turns out
  // replaced, on its successor (updating `self`).
  static absl::StatusOr<bool> hold_current(std::shared_ptr<LockEntry>& self,
                                           Mode mode, const WaitPolicy& policy,
                                           ThreadKey thread);
  static absl::StatusOr<std::shared_ptr<LockEntry>> successor_of(
      const std::shared_ptr<LockEntry>& e);
  absl::Status release_hold_locked(Mode mode, ThreadKey owner, bool any_owner)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Grants what can be granted from the head of the queue, or elects the
  // head as leader to block in the kernel.
  void dispatch_locked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void push_back_locked(Waiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void remove_locked(Waiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  LockFile file_;
  const std::uint64_t generation_;
  mutable std::atomic<std::uint32_t> tag_{0};

  mutable Mutex mu_;
  Kernel kernel_ ABSL_GUARDED_BY(mu_) = Kernel::kNone;  // what file_ holds
  bool exclusive_held_ ABSL_GUARDED_BY(mu_) = false;
  ThreadKey exclusive_owner_ ABSL_GUARDED_BY(mu_);
  // One element per shared hold: the acquiring thread (zero for async).
  std::vector<ThreadKey> shared_owners_ ABSL_GUARDED_BY(mu_);
  // FIFO queue, intrusive: queueing never allocates.
  Waiter* head_ ABSL_GUARDED_BY(mu_) = nullptr;
  Waiter* tail_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::size_t waiting_ ABSL_GUARDED_BY(mu_) = 0;
  std::size_t lockable_holds_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<LockEntry> self_
      ABSL_GUARDED_BY(mu_);  // while lockable_holds_ > 0
  // Names this process as a holder while it holds the kernel lock: updated
  // with every kernel acquire and release (plain stores, no syscall).
  HolderRecordFile record_ ABSL_GUARDED_BY(mu_);
  // The lock file was deleted or replaced (see the class comment): written
  // under mu_, read without it by replaced().
  bool replaced_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> replaced_flag_{false};
  // The entry of the file that replaced this one, once known. Strong: a
  // handle of this entry keeps using it. No cycles: an entry that is
  // revived drops its own successor.
  std::shared_ptr<LockEntry> successor_ ABSL_GUARDED_BY(mu_);
};

// EntryHold
//
// One hold on a LockEntry: move-only; released (LockEntry::release) when
// destroyed, unless handed on with take(). The api wraps it into the public
// Guard, which adds the tier bookkeeping; a completion an executor drops
// destroys it, which releases the lock. In a fork()ed child it is inert: the
// hold is the parent's, never released there.
class EntryHold {
 public:
  EntryHold() noexcept = default;
  EntryHold(std::shared_ptr<LockEntry> entry, Mode mode,
            ThreadKey owner) noexcept
      : entry_(std::move(entry)), mode_(mode), owner_(owner) {}
  EntryHold(EntryHold&& other) noexcept = default;
  EntryHold& operator=(EntryHold&& other) noexcept {
    if (this != &other) {
      (void)release();
      entry_ = std::move(other.entry_);
      mode_ = other.mode_;
      owner_ = other.owner_;
    }
    return *this;
  }
  EntryHold(const EntryHold&) = delete;
  EntryHold& operator=(const EntryHold&) = delete;
  ~EntryHold() {
    if (entry_ != nullptr) (void)release();
  }

  // Releases the hold (nothing in a fork()ed child); idempotent.
  absl::Status release() {
    std::shared_ptr<LockEntry> entry = std::move(entry_);
    if (entry == nullptr || entry->stale()) return absl::OkStatus();
    return entry->release(mode_, owner_);
  }

  Mode mode() const { return mode_; }
  ThreadKey owner() const { return owner_; }
  // Hands the hold on without releasing it: the caller owns it from now on.
  std::shared_ptr<LockEntry> take() && noexcept { return std::move(entry_); }

 private:
  std::shared_ptr<LockEntry> entry_;  // null: holds nothing
  Mode mode_ = Mode::kExclusive;
  ThreadKey owner_;
};

// True for the status of an acquire that found its lock file replaced; the
// acquire is redone on LockEntry::current(). Never returned to callers.
bool is_replaced(const absl::Status& status);

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_QUEUE_LOCK_ENTRY_H_

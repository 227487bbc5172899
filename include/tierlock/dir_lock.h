// tierlock/dir_lock.h
//
// Defines the directory lock, tierlock's main type:
//   LockOptions - how a directory's lock file is named and whether to create
//                 the directory.
//   DirLock     - a cheap, copyable handle onto one directory's lock;
//                 acquires return Guards.
//   acquire_all - several DirLocks at once, all or nothing, in a canonical
//                 order.
#ifndef TIERLOCK_DIR_LOCK_H_
#define TIERLOCK_DIR_LOCK_H_

#include <chrono>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tierlock/acquire_options.h"
#include "tierlock/executor.h"
#include "tierlock/guard.h"
#include "tierlock/holder.h"
#include "tierlock/mode.h"
#include "tierlock/source_location.h"
#include "tierlock/tier.h"

namespace tierlock {

// LockOptions
//
// Options for DirLock::open.
struct LockOptions {
  // The lock file's name inside the directory: a plain file name. Empty, ".",
  // "..", or a name containing '/' or NUL is rejected with kInvalidArgument.
  std::string lock_file_name = ".lock";
  // Create the directory (one level: its parent must exist) if it is missing.
  bool create_directory = false;
  // The lock's tier, for lock-order checks (tier.h); nullopt: untiered.
  // The name is copied.
  std::optional<Tier> tier;
  // Refuse a lock file that a user other than the caller and root could
  // delete or replace (see DirLock::unsafe_reason): open() fails with
  // kFailedPrecondition naming why. Off by default, because shared
  // world-writable directories are common; then the risk is only reported.
  bool refuse_unsafe_lock_file = false;
};

// DirLock
//
// Locks a directory against other processes and against other threads of this
// process, exclusively or shared. The lock is a sidecar file in the directory
// (LockOptions::lock_file_name, default ".lock") held with flock(2). tierlock
// creates the file if it is missing and never truncates, deletes, chmods or
// follows a symlink to it; it must be a regular file.
//
// How it works: every DirLock of one lock file (the same inode, however it is
// reached: another path, a symlinked directory, a bind mount or a hard link)
// shares one process-wide entry (diagnostics.h counts them) which owns the
// single open descriptor and an in-process FIFO queue. The kernel lock is taken
// once for the whole process; threads of the process queue in front of it. A
// released lock is handed to the next in-process waiter of the same mode
// without a syscall while the queue is not empty; when the queue drains, the
// kernel lock is released.
//
// Fairness: queued in-process waiters are granted in arrival order, with
// consecutive shared waiters granted together; a shared request never
// overtakes a queued exclusive one. On release the head waiter is woken and
// the lock left free until it takes it; an exclusive request arriving in that
// moment may take it first (as with std::mutex, this avoids a lock convoy),
// but once the head has waited 1 ms it is handed the lock directly, so no
// waiter starves. Between processes, ordering is the kernel's (flock has
// none).
//
// Thread-safety: all members are safe to call concurrently, on one handle or on
// copies. Copying is cheap (two reference counts).
//
// Re-entry: a thread that holds the lock (either mode) and asks for it again
// gets kFailedPrecondition at once, never a hang.
//
// Errors (absl::Status codes; every message names the operation, the path and
// the reason, e.g. "open '/w/.lock': Permission denied"):
//   kNotFound           the directory does not exist (and create_directory is
//                       off).
//   kUnimplemented      the directory exists but its filesystem does not
//                       create the lock file (ENOENT from O_CREAT, e.g. /proc):
//                       "create lock file '/proc/.lock': No such file or
//                       directory (the directory exists, but its filesystem
//                       does not allow creating the file)".
//   kInvalidArgument    the path is not a directory; the lock file name is bad;
//                       the lock file is a symlink, directory, FIFO, socket or
//                       device (anything but a regular file).
//   kPermissionDenied   no permission to open or create the lock file.
//   kResourceExhausted  out of file descriptors or memory.
//   kFailedPrecondition re-entry by the holding thread; open() with
//                       refuse_unsafe_lock_file of a lock file that another
//                       user can delete or replace (the reason is named).
//   kAborted            the lock file was deleted or replaced 100 times in a
//                       row while one acquire was locking it.
//   kUnimplemented /    flock(2) is not supported by the filesystem
//   kUnavailable        (EOPNOTSUPP / ENOLCK): never reported as acquired.
// Where two causes share a code, error_kind() (error.h) tells them apart:
// kNotADirectory, kBadLockFileName, kNotARegularFile, kSelfDeadlock,
// kTierViolation, kTimeout, kCancelled, kUnsafeLockFile, kUnsupported,
// kInvalidOption.
//
// fork(): handles inherited by a child keep working there. The first acquire
// in the child opens a new descriptor (a new open file description of the same
// inode), so the child's lock is its own and excludes the parent.
//
// Example:
//   absl::StatusOr<tierlock::DirLock> lock =
//       tierlock::DirLock::open("/ws/build");
//   if (!lock.ok()) return lock.status();
//   absl::StatusOr<tierlock::Guard> guard = lock->acquire();
//   if (!guard.ok()) return guard.status();
//   ... the directory is ours until guard is released or destroyed ...
class DirLock {
 public:
  // Opens the lock of `dir`, creating the lock file if it is missing. Does not
  // lock anything and does not block. The directory is canonicalised here,
  // once; later acquires lock through the handle's open descriptor.
  //
  // Deleted or replaced lock files: after every kernel grant, tierlock checks
  // (one lstat of the canonical lock file path) that the path still names the
  // file it locked. A grant on a file that was deleted or replaced meanwhile
  // excludes nobody who opens the path now, so it is dropped and the acquire
  // is redone on the file the path names now (created if missing), as a new
  // open would; in-process waiters follow. A file deleted while it is held
  // cannot be detected in time: see unsafe_reason().
  static absl::StatusOr<DirLock> open(const std::filesystem::path& dir,
                                      LockOptions options = {});

  // Acquires the lock, blocking until it is granted, the timeout passes
  // (kDeadlineExceeded) or a stop is requested (kCancelled); see
  // AcquireOptions. A timeout or cancel returns promptly (a thread blocked in
  // the kernel is interrupted, see config.h) and leaves nothing held: this
  // process neither holds the kernel lock for the waiter nor takes it later
  // on its behalf, and the waiter leaves the FIFO queue without disturbing
  // the others. Both messages name the lock file and how long it waited; a
  // timeout also names the holders the kernel reports (pids from
  // /proc/locks, which can take milliseconds to read, and their programs,
  // see holders()), a cancel only says
  // whether this process or another one holds it (it must return promptly).
  // kFailedPrecondition at once if this thread already holds it.
  //
  // Tier checks (tier.h): when on, the acquire is checked against the
  // current LockContext before it waits (kFailedPrecondition in kFail mode,
  // taking nothing) and the hold is recorded there with `where`, the call
  // site. This applies to every acquire below, including try_acquire.
  //
  // options.pool and options.executor belong to acquire_async: a blocking
  // acquire has no use for them, so setting either is kInvalidArgument
  // (ErrorKind::kInvalidOption) naming the option and the lock file, taking
  // nothing, as LeaseLock::acquire does.
  absl::StatusOr<Guard> acquire(
      AcquireOptions options = {},
      SourceLocation where = SourceLocation::current());
  // Acquires in `mode`, blocking without limit.
  absl::StatusOr<Guard> acquire(
      Mode mode, SourceLocation where = SourceLocation::current());
  // Acquires, giving up with kDeadlineExceeded after `timeout` (<= 0: one try).
  absl::StatusOr<Guard> acquire_for(
      std::chrono::nanoseconds timeout, Mode mode = Mode::kExclusive,
      SourceLocation where = SourceLocation::current());

  // Acquires without blocking the caller. The wait occupies no thread while
  // it is in-process; only the head of the queue, while another process
  // holds the lock, occupies a thread of `options.pool` (blocked in the
  // kernel, interruptibly). The result is delivered to the future. If the
  // future is dropped, a lock granted later is released, not leaked.
  // Outcomes and errors are those of acquire(); FIFO order with every other
  // waiter of this process. Async holds have no owning thread, so re-entry
  // is not detected for them. Tier checks use the caller's LockContext at
  // the call (checked then; the hold is recorded there when granted).
  std::future<absl::StatusOr<Guard>> acquire_async(
      AcquireOptions options = {},
      SourceLocation where = SourceLocation::current());
  // The future is made ready on `options.executor` when one is given (else on
  // a pool thread): whatever the executor runs after set_value (a
  // continuation it chains) runs there too.
  //
  // As above, calling `done` with the result on `options.executor` (or on a
  // pool thread). If `done` never runs because the pool or executor shuts
  // down, a granted lock is released.
  void acquire_async(AcquireOptions options,
                     absl::AnyInvocable<void(absl::StatusOr<Guard>) &&> done,
                     SourceLocation where = SourceLocation::current());

  // Acquires the lock if that is possible without waiting. Returns an empty
  // optional when someone else holds it (another process, another thread, or
  // an earlier in-process waiter): contention is an outcome, not an error.
  // Never blocks.
  absl::StatusOr<std::optional<Guard>> try_acquire(
      Mode mode = Mode::kExclusive,
      SourceLocation where = SourceLocation::current());

  // Returns the processes that hold this lock now (this one included), as
  // inspect_lock (holder.h) does: the kernel's lock table decides who holds
  // it, holder records and /proc name them. Reads /proc/locks, which can
  // take milliseconds; takes and changes nothing. kUnavailable if the lock
  // table cannot be read.
  absl::StatusOr<std::vector<Holder>> holders() const;

  // Returns why a user other than the caller and root could delete or
  // replace the lock file, or an empty string if nobody else can. A lock file
  // that is deleted while held stops excluding: the next acquirer creates a
  // new file and runs beside the holder. Unsafe: a directory writable by its
  // group or others without the sticky bit; a directory owned by another
  // user (not root); in a sticky directory writable by group or others (like
  // /tmp), a lock file owned by another user (not root). The reason names
  // the path, the owner uids and the directory's mode, e.g. "'/tmp/x/.lock'
  // is owned by uid 1001, neither the caller (uid 1000) nor root, in the
  // sticky directory '/tmp/x' (mode 1777, writable by every user): its owner
  // can delete it while it is held". Computed from the owners and modes seen
  // when this process opened the file (one fstat of the directory), not
  // refreshed; does not block. Windows: always empty (ACLs are not
  // evaluated).
  std::string unsafe_reason() const;

  // Returns the directory's canonical absolute path (as resolved at open).
  const std::filesystem::path& directory() const;
  // Returns the lock file's path: directory() / lock_file_name.
  const std::filesystem::path& lock_file() const;
  // Returns the tier given at open (nullopt: untiered). The name's storage
  // lives until the process exits.
  std::optional<Tier> tier() const {
    if (!tiered_) return std::nullopt;
    return tier_;
  }

  // Standard Lockable / SharedLockable / TimedLockable members, so
  // std::scoped_lock, std::unique_lock and std::shared_lock work. They block
  // like acquire() and try_acquire() and cannot return a Status: on any
  // error they throw std::system_error whose code is the errno-like reason
  // and whose what() names the path and the reason (re-entry throws with
  // std::errc::resource_deadlock_would_occur). A timeout is not an error:
  // try_lock_for / try_lock_until return false. unlock() / unlock_shared() on
  // a lock this process does not hold in that mode throw
  // std::errc::operation_not_permitted. A hold taken through these members is
  // held by the process until unlock(), whichever thread calls it.
  // A tier violation in kFail mode throws with
  // std::errc::resource_deadlock_would_occur. Through std::scoped_lock and
  // friends the recorded call site is inside the standard library.
  using Where = SourceLocation;
  void lock(Where where = Where::current());
  bool try_lock(Where where = Where::current());
  void unlock();
  void lock_shared(Where where = Where::current());
  bool try_lock_shared(Where where = Where::current());
  void unlock_shared();
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout,
                    Where where = Where::current()) {
    return timed_lock(Mode::kExclusive, to_deadline(timeout), where);
  }
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& t,
                      Where where = Where::current()) {
    return timed_lock(Mode::kExclusive, to_deadline(t - Clock::now()), where);
  }
  template <class Rep, class Period>
  bool try_lock_shared_for(const std::chrono::duration<Rep, Period>& timeout,
                           Where where = Where::current()) {
    return timed_lock(Mode::kShared, to_deadline(timeout), where);
  }
  template <class Clock, class Duration>
  bool try_lock_shared_until(const std::chrono::time_point<Clock, Duration>& t,
                             Where where = Where::current()) {
    return timed_lock(Mode::kShared, to_deadline(t - Clock::now()), where);
  }

 private:
  // The library's side of the handle (pimpl, defined in the library): the
  // lock file's process-wide entry and this handle's paths, and the acquire
  // paths that work on them. Copies share it, so a copy costs one count.
  class Impl;
  friend absl::StatusOr<std::vector<Guard>> acquire_all(
      std::span<const DirLock>, AcquireOptions, SourceLocation);
  explicit DirLock(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

  template <class Rep, class Period>
  static std::chrono::steady_clock::time_point to_deadline(
      const std::chrono::duration<Rep, Period>& d) {
    return std::chrono::steady_clock::now() +
           std::chrono::ceil<std::chrono::steady_clock::duration>(d);
  }
  bool timed_lock(Mode mode, std::chrono::steady_clock::time_point deadline,
                  Where where);
  bool lockable_lock(
      Mode mode, bool wait,
      std::optional<std::chrono::steady_clock::time_point> deadline,
      Where where);

  std::shared_ptr<const Impl> impl_;
  Tier tier_;  // name points at interned storage (never freed)
  bool tiered_ = false;
};

// Acquires every lock of `locks` in one call, all or nothing, in a canonical
// order: by tier level (untiered last), then by lock file path, so two calls
// over the same locks can never deadlock each other. Locks of the same tier
// may be taken together here (a second lock of a held tier is otherwise a
// violation); the first must still be above every tier the context holds.
// `options` apply to each acquire (the mode to all; a timeout bounds the
// whole call; the stop token ends it). Blocks like acquire(). Returns the
// Guards in the order of `locks`. On any failure (timeout, cancel, tier
// violation in kFail mode, an error) the locks already taken are released
// before it returns, and the status names the lock that failed.
// kInvalidArgument if two handles are the same lock file; as for acquire(),
// options.pool and options.executor are kInvalidArgument. Takes a
// span<const DirLock>: a std::vector<DirLock>, an array or a span of
// (const) handles converts to it.
absl::StatusOr<std::vector<Guard>> acquire_all(
    std::span<const DirLock> locks, AcquireOptions options = {},
    SourceLocation where = SourceLocation::current());

}  // namespace tierlock

#endif  // TIERLOCK_DIR_LOCK_H_

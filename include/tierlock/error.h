// tierlock/error.h
//
// Defines the machine-readable cause of a tierlock error:
//   ErrorKind        - why an acquire, open or lease call failed, finer than
//                      its absl::StatusCode.
//   error_kind       - reads it from a returned absl::Status.
//   error_kind_name  - a stable lowercase name for logs and scripts.
//   kErrorKindPayloadUrl - the absl::Status payload that carries it.
#ifndef TIERLOCK_ERROR_H_
#define TIERLOCK_ERROR_H_

#include <string_view>

#include "absl/status/status.h"

namespace tierlock {

// ErrorKind
//
// Several causes share one absl::StatusCode ("not a directory" and "bad lock
// file name" are both kInvalidArgument; re-entry and a tier violation are both
// kFailedPrecondition). tierlock attaches the cause to the Status it returns
// as a payload, so callers branch on it instead of on message text, which is
// for people and may change. The code stays the primary classification:
// every kind is listed below with the code it comes with. A Status tierlock
// did not classify (a syscall's errno, a backend's failure), an OK status,
// or one built by someone else reads kUnclassified.
//
// Kinds are only ever added; the numeric values and the names are stable.
enum class ErrorKind {
  kUnclassified = 0,
  // kInvalidArgument: the path given as the directory is not one.
  kNotADirectory = 1,
  // kInvalidArgument: LockOptions::lock_file_name is empty, ".", "..", or has
  // '/' or NUL in it.
  kBadLockFileName = 2,
  // kInvalidArgument: the lock file is a symlink, directory, FIFO, socket or
  // device: anything but a regular file (never followed or opened).
  kNotARegularFile = 3,
  // kFailedPrecondition: open() with refuse_unsafe_lock_file, and another
  // user can delete or replace the lock file.
  kUnsafeLockFile = 4,
  // kFailedPrecondition: the calling thread (or task, with tier checks on)
  // already holds the lock; waiting for itself would deadlock.
  kSelfDeadlock = 5,
  // kFailedPrecondition: the acquire breaks the lock order (TierCheckMode
  // kFail; tier.h).
  kTierViolation = 6,
  // kDeadlineExceeded: AcquireOptions::timeout passed; nothing is held.
  kTimeout = 7,
  // kCancelled: AcquireOptions::stop was requested; nothing is held.
  kCancelled = 8,
  // kInvalidArgument: an option that cannot apply to this call (pool or
  // executor on a blocking acquire or a lease; the same lock file twice in
  // acquire_all).
  kInvalidOption = 9,
};

// The type URL of the payload: its value is error_kind_name(kind).
inline constexpr std::string_view kErrorKindPayloadUrl =
    "type.tierlock.dev/tierlock.ErrorKind";

// Returns the kind `status` carries, or kUnclassified. Never blocks.
ErrorKind error_kind(const absl::Status& status);

// Returns the kind's stable name: "not_a_directory", "bad_lock_file_name",
// ..., "unclassified".
std::string_view error_kind_name(ErrorKind kind);

}  // namespace tierlock

#endif  // TIERLOCK_ERROR_H_

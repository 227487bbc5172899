// src/base/error_kind.h
//
// Setting the public ErrorKind (tierlock/error.h) on a Status (internal).
//   with_kind    - attaches a kind.
//   with_kind_of - copies the kind of another Status (an error rewrapped).
#ifndef TIERLOCK_SRC_BASE_ERROR_KIND_H_
#define TIERLOCK_SRC_BASE_ERROR_KIND_H_

#include "absl/status/status.h"
#include "tierlock/error.h"

namespace tierlock::internal {

// Returns `status` carrying `kind` (an OK status is returned unchanged).
absl::Status with_kind(absl::Status status, ErrorKind kind);

// Returns `status` carrying the kind of `from`, if it has one.
absl::Status with_kind_of(absl::Status status, const absl::Status& from);

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_BASE_ERROR_KIND_H_

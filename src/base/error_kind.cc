// ErrorKind as an absl::Status payload: the kind's name, under one URL.
#include "base/error_kind.h"

#include <string>
#include <utility>

#include "absl/strings/cord.h"

namespace tierlock {
namespace {

constexpr ErrorKind kAll[] = {
    ErrorKind::kNotADirectory,   ErrorKind::kBadLockFileName,
    ErrorKind::kNotARegularFile, ErrorKind::kUnsafeLockFile,
    ErrorKind::kSelfDeadlock,    ErrorKind::kTierViolation,
    ErrorKind::kTimeout,         ErrorKind::kCancelled,
    ErrorKind::kInvalidOption,
};

}  // namespace

std::string_view error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kUnclassified:
      return "unclassified";
    case ErrorKind::kNotADirectory:
      return "not_a_directory";
    case ErrorKind::kBadLockFileName:
      return "bad_lock_file_name";
    case ErrorKind::kNotARegularFile:
      return "not_a_regular_file";
    case ErrorKind::kUnsafeLockFile:
      return "unsafe_lock_file";
    case ErrorKind::kSelfDeadlock:
      return "self_deadlock";
    case ErrorKind::kTierViolation:
      return "tier_violation";
    case ErrorKind::kTimeout:
      return "timeout";
    case ErrorKind::kCancelled:
      return "cancelled";
    case ErrorKind::kInvalidOption:
      return "invalid_option";
  }
  return "unclassified";
}

ErrorKind error_kind(const absl::Status& status) {
  if (status.ok()) return ErrorKind::kUnclassified;
  const auto payload = status.GetPayload(std::string(kErrorKindPayloadUrl));
  if (!payload.has_value()) return ErrorKind::kUnclassified;
  const std::string name(*payload);
  for (ErrorKind kind : kAll) {
    if (error_kind_name(kind) == name) return kind;
  }
  return ErrorKind::kUnclassified;
}

namespace internal {

absl::Status with_kind(absl::Status status, ErrorKind kind) {
  if (status.ok() || kind == ErrorKind::kUnclassified) return status;
  status.SetPayload(std::string(kErrorKindPayloadUrl),
                    absl::Cord(std::string(error_kind_name(kind))));
  return status;
}

absl::Status with_kind_of(absl::Status status, const absl::Status& from) {
  return with_kind(std::move(status), error_kind(from));
}

}  // namespace internal
}  // namespace tierlock

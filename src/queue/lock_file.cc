// LockFile: the one descriptor this process keeps per lock-file identity.
#include "queue/lock_file.h"

#include <utility>

namespace tierlock::internal {

LockFile::LockFile(platform::OpenedLockFile opened) noexcept
    : handle_(opened.handle),
      id_(opened.id),
      directory_id_(opened.directory_id),
      paths_{std::move(opened.directory), std::move(opened.lock_file)},
      read_only_(opened.read_only),
      unsafe_reason_(std::move(opened.unsafe_reason)) {}

LockFile::LockFile(LockFile&& other) noexcept
    : handle_(std::exchange(other.handle_, platform::kInvalidHandle)),
      id_(other.id_),
      directory_id_(other.directory_id_),
      paths_(std::move(other.paths_)),
      read_only_(other.read_only_),
      unsafe_reason_(std::move(other.unsafe_reason_)) {}

LockFile::~LockFile() {
  // Only close: after fork() the same open file description may carry the
  // parent's lock, and LOCK_UN would release it. Closing our last descriptor
  // releases a lock this process still held, as the kernel does at exit.
  platform::close_handle(handle_);
}

absl::Status LockFile::lock(Mode mode) const {
  return platform::lock(handle_, mode, paths_.lock_file);
}

absl::StatusOr<bool> LockFile::try_lock(Mode mode) const {
  return platform::try_lock(handle_, mode, paths_.lock_file);
}

absl::Status LockFile::unlock() const {
  return platform::unlock(handle_, paths_.lock_file);
}

}  // namespace tierlock::internal

// LockFile: the one descriptor this process keeps per lock-file identity.
#include <utility>

#include "lock_entry.h"

namespace tierlock::internal {

LockFile::LockFile(platform::OpenedLockFile opened) noexcept
    : handle_(opened.handle),
      id_(opened.id),
      paths_{std::move(opened.directory), std::move(opened.lock_file)},
      read_only_(opened.read_only) {}

LockFile::LockFile(LockFile&& other) noexcept
    : handle_(std::exchange(other.handle_, platform::kInvalidHandle)),
      id_(other.id_),
      paths_(std::move(other.paths_)),
      read_only_(other.read_only_) {}

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

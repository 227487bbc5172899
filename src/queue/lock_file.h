// src/queue/lock_file.h
//
// The descriptor under a registry entry (internal):
//   HandlePaths - the canonical directory and lock file a handle reports.
//   LockFile    - the one open descriptor onto one lock-file identity.
#ifndef TIERLOCK_SRC_QUEUE_LOCK_FILE_H_
#define TIERLOCK_SRC_QUEUE_LOCK_FILE_H_

#include <filesystem>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "platform/platform.h"
#include "tierlock/mode.h"

namespace tierlock::internal {

struct HandlePaths {
  std::filesystem::path directory;
  std::filesystem::path lock_file;
};

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
  const platform::FileId& directory_id() const { return directory_id_; }
  platform::NativeHandle handle() const { return handle_; }
  const HandlePaths& paths() const { return paths_; }
  const std::filesystem::path& path() const { return paths_.lock_file; }
  bool read_only() const { return read_only_; }
  // Why another user could delete or replace the file, as found at open
  // (platform::describe_unsafe); empty if nobody could.
  const std::string& unsafe_reason() const { return unsafe_reason_; }
  // Returns what the path names now (platform::check_path: one lstat when
  // nothing changed). Does not block beyond the path lookup.
  absl::StatusOr<platform::PathCheck> check_path() const {
    return platform::check_path(handle_, paths_.lock_file, id_, directory_id_);
  }

 private:
  platform::NativeHandle handle_;
  platform::FileId id_;
  platform::FileId directory_id_;
  HandlePaths paths_;
  bool read_only_;
  std::string unsafe_reason_;
};

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_QUEUE_LOCK_FILE_H_

// DirLock: resolve once at open, then lock through the shared registry entry.
#include "tierlock/dir_lock.h"

#include <system_error>
#include <utility>

#include "lock_entry.h"
#include "platform/platform.h"
#include "registry_impl.h"
#include "testing_hooks.h"

namespace tierlock {
namespace {

using internal::HandlePaths;
using internal::LockEntry;
using internal::RegistryImpl;

// The handle reports the entry's paths (no allocation) unless it reached the
// same lock file through another directory path (a hard link).
std::shared_ptr<const HandlePaths> paths_for(
    const std::shared_ptr<LockEntry>& entry,
    const std::filesystem::path& directory, std::string_view name) {
  const HandlePaths& own = entry->file().paths();
  if (own.directory == directory) {
    return std::shared_ptr<const HandlePaths>(entry, &own);
  }
  return std::make_shared<const HandlePaths>(
      HandlePaths{directory, directory / name});
}

std::errc errc_for(const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kFailedPrecondition:
      return std::errc::resource_deadlock_would_occur;
    case absl::StatusCode::kNotFound:
      return std::errc::no_such_file_or_directory;
    case absl::StatusCode::kPermissionDenied:
      return std::errc::permission_denied;
    case absl::StatusCode::kInvalidArgument:
      return std::errc::invalid_argument;
    case absl::StatusCode::kResourceExhausted:
      return std::errc::too_many_files_open;
    case absl::StatusCode::kUnavailable:
      return std::errc::no_lock_available;
    case absl::StatusCode::kUnimplemented:
      return std::errc::operation_not_supported;
    default:
      return std::errc::io_error;
  }
}

[[noreturn]] void throw_status(const absl::Status& st, std::errc code) {
  throw std::system_error(std::make_error_code(code), std::string(st.message()));
}
[[noreturn]] void throw_status(const absl::Status& st) {
  throw_status(st, errc_for(st));
}

}  // namespace

absl::StatusOr<DirLock> DirLock::open(const std::filesystem::path& dir,
                                      LockOptions options) {
  const std::string& name = options.lock_file_name;
  if (absl::Status st = internal::platform::validate_lock_file_name(dir, name);
      !st.ok()) {
    return st;
  }
  RegistryImpl& registry = RegistryImpl::get();

  // Fast path: the lock file exists and this process already has its entry.
  // One path walk (lstat) identifies it; the entry's inode, not the path
  // string, is the key, so a path component swapped for a symlink since the
  // entry was made cannot alias another lock.
  if (absl::StatusOr<internal::platform::FileId> id =
          internal::platform::stat_lock_file(dir, name);
      id.ok()) {
    if (std::shared_ptr<LockEntry> entry = registry.find(*id)) {
      const HandlePaths& own = entry->file().paths();
      if (dir.native() == own.directory.native()) {
        return DirLock(entry, std::shared_ptr<const HandlePaths>(entry, &own));
      }
      absl::StatusOr<std::filesystem::path> canonical =
          internal::platform::canonical_directory(dir);
      if (canonical.ok()) {
        auto paths = paths_for(entry, *canonical, name);
        return DirLock(std::move(entry), std::move(paths));
      }
      // Fall through: the slow path reports the error precisely.
    }
  }

  absl::StatusOr<internal::platform::OpenedLockFile> opened =
      internal::platform::open_lock_file(dir, name, options.create_directory);
  if (!opened.ok()) return opened.status();
  std::filesystem::path directory = opened->directory;
  std::shared_ptr<LockEntry> entry =
      registry.find_or_insert(internal::LockFile(*std::move(opened)));
  auto paths = paths_for(entry, directory, name);
  return DirLock(std::move(entry), std::move(paths));
}

absl::StatusOr<std::shared_ptr<LockEntry>> DirLock::live_entry() const {
  if (!entry_->stale()) return entry_;
  // In a fork()ed child: lock through this process's own open file
  // description of the same inode, never the one shared with the parent.
  RegistryImpl& registry = RegistryImpl::get();
  if (std::shared_ptr<LockEntry> own = registry.find(entry_->id())) return own;
  const internal::LockFile& inherited = entry_->file();
  absl::StatusOr<internal::platform::NativeHandle> handle =
      internal::platform::reopen(inherited.handle(), inherited.path());
  if (!handle.ok()) return handle.status();
  internal::platform::OpenedLockFile opened;
  opened.handle = *handle;
  opened.id = inherited.id();
  opened.directory = inherited.paths().directory;
  opened.lock_file = inherited.paths().lock_file;
  opened.read_only = inherited.read_only();
  return registry.find_or_insert(internal::LockFile(std::move(opened)));
}

absl::StatusOr<Guard> DirLock::acquire(Mode mode) {
  absl::StatusOr<std::shared_ptr<LockEntry>> entry = live_entry();
  if (!entry.ok()) return entry.status();
  absl::StatusOr<std::optional<Guard>> got =
      LockEntry::acquire(*std::move(entry), mode, internal::WaitPolicy{true});
  if (!got.ok()) return got.status();
  return std::move(**got);
}

absl::StatusOr<std::optional<Guard>> DirLock::try_acquire(Mode mode) {
  absl::StatusOr<std::shared_ptr<LockEntry>> entry = live_entry();
  if (!entry.ok()) return entry.status();
  return LockEntry::acquire(*std::move(entry), mode,
                            internal::WaitPolicy{false});
}

const std::filesystem::path& DirLock::directory() const {
  return paths_->directory;
}

const std::filesystem::path& DirLock::lock_file() const {
  return paths_->lock_file;
}

namespace {

bool lockable_acquire(const absl::StatusOr<std::shared_ptr<LockEntry>>& entry,
                      Mode mode, bool wait) {
  if (!entry.ok()) throw_status(entry.status());
  absl::StatusOr<bool> got =
      LockEntry::lockable_acquire(*entry, mode, internal::WaitPolicy{wait});
  if (!got.ok()) throw_status(got.status());
  return *got;
}

void lockable_release(const absl::StatusOr<std::shared_ptr<LockEntry>>& entry,
                      Mode mode) {
  if (!entry.ok()) throw_status(entry.status());
  absl::Status st = (*entry)->lockable_release(mode);
  if (st.code() == absl::StatusCode::kFailedPrecondition) {
    throw_status(st, std::errc::operation_not_permitted);
  }
  if (!st.ok()) throw_status(st);
}

}  // namespace

void DirLock::lock() { lockable_acquire(live_entry(), Mode::kExclusive, true); }
bool DirLock::try_lock() {
  return lockable_acquire(live_entry(), Mode::kExclusive, false);
}
void DirLock::unlock() { lockable_release(live_entry(), Mode::kExclusive); }
void DirLock::lock_shared() {
  lockable_acquire(live_entry(), Mode::kShared, true);
}
bool DirLock::try_lock_shared() {
  return lockable_acquire(live_entry(), Mode::kShared, false);
}
void DirLock::unlock_shared() { lockable_release(live_entry(), Mode::kShared); }

namespace internal {

std::shared_ptr<LockEntry> entry_for_testing(const DirLock& lock) {
  absl::StatusOr<std::shared_ptr<LockEntry>> entry = lock.live_entry();
  return entry.ok() ? *std::move(entry) : nullptr;
}

}  // namespace internal
}  // namespace tierlock

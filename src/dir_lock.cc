// DirLock: resolve once at open, then lock through the shared registry entry.
#include "tierlock/dir_lock.h"

#include <system_error>
#include <utility>

#include "lock_entry.h"
#include "platform/platform.h"
#include "registry_impl.h"
#include "testing_hooks.h"
#include "tier_names.h"
#include "tierlock/config.h"
#include "worker_pool.h"

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

// True if `dir` is `canonical` written another way without symlinks: with
// trailing slashes, "." components, or relative to the working directory. Then `dir` names the same directory (the lock file's inode has
// been matched too), and the handle needs no realpath (~1 us per component).
bool spells_same_directory(const std::filesystem::path& dir,
                           const std::filesystem::path& canonical) {
  std::string_view s = dir.native();
  while (s.size() > 1 && s.back() == '/') s.remove_suffix(1);
  if (s == canonical.native()) return true;
  // ".." is resolved after symlinks by the kernel, so only realpath can
  // tell where it leads.
  for (const std::filesystem::path& part : dir) {
    if (part == "..") return false;
  }
  std::error_code ec;
  std::filesystem::path normal = std::filesystem::absolute(dir, ec);
  if (ec) return false;
  normal = normal.lexically_normal();
  std::string_view n = normal.native();
  while (n.size() > 1 && n.back() == '/') n.remove_suffix(1);
  return n == canonical.native();
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
  absl::StatusOr<DirLock> lock = open_untiered(dir, options);
  if (lock.ok() && options.tier.has_value()) {
    lock->tier_ = Tier{options.tier->level, internal::intern_tier_name(options.tier->name)};
    lock->tiered_ = true;
  }
  return lock;
}

absl::StatusOr<DirLock> DirLock::open_untiered(const std::filesystem::path& dir,
                                               const LockOptions& options) {
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
      if (spells_same_directory(dir, own.directory)) {
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

namespace {

// Maps AcquireOptions to the queue's WaitPolicy: a timeout <= 0 is one try
// that reports kDeadlineExceeded when the lock is held.
internal::WaitPolicy policy_for(AcquireOptions& options,
                                std::optional<Tier> tier) {
  internal::WaitPolicy policy;
  policy.tier = tier;
  policy.stop = std::move(options.stop);
  if (options.timeout) {
    const auto now = std::chrono::steady_clock::now();
    if (options.timeout->count() <= 0) {
      policy.wait = false;
      policy.deadline = now;
    } else {
      policy.deadline =
          now + std::chrono::ceil<std::chrono::steady_clock::duration>(
                    *options.timeout);
    }
  }
  return policy;
}

}  // namespace

absl::StatusOr<Guard> DirLock::acquire(AcquireOptions options) {
  if (!entry_->stale()) [[likely]] {
    return LockEntry::acquire_wait(entry_, options.mode, policy_for(options, tier()));
  }
  absl::StatusOr<std::shared_ptr<LockEntry>> entry = live_entry();
  if (!entry.ok()) return entry.status();
  return LockEntry::acquire_wait(*std::move(entry), options.mode,
                                 policy_for(options, tier()));
}

absl::StatusOr<Guard> DirLock::acquire(Mode mode) {
  AcquireOptions options;
  options.mode = mode;
  return acquire(std::move(options));
}

absl::StatusOr<Guard> DirLock::acquire_for(std::chrono::nanoseconds timeout,
                                           Mode mode) {
  AcquireOptions options;
  options.mode = mode;
  options.timeout = timeout;
  return acquire(std::move(options));
}

void DirLock::acquire_async(
    AcquireOptions options,
    absl::AnyInvocable<void(absl::StatusOr<Guard>) &&> done) {
  WorkerPool& pool =
      options.pool != nullptr ? *options.pool : WorkerPool::global();
  absl::StatusOr<std::shared_ptr<LockEntry>> entry = live_entry();
  if (!entry.ok()) {
    // Delivered like every other outcome: on the pool, never inline.
    pool.execute([done = std::move(done), st = entry.status()]() mutable {
      std::move(done)(st);
    });
    return;
  }
  LockEntry::acquire_async(*std::move(entry), options.mode, policy_for(options, tier()),
                           pool.state_, options.executor, std::move(done));
}

std::future<absl::StatusOr<Guard>> DirLock::acquire_async(
    AcquireOptions options) {
  // The promise owns the result once set: if the future is gone, the Guard
  // dies with the shared state and the lock is released.
  auto promise = std::make_shared<std::promise<absl::StatusOr<Guard>>>();
  std::future<absl::StatusOr<Guard>> future = promise->get_future();
  options.executor = nullptr;  // set_value is cheap: complete on the pool
  acquire_async(std::move(options),
                [promise](absl::StatusOr<Guard> result) mutable {
                  promise->set_value(std::move(result));
                });
  return future;
}

absl::StatusOr<std::optional<Guard>> DirLock::try_acquire(Mode mode) {
  absl::StatusOr<std::shared_ptr<LockEntry>> entry = live_entry();
  if (!entry.ok()) return entry.status();
  internal::WaitPolicy policy;
  policy.wait = false;
  policy.tier = tier();
  return LockEntry::acquire(*std::move(entry), mode, policy);
}

const std::filesystem::path& DirLock::directory() const {
  return paths_->directory;
}

const std::filesystem::path& DirLock::lock_file() const {
  return paths_->lock_file;
}

namespace {

bool lockable_acquire(const absl::StatusOr<std::shared_ptr<LockEntry>>& entry,
                      std::optional<Tier> tier, Mode mode, bool wait,
                      std::optional<std::chrono::steady_clock::time_point>
                          deadline = std::nullopt) {
  if (!entry.ok()) throw_status(entry.status());
  internal::WaitPolicy policy;
  policy.tier = tier;
  policy.wait = wait;
  policy.deadline = deadline;
  absl::StatusOr<bool> got = LockEntry::lockable_acquire(*entry, mode, policy);
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

void DirLock::lock() { lockable_acquire(live_entry(), tier(), Mode::kExclusive, true); }
bool DirLock::try_lock() {
  return lockable_acquire(live_entry(), tier(), Mode::kExclusive, false);
}
void DirLock::unlock() { lockable_release(live_entry(), Mode::kExclusive); }
void DirLock::lock_shared() {
  lockable_acquire(live_entry(), tier(), Mode::kShared, true);
}
bool DirLock::try_lock_shared() {
  return lockable_acquire(live_entry(), tier(), Mode::kShared, false);
}
void DirLock::unlock_shared() { lockable_release(live_entry(), Mode::kShared); }
bool DirLock::timed_lock(Mode mode,
                         std::chrono::steady_clock::time_point deadline) {
  return lockable_acquire(live_entry(), tier(), mode, true, deadline);
}

absl::Status set_wait_interrupt_signal(int signo) {
  return internal::platform::set_interrupt_signal(signo);
}

namespace internal {

std::shared_ptr<LockEntry> entry_for_testing(const DirLock& lock) {
  absl::StatusOr<std::shared_ptr<LockEntry>> entry = lock.live_entry();
  return entry.ok() ? *std::move(entry) : nullptr;
}

}  // namespace internal
}  // namespace tierlock

// DirLock: resolve once at open, then lock through the shared registry entry.
#include "tierlock/dir_lock.h"

#include <algorithm>
#include <optional>
#include <system_error>
#include <tuple>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "api/testing_hooks.h"
#include "api/wait_hook.h"
#include "base/error_kind.h"
#include "base/string_util.h"
#include "holders/holder_writer.h"
#include "platform/platform.h"
#include "queue/lock_entry.h"
#include "queue/registry_impl.h"
#include "queue/worker_pool.h"
#include "tier/lockable_holds.h"
#include "tier/tier_check.h"
#include "tier/tier_context.h"
#include "tier/tier_names.h"
#include "tierlock/config.h"
#include "tierlock/holder.h"
#include "tierlock/text.h"

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
// trailing slashes, "." components, or relative to the working directory. Then
// `dir` names the same directory (the lock file's inode has been matched too),
// and the handle needs no realpath (a syscall per component).
bool spells_same_directory(const std::filesystem::path& dir,
                           const std::filesystem::path& canonical) {
  const auto& dir_text = internal::platform::path_text(dir);
  const auto& canonical_text = internal::platform::path_text(canonical);
  std::string_view s = dir_text;
  while (s.size() > 1 && s.back() == '/') s.remove_suffix(1);
  if (s == canonical_text) return true;
  // ".." is resolved after symlinks by the kernel, so only realpath can
  // tell where it leads.
  for (const std::filesystem::path& part : dir) {
    if (part == "..") return false;
  }
  std::error_code ec;
  std::filesystem::path normal = std::filesystem::absolute(dir, ec);
  if (ec) return false;
  normal = normal.lexically_normal();
  const auto& normal_text = internal::platform::path_text(normal);
  std::string_view n = normal_text;
  while (n.size() > 1 && n.back() == '/') n.remove_suffix(1);
  return n == canonical_text;
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
  throw std::system_error(std::make_error_code(code),
                          std::string(st.message()));
}
[[noreturn]] void throw_status(const absl::Status& st) {
  throw_status(st, errc_for(st));
}

}  // namespace

// The library's side of a DirLock (the header's pimpl): what the handle
// locks through, and the acquire paths that need the queue's and the tier
// layer's types. A member of DirLock, so it builds handles and Guards.
class DirLock::Impl {
 public:
  Impl(std::shared_ptr<LockEntry> e, std::shared_ptr<const HandlePaths> p)
      : entry(std::move(e)), paths(std::move(p)) {}

  static DirLock make(std::shared_ptr<LockEntry> entry,
                      std::shared_ptr<const HandlePaths> paths) {
    return DirLock(
        std::make_shared<const Impl>(std::move(entry), std::move(paths)));
  }
  // Wraps the queue's hold (and the tier hold recorded in `context`, if any)
  // into the public Guard.
  static Guard guard(internal::EntryHold&& hold,
                     internal::ContextState* context = nullptr,
                     std::uint64_t hold_id = 0) noexcept {
    const Mode mode = hold.mode();
    const std::uint64_t owner = hold.owner().value;
    return Guard(std::move(hold).take(), mode, owner, context, hold_id);
  }
  static absl::StatusOr<DirLock> open_untiered(const std::filesystem::path& dir,
                                               const LockOptions& options);
  // Acquires through `entry` (a live entry of `lock`), with tier checks when
  // they are on; `group` marks the locks of one acquire_all call.
  static absl::StatusOr<Guard> acquire_entry(
      const DirLock& lock, const std::shared_ptr<LockEntry>& entry, Mode mode,
      const internal::WaitPolicy& policy, Where where, std::uint64_t group);
  // The global pool's state, whose timer thread runs blocking acquires'
  // wait hooks.
  static std::shared_ptr<internal::PoolState> global_timers() {
    return WorkerPool::global().state_;
  }
  // acquire() with AcquireOptions::on_wait set.
  static absl::StatusOr<Guard> acquire_hooked(const DirLock& lock,
                                              AcquireOptions options,
                                              Where where);
  // Rejects the async-only options in a blocking acquire.
  static absl::Status check_blocking_options(const DirLock& lock,
                                             const AcquireOptions& options,
                                             std::string_view call);

  // The entry to lock through: `entry`, or after fork() in a child, this
  // process's own entry for the same inode.
  absl::StatusOr<std::shared_ptr<LockEntry>> live_entry() const;

  const std::shared_ptr<LockEntry> entry;
  const std::shared_ptr<const HandlePaths> paths;
};

absl::StatusOr<DirLock> DirLock::open(const std::filesystem::path& dir,
                                      LockOptions options) {
  absl::StatusOr<DirLock> lock = Impl::open_untiered(dir, options);
  if (lock.ok() && options.refuse_unsafe_lock_file) {
    // The reason was found when this process opened the file (the entry's
    // open), from the directory's and the file's owner and mode.
    if (std::string why = lock->unsafe_reason(); !why.empty()) {
      return internal::with_kind(
          absl::FailedPreconditionError(absl::StrCat(
              "open '", internal::platform::path_text(lock->lock_file()),
              "': refusing a lock file that another user can delete or "
              "replace (refuse_unsafe_lock_file): ",
              why)),
          ErrorKind::kUnsafeLockFile);
    }
  }
  if (lock.ok() && internal::tier_checks_active() &&
      lock->impl_->entry->tag().load(std::memory_order_relaxed) == 0) {
    // The learned-order node may need a path probe (a hard link, or a reused
    // inode number): done here, where opening makes syscalls anyway, not in
    // the first acquire, which promises none before it has to wait.
    (void)internal::order_node(lock->impl_->entry->tag(),
                               lock->impl_->entry->id(),
                               lock->impl_->entry->file().path());
  }
  if (lock.ok() && options.tier.has_value()) {
    lock->tier_ = Tier{options.tier->level,
                       internal::intern_tier_name(options.tier->name)};
    lock->tiered_ = true;
  }
  return lock;
}

absl::StatusOr<DirLock> DirLock::Impl::open_untiered(
    const std::filesystem::path& dir, const LockOptions& options) {
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
        return make(entry, std::shared_ptr<const HandlePaths>(entry, &own));
      }
      absl::StatusOr<std::filesystem::path> canonical =
          internal::platform::canonical_directory(dir);
      if (canonical.ok()) {
        auto paths = paths_for(entry, *canonical, name);
        return make(std::move(entry), std::move(paths));
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
  return make(std::move(entry), std::move(paths));
}

absl::StatusOr<std::shared_ptr<LockEntry>> DirLock::Impl::live_entry() const {
  if (!entry->stale()) [[likely]] {
    if (!entry->replaced()) [[likely]]
      return entry;
    // The lock file was deleted or replaced: the path's file now.
    return LockEntry::current(entry);
  }
  // In a fork()ed child: lock through this process's own open file
  // description of the same inode, never the one shared with the parent.
  RegistryImpl& registry = RegistryImpl::get();
  if (std::shared_ptr<LockEntry> own = registry.find(entry->id())) {
    return LockEntry::current(std::move(own));
  }
  const internal::LockFile& inherited = entry->file();
  absl::StatusOr<internal::platform::NativeHandle> handle =
      internal::platform::reopen(inherited.handle(), inherited.path());
  if (!handle.ok()) return handle.status();
  internal::platform::OpenedLockFile opened;
  opened.handle = *handle;
  opened.id = inherited.id();
  opened.directory = inherited.paths().directory;
  opened.lock_file = inherited.paths().lock_file;
  opened.read_only = inherited.read_only();
  opened.directory_id = inherited.directory_id();
  opened.unsafe_reason = inherited.unsafe_reason();
  return registry.find_or_insert(internal::LockFile(std::move(opened)));
}

namespace {

// Builds the status of a wait on `entry` that was cancelled or timed out
// (the queue's WaitPolicy::wait_failed), naming who holds the lock.
absl::Status wait_failed(const LockEntry& entry, absl::StatusCode code,
                         Mode mode,
                         std::chrono::steady_clock::duration waited) {
  namespace platform = internal::platform;
  const bool cancelled = code == absl::StatusCode::kCancelled;
  const std::int64_t me = platform::current_pid();
  const bool held_here = entry.holders() != 0;
  const std::filesystem::path& lock_file = entry.file().path();
  std::string holder;
  if (cancelled) {
    // A cancel must return promptly, and reading /proc/locks takes a
    // system-wide write lock that can wait for an RCU grace period
    // (milliseconds here): name what is known without it.
    holder = held_here ? absl::StrCat(
                             "held by another thread of this process"
                             " (pid ",
                             me, ")")
                       : std::string(
                             "held by another process (see tierlock "
                             "status or /proc/locks)");
  } else {
    // Who holds it: holder records first, which need no global lock; only
    // when no record names a holder (flock(1), Python, a record being
    // updated), the kernel's lock table, whose read can wait milliseconds
    // for an RCU grace period when nothing read it recently (docs/perf.md,
    // lateness of a lone timeout). Records and /proc add the program.
    std::vector<std::string> exclusive, shared;
    std::vector<Holder> holders =
        internal::recorded_holders(lock_file, entry.id());
    bool known = true;
    if (holders.empty()) {
      absl::StatusOr<std::vector<Holder>> from_kernel =
          internal::holders_of(lock_file, entry.id());
      if (from_kernel.ok()) {
        holders = *std::move(from_kernel);
      } else {
        // No lock table to read (Windows always; Linux without /proc):
        // "unknown", not "nobody".
        known = false;
        holder = held_here ? absl::StrCat(
                                 "held by another thread of this process (pid ",
                                 me, ")")
                           : absl::StrCat("held by another process (",
                                          from_kernel.status().message(), ")");
      }
    }
    for (const Holder& h : holders) {
      std::string who = h.pid.has_value() ? absl::StrCat(*h.pid) : "?";
      if (h.pid == me) absl::StrAppend(&who, " (this process)");
      if (h.program.has_value()) {
        constexpr std::size_t kMaxShown = 200;
        // Exact bytes that anyone can choose: escaped, never printed raw.
        absl::StrAppend(&who, " '",
                        escape_text(h.program->substr(0, kMaxShown)),
                        h.program->size() > kMaxShown ? "...'" : "'");
      }
      if (h.taker_pid.has_value()) {
        absl::StrAppend(
            &who,
            h.pid.has_value() ? " (inherited" : " (a process that inherited",
            " the lock from pid ", *h.taker_pid, ", which has exited)");
      }
      (h.mode == Mode::kExclusive ? exclusive : shared)
          .push_back(std::move(who));
    }
    if (!exclusive.empty()) {
      holder = absl::StrCat("held exclusively by pid ",
                            absl::StrJoin(exclusive, ", pid "));
    } else if (!shared.empty()) {
      holder =
          absl::StrCat("held shared by pid ", absl::StrJoin(shared, ", pid "));
    } else if (known) {
      holder = "no holder visible now (it may have just been released)";
    }
  }
  return internal::with_kind(
      absl::Status(
          code, absl::StrCat("acquire '", platform::path_text(lock_file), "' (",
                             internal::to_absl(mode_name(mode)),
                             "): ", cancelled ? "cancelled" : "timed out",
                             " after ", format_duration(waited), "; ", holder)),
      cancelled ? ErrorKind::kCancelled : ErrorKind::kTimeout);
}

// Maps AcquireOptions to the queue's WaitPolicy: a timeout <= 0 is one try
// that reports kDeadlineExceeded when the lock is held.
internal::WaitPolicy policy_for(AcquireOptions& options,
                                std::optional<Tier> tier) {
  internal::WaitPolicy policy;
  policy.tier = tier;
  policy.wait_failed = &wait_failed;
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

// Tells `hook` (if any) when the acquire through `entry` joins the entry's
// queue; the hook then reads that lock file's holders. Weak: the acquire
// owns the hook.
void watch_wait(internal::WaitPolicy& policy,
                const std::shared_ptr<internal::WaitHook>& hook,
                const LockEntry& entry, const std::filesystem::path& shown) {
  if (hook == nullptr || !policy.wait) return;
  policy.queued = [weak = std::weak_ptr<internal::WaitHook>(hook),
                   shown_text = internal::platform::path_text(shown),
                   path = entry.file().path(), id = entry.id()] {
    if (std::shared_ptr<internal::WaitHook> h = weak.lock()) {
      h->waiting(shown_text,
                 [path, id] { return internal::holders_of(path, id); });
    }
  };
}

}  // namespace

namespace {

internal::AcquireSite site_for(const LockEntry& entry,
                               const internal::MaybeTier& tier, Mode mode,
                               SourceLocation where, bool try_only,
                               std::uint64_t group) {
  // The entry's tag caches the lock file's learned-order node.
  std::uint32_t node = entry.tag().load(std::memory_order_relaxed);
  if (node == 0) [[unlikely]] {
    node = internal::order_node(entry.tag(), entry.id(), entry.file().path());
  }
  return internal::AcquireSite{
      internal::LockId::file(entry.file().path(), node),
      tier,
      mode,
      where,
      try_only,
      group};
}

}  // namespace

absl::StatusOr<Guard> DirLock::Impl::acquire_entry(
    const DirLock& lock, const std::shared_ptr<LockEntry>& entry, Mode mode,
    const internal::WaitPolicy& policy, Where where, std::uint64_t group) {
  if (!internal::tier_checks_active()) {
    absl::StatusOr<internal::EntryHold> hold =
        LockEntry::acquire_wait(entry, mode, policy);
    if (!hold.ok()) [[unlikely]]
      return hold.status();
    return guard(*std::move(hold));
  }
  internal::ContextState& ctx = internal::current_context_state();
  absl::Status refused;
  // A zero timeout is one try: it cannot wait, so it is no order
  // (tier_check.h).
  const std::uint64_t hold = internal::check_and_record(
      ctx,
      site_for(*entry, internal::MaybeTier(lock.tier_, lock.tiered_), mode,
               where, !policy.wait, group),
      &refused);
  if (hold == 0) [[unlikely]]
    return refused;
  absl::StatusOr<internal::EntryHold> got =
      LockEntry::acquire_wait(entry, mode, policy);
  if (!got.ok()) [[unlikely]] {
    // Nothing taken: the recorded hold goes (as an empty Guard's would).
    internal::forget_hold(ctx, hold);
    return got.status();
  }
  return guard(*std::move(got), &ctx, hold);
}

absl::Status DirLock::Impl::check_blocking_options(
    const DirLock& lock, const AcquireOptions& options, std::string_view call) {
  if (options.pool == nullptr && options.executor == nullptr) [[likely]] {
    return absl::OkStatus();
  }
  return internal::with_kind(
      absl::InvalidArgumentError(absl::StrCat(
          internal::to_absl(call), " '",
          internal::platform::path_text(lock.lock_file()),
          "': AcquireOptions::", options.pool != nullptr ? "pool" : "executor",
          " is set, but only acquire_async waits on a pool or completes on "
          "an executor")),
      ErrorKind::kInvalidOption);
}

absl::StatusOr<Guard> DirLock::acquire(AcquireOptions options,
                                       SourceLocation where) {
  if (absl::Status st = Impl::check_blocking_options(*this, options, "acquire");
      !st.ok()) [[unlikely]] {
    return st;
  }
  if (options.on_wait) [[unlikely]] {
    return Impl::acquire_hooked(*this, std::move(options), where);
  }
  const std::shared_ptr<LockEntry>& own = impl_->entry;
  if (!own->stale()) [[likely]] {
    return Impl::acquire_entry(*this, own, options.mode,
                               policy_for(options, tier()), where, 0);
  }
  absl::StatusOr<std::shared_ptr<LockEntry>> entry = impl_->live_entry();
  if (!entry.ok()) return entry.status();
  return Impl::acquire_entry(*this, *entry, options.mode,
                             policy_for(options, tier()), where, 0);
}

absl::StatusOr<Guard> DirLock::Impl::acquire_hooked(const DirLock& lock,
                                                    AcquireOptions options,
                                                    Where where) {
  const std::shared_ptr<internal::WaitHook> hook = internal::WaitHook::make(
      options, WorkerPool::global().state_, std::chrono::steady_clock::now());
  absl::Cleanup finish = [&hook] { hook->finish(); };
  absl::StatusOr<std::shared_ptr<LockEntry>> entry = lock.impl_->live_entry();
  if (!entry.ok()) return entry.status();
  internal::WaitPolicy policy = policy_for(options, lock.tier());
  watch_wait(policy, hook, **entry, lock.lock_file());
  return acquire_entry(lock, *entry, options.mode, policy, where, 0);
}

absl::StatusOr<Guard> DirLock::acquire(Mode mode, SourceLocation where) {
  // The common call: no AcquireOptions to build, move and map.
  const std::shared_ptr<LockEntry>& own = impl_->entry;
  if (!own->stale()) [[likely]] {
    internal::WaitPolicy policy;
    policy.tier = tier();
    policy.wait_failed = &wait_failed;
    if (!internal::tier_checks_active()) [[likely]] {
      absl::StatusOr<internal::EntryHold> hold =
          LockEntry::acquire_wait(own, mode, policy);
      if (!hold.ok()) [[unlikely]]
        return hold.status();
      return Impl::guard(*std::move(hold));
    }
    return Impl::acquire_entry(*this, own, mode, policy, where, 0);
  }
  AcquireOptions options;
  options.mode = mode;
  return acquire(std::move(options), where);
}

absl::StatusOr<Guard> DirLock::acquire_for(std::chrono::nanoseconds timeout,
                                           Mode mode, SourceLocation where) {
  AcquireOptions options;
  options.mode = mode;
  options.timeout = timeout;
  return acquire(std::move(options), where);
}

void DirLock::acquire_async(
    AcquireOptions options,
    absl::AnyInvocable<void(absl::StatusOr<Guard>) &&> done,
    SourceLocation where) {
  WorkerPool& pool =
      options.pool != nullptr ? *options.pool : WorkerPool::global();
  absl::StatusOr<std::shared_ptr<LockEntry>> entry = impl_->live_entry();
  absl::Status refused = entry.status();
  // Checked against the caller's context now, recorded there on the grant.
  std::shared_ptr<internal::ContextState> ctx;
  std::optional<internal::AcquireSite> site;
  if (entry.ok() && internal::tier_checks_active()) {
    ctx = internal::current_context();
    site = site_for(**entry, internal::MaybeTier(tier_, tiered_), options.mode,
                    where, false, 0);
    refused = internal::check_acquire(*ctx, *site);
  }
  if (!refused.ok()) {
    // Delivered like every other outcome: on the executor if given, else on
    // the pool, never inline.
    Executor& where_done =
        options.executor != nullptr ? *options.executor : pool;
    where_done.execute(
        [done = std::move(done), st = std::move(refused)]() mutable {
          std::move(done)(st);
        });
    return;
  }
  LockEntry::Done granted;
  if (ctx != nullptr) {
    granted = [ctx = std::move(ctx), site = *site, done = std::move(done)](
                  absl::StatusOr<internal::EntryHold> hold) mutable {
      if (!hold.ok()) {
        std::move(done)(hold.status());
        return;
      }
      const std::uint64_t id = internal::record_hold(*ctx, site);
      std::move(done)(Impl::guard(*std::move(hold), ctx.get(), id));
    };
  } else {
    granted = [done = std::move(done)](
                  absl::StatusOr<internal::EntryHold> hold) mutable {
      if (!hold.ok()) {
        std::move(done)(hold.status());
        return;
      }
      std::move(done)(Impl::guard(*std::move(hold)));
    };
  }
  internal::WaitPolicy policy = policy_for(options, tier());
  if (options.on_wait) [[unlikely]] {
    // Finished before the result is delivered; a completion dropped unrun
    // drops the hook with it (its timer then finds nothing to run).
    std::shared_ptr<internal::WaitHook> hook = internal::WaitHook::make(
        options, pool.state_, std::chrono::steady_clock::now());
    watch_wait(policy, hook, **entry, lock_file());
    granted = [hook = std::move(hook), inner = std::move(granted)](
                  absl::StatusOr<internal::EntryHold> hold) mutable {
      hook->finish();
      std::move(inner)(std::move(hold));
    };
  }
  LockEntry::acquire_async(*std::move(entry), options.mode, std::move(policy),
                           pool.state_, options.executor, std::move(granted));
}

std::future<absl::StatusOr<Guard>> DirLock::acquire_async(
    AcquireOptions options, SourceLocation where) {
  // The promise owns the result once set: if the future is gone, the Guard
  // dies with the shared state and the lock is released.
  auto promise = std::make_shared<std::promise<absl::StatusOr<Guard>>>();
  std::future<absl::StatusOr<Guard>> future = promise->get_future();
  // The caller's executor, if any, makes the future ready: a continuation
  // chained onto it by the executor then runs where the caller asked.
  acquire_async(
      std::move(options),
      [promise](absl::StatusOr<Guard> result) mutable {
        promise->set_value(std::move(result));
      },
      where);
  return future;
}

absl::StatusOr<std::optional<Guard>> DirLock::try_acquire(
    Mode mode, SourceLocation where) {
  absl::StatusOr<std::shared_ptr<LockEntry>> entry = impl_->live_entry();
  if (!entry.ok()) return entry.status();
  internal::WaitPolicy policy;
  policy.wait = false;
  policy.tier = tier();
  policy.wait_failed = &wait_failed;
  if (!internal::tier_checks_active()) [[likely]] {
    absl::StatusOr<std::optional<internal::EntryHold>> hold =
        LockEntry::acquire(*std::move(entry), mode, policy);
    if (!hold.ok()) return hold.status();
    if (!hold->has_value()) return std::optional<Guard>();
    return std::optional<Guard>(Impl::guard(**std::move(hold)));
  }
  internal::ContextState& ctx = internal::current_context_state();
  absl::Status refused;
  const std::uint64_t hold = internal::check_and_record(
      ctx,
      site_for(**entry, internal::MaybeTier(tier_, tiered_), mode, where, true,
               0),
      &refused);
  if (hold == 0) return refused;
  absl::StatusOr<std::optional<internal::EntryHold>> got =
      LockEntry::acquire(*std::move(entry), mode, policy);
  if (!got.ok() || !got->has_value()) {
    internal::forget_hold(ctx, hold);
    if (!got.ok()) return got.status();
    return std::optional<Guard>();
  }
  return std::optional<Guard>(Impl::guard(**std::move(got), &ctx, hold));
}

absl::StatusOr<std::vector<Guard>> acquire_all(std::span<const DirLock> locks,
                                               AcquireOptions options,
                                               SourceLocation where) {
  if (!locks.empty()) {
    if (absl::Status st = DirLock::Impl::check_blocking_options(
            locks.front(), options, "acquire_all");
        !st.ok()) {
      return st;
    }
  }
  struct Item {
    std::size_t index;
    std::shared_ptr<LockEntry> entry;
    std::optional<Tier> tier;
  };
  std::vector<Item> items;
  items.reserve(locks.size());
  for (std::size_t i = 0; i < locks.size(); ++i) {
    absl::StatusOr<std::shared_ptr<LockEntry>> entry =
        locks[i].impl_->live_entry();
    if (!entry.ok()) return entry.status();
    items.push_back({i, *std::move(entry), locks[i].tier()});
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    auto key = [](const Item& it) {
      return std::tuple(!it.tier.has_value(), it.tier ? it.tier->level : 0);
    };
    if (key(a) != key(b)) return key(a) < key(b);
    return internal::platform::path_text(a.entry->file().path()) <
           internal::platform::path_text(b.entry->file().path());
  });
  for (std::size_t i = 1; i < items.size(); ++i) {
    // One registry entry per lock file: the same entry twice is one lock.
    for (std::size_t j = 0; j < i; ++j) {
      if (items[j].entry == items[i].entry) {
        return internal::with_kind(
            absl::InvalidArgumentError(absl::StrCat(
                "acquire_all: '",
                internal::platform::path_text(items[i].entry->file().path()),
                "' is given twice (handles ", items[j].index, " and ",
                items[i].index, ")")),
            ErrorKind::kInvalidOption);
      }
    }
  }

  std::optional<std::chrono::steady_clock::time_point> deadline;
  if (options.timeout) {
    deadline = std::chrono::steady_clock::now() +
               std::chrono::ceil<std::chrono::steady_clock::duration>(
                   *options.timeout);
  }
  // The global pool (its timer thread) only for a hook.
  const std::shared_ptr<internal::WaitHook> hook =
      options.on_wait
          ? internal::WaitHook::make(options, DirLock::Impl::global_timers(),
                                     std::chrono::steady_clock::now())
          : nullptr;
  absl::Cleanup finish = [&hook] {
    if (hook != nullptr) hook->finish();
  };
  const std::uint64_t group =
      internal::tier_checks_active() ? internal::new_acquire_group() : 0;
  std::vector<Guard> guards(locks.size());
  std::vector<std::size_t> taken;
  for (std::size_t k = 0; k < items.size(); ++k) {
    AcquireOptions one;
    one.mode = options.mode;
    one.stop = options.stop;
    if (deadline) {
      one.timeout = std::max(std::chrono::steady_clock::duration::zero(),
                             *deadline - std::chrono::steady_clock::now());
    }
    const DirLock& lock = locks[items[k].index];
    internal::WaitPolicy policy = policy_for(one, lock.tier());
    watch_wait(policy, hook, *items[k].entry, lock.lock_file());
    absl::StatusOr<Guard> guard = DirLock::Impl::acquire_entry(
        lock, items[k].entry, one.mode, policy, where, group);
    if (!guard.ok()) {
      // All or nothing: undo in reverse order.
      for (auto it = taken.rbegin(); it != taken.rend(); ++it) {
        (void)guards[*it].release();
      }
      return internal::with_kind_of(
          absl::Status(
              guard.status().code(),
              absl::StrCat("acquire_all: lock ", k + 1, " of ", items.size(),
                           " (none held): ", guard.status().message())),
          guard.status());
    }
    guards[items[k].index] = *std::move(guard);
    taken.push_back(items[k].index);
  }
  return guards;
}

const std::filesystem::path& DirLock::directory() const {
  return impl_->paths->directory;
}

const std::filesystem::path& DirLock::lock_file() const {
  return impl_->paths->lock_file;
}

namespace {

void lockable_release(const absl::StatusOr<std::shared_ptr<LockEntry>>& entry,
                      Mode mode) {
  if (!entry.ok()) throw_status(entry.status());
  absl::Status st = (*entry)->lockable_release(mode);
  if (st.code() == absl::StatusCode::kFailedPrecondition) {
    throw_status(st, std::errc::operation_not_permitted);
  }
  if (!st.ok()) throw_status(st);
  internal::forget_lockable_hold(entry->get(), mode);
}

}  // namespace

bool DirLock::lockable_lock(
    Mode mode, bool wait,
    std::optional<std::chrono::steady_clock::time_point> deadline,
    Where where) {
  absl::StatusOr<std::shared_ptr<LockEntry>> entry = impl_->live_entry();
  if (!entry.ok()) throw_status(entry.status());
  internal::WaitPolicy policy;
  policy.tier = tier();
  policy.wait = wait;
  policy.deadline = deadline;
  policy.wait_failed = &wait_failed;
  std::shared_ptr<internal::ContextState> ctx;
  std::uint64_t hold = 0;
  if (internal::tier_checks_active()) {
    ctx = internal::current_context();
    absl::StatusOr<std::uint64_t> checked = internal::check_and_record(
        *ctx, site_for(**entry, internal::MaybeTier(tier_, tiered_), mode,
                       where, !wait, 0));
    if (!checked.ok()) throw_status(checked.status());
    hold = *checked;
  }
  absl::StatusOr<bool> got = LockEntry::lockable_acquire(*entry, mode, policy);
  if (ctx != nullptr && (!got.ok() || !*got)) internal::forget_hold(*ctx, hold);
  if (!got.ok()) throw_status(got.status());
  if (*got && ctx != nullptr) {
    internal::record_lockable_hold(entry->get(), mode, ctx.get(), hold);
  }
  return *got;
}

void DirLock::lock(Where where) {
  lockable_lock(Mode::kExclusive, true, std::nullopt, where);
}
bool DirLock::try_lock(Where where) {
  return lockable_lock(Mode::kExclusive, false, std::nullopt, where);
}
void DirLock::unlock() {
  lockable_release(impl_->live_entry(), Mode::kExclusive);
}
void DirLock::lock_shared(Where where) {
  lockable_lock(Mode::kShared, true, std::nullopt, where);
}
bool DirLock::try_lock_shared(Where where) {
  return lockable_lock(Mode::kShared, false, std::nullopt, where);
}
void DirLock::unlock_shared() {
  lockable_release(impl_->live_entry(), Mode::kShared);
}
bool DirLock::timed_lock(Mode mode,
                         std::chrono::steady_clock::time_point deadline,
                         Where where) {
  return lockable_lock(mode, true, deadline, where);
}

absl::Status set_wait_interrupt_signal(int signo) {
  return internal::platform::set_interrupt_signal(signo);
}

namespace internal {

std::shared_ptr<LockEntry> entry_for_testing(const DirLock& lock) {
  // Through the registry, by the lock file's identity: the handle's own
  // pointer is private to DirLock, and this process's entry for the inode is
  // the one every handle of it locks through.
  absl::StatusOr<platform::FileId> id = platform::stat_lock_file(
      lock.directory(), platform::path_text(lock.lock_file().filename()));
  if (!id.ok()) return nullptr;
  return RegistryImpl::get().find(*id);
}

}  // namespace internal
std::string DirLock::unsafe_reason() const {
  absl::StatusOr<std::shared_ptr<LockEntry>> entry = impl_->live_entry();
  return (entry.ok() ? **entry : *impl_->entry).file().unsafe_reason();
}

absl::StatusOr<std::vector<Holder>> DirLock::holders() const {
  return internal::holders_of(impl_->entry->file().path(), impl_->entry->id());
}

}  // namespace tierlock

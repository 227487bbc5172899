// LockEntry: the in-process FIFO queue in front of one kernel flock.
#include "queue/lock_entry.h"

#include <algorithm>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/error_kind.h"
#include "base/string_util.h"
#include "queue/registry_impl.h"
#include "queue/worker_pool.h"
#include "tierlock/text.h"

namespace tierlock::internal {

// An acquire that waits without a thread: a queue node owned by shared_ptr.
// While queued it owns itself (`keep`); leaving the queue always hands that
// reference to a posted task, so it is never destroyed under the entry mutex.
struct LockEntry::AsyncWaiter final
    : Waiter,
      std::enable_shared_from_this<AsyncWaiter> {
  AsyncWaiter(std::shared_ptr<LockEntry> e, Mode m, WaitPolicy p,
              std::shared_ptr<PoolState> pl, Executor* ex, Done d)
      : Waiter(m, ThreadKey()),
        entry(std::move(e)),
        policy(std::move(p)),
        pool(std::move(pl)),
        executor(ex),
        done(std::move(d)),
        start(Clock::now()) {
    async = this;
    tier = policy.tier;
  }
  ~AsyncWaiter() {
    // Wait out stop callbacks that may be running on other threads (they
    // take the entry mutex, which we do not hold here).
    on_stop.reset();
    on_pool_stop.reset();
    bool release = false;
    {
      UniqueLock lk(entry->mu_);
      release = granted && !delivered;
    }
    // A grant whose completion never ran (pool shut down, executor dropped
    // it): the lock is released, not leaked.
    if (release) (void)entry->release(mode, ThreadKey());
  }

  const std::shared_ptr<LockEntry> entry;
  const WaitPolicy policy;
  const std::shared_ptr<PoolState> pool;
  Executor* const executor;
  Done done;
  const Clock::time_point start;
  bool delivered = false;             // written by the completion task only
  std::shared_ptr<AsyncWaiter> keep;  // guarded by entry->mu_
  std::optional<std::stop_callback<StopWaiter>> on_stop;
  std::optional<std::stop_callback<StopWaiter>> on_pool_stop;
};

LockEntry::LockEntry(LockFile file, std::uint64_t generation) noexcept
    : file_(std::move(file)), generation_(generation) {}

LockEntry::~LockEntry() {
  // An entry inherited over fork() belongs to the parent's registry, which
  // the child has discarded.
  if (!stale()) RegistryImpl::get().erase(file_.id(), this);
  // The last reference is gone, so no lock is needed (and after fork() the
  // mutex must not be touched); a child only unmaps the parent's record.
  record_.close(file_.path(), file_.id(), !stale());
}

namespace {

// How long the head of the queue may lose the lock to newly arriving
// threads before it is handed the lock directly. Barging keeps the kernel
// lock busy while the woken head is being scheduled (a strict handoff makes
// every acquire wait for a context switch: a lock convoy); the bound keeps
// the queue fair. Go's sync.Mutex uses the same 1 ms.
constexpr std::chrono::milliseconds kStarvation{1};

// Marks the internal "lock file replaced, redo on the successor" status.
constexpr char kReplacedPayload[] = "tierlock.internal/replaced";
// Consecutive replacements one acquire follows before giving up: only a
// process deleting the lock file in a loop gets there.
constexpr int kMaxReplacements = 100;

absl::Status cancelled_before_start(const std::filesystem::path& path,
                                    Mode mode) {
  return with_kind(
      absl::CancelledError(absl::StrCat("acquire '", platform::path_text(path),
                                        "' (", to_absl(mode_name(mode)),
                                        "): cancelled before it started")),
      ErrorKind::kCancelled);
}
}  // namespace

bool is_replaced(const absl::Status& status) {
  return status.code() == absl::StatusCode::kAborted &&
         status.GetPayload(kReplacedPayload).has_value();
}

absl::Status LockEntry::replaced_status() const {
  absl::Status st = absl::AbortedError(absl::StrCat(
      "acquire '", platform::path_text(file_.path()),
      "': the lock file was deleted or replaced after it was opened"));
  st.SetPayload(kReplacedPayload, absl::Cord());
  return st;
}

absl::StatusOr<std::shared_ptr<LockEntry>> LockEntry::successor_of(
    const std::shared_ptr<LockEntry>& e) {
  {
    UniqueLock lk(e->mu_);
    if (!e->replaced_) return e;
    if (e->successor_ != nullptr && !e->successor_->replaced()) {
      return e->successor_;
    }
  }
  // Open what the path names now, as DirLock::open would (creating it if it
  // was deleted), outside mu_: syscalls.
  const HandlePaths& paths = e->file_.paths();
  absl::StatusOr<platform::OpenedLockFile> opened = platform::open_lock_file(
      paths.directory, platform::path_text(paths.lock_file.filename()),
      /*create_directory=*/false);
  if (!opened.ok()) return opened.status();
  std::shared_ptr<LockEntry> next =
      RegistryImpl::get().find_or_insert(LockFile(*std::move(opened)));
  if (next->replaced()) {
    // The path names a file we had seen replaced (renamed away and back):
    // it is current again. Its own successor goes, so no chain has a cycle.
    std::shared_ptr<LockEntry> dropped;  // destroyed outside mu_
    UniqueLock lk(next->mu_);
    if (next->replaced_ && next->head_ == nullptr) {
      next->replaced_ = false;
      next->replaced_flag_.store(false, std::memory_order_release);
      dropped = std::move(next->successor_);
    }
  }
  if (next == e) return next;
  UniqueLock lk(e->mu_);
  e->successor_ = next;
  return next;
}

absl::StatusOr<std::shared_ptr<LockEntry>> LockEntry::current(
    std::shared_ptr<LockEntry> e) {
  for (int i = 0; e->replaced(); ++i) {
    if (i == kMaxReplacements) {
      return absl::AbortedError(absl::StrCat(
          "acquire '", platform::path_text(e->file_.path()),
          "': the lock file was deleted or replaced ", kMaxReplacements,
          " times in a row while it was being locked; giving up"));
    }
    absl::StatusOr<std::shared_ptr<LockEntry>> next = successor_of(e);
    if (!next.ok()) return next.status();
    e = *std::move(next);
  }
  return e;
}

absl::StatusOr<bool> LockEntry::hold_current(std::shared_ptr<LockEntry>& self,
                                             Mode mode,
                                             const WaitPolicy& policy,
                                             ThreadKey thread) {
  absl::StatusOr<bool> got = self->acquire_hold(mode, policy, thread);
  for (int i = 0; !got.ok() && is_replaced(got.status()); ++i) {
    if (i == kMaxReplacements) {
      return absl::AbortedError(absl::StrCat(
          "acquire '", platform::path_text(self->file_.path()),
          "': the lock file was deleted or replaced ", kMaxReplacements,
          " times in a row while it was being locked; giving up"));
    }
    absl::StatusOr<std::shared_ptr<LockEntry>> next = successor_of(self);
    if (!next.ok()) return next.status();
    self = *std::move(next);
    got = self->acquire_hold(mode, policy, thread);
  }
  return got;
}

absl::StatusOr<std::optional<EntryHold>> LockEntry::acquire(
    std::shared_ptr<LockEntry> self, Mode mode, const WaitPolicy& policy) {
  if (policy.deadline.has_value()) {
    absl::StatusOr<EntryHold> got = acquire_wait(std::move(self), mode, policy);
    if (!got.ok()) return got.status();
    return std::optional<EntryHold>(*std::move(got));
  }
  const ThreadKey me = current_thread_key();
  absl::StatusOr<bool> got = hold_current(self, mode, policy, me);
  if (!got.ok()) return got.status();
  if (!*got) return std::optional<EntryHold>();
  return std::optional<EntryHold>(EntryHold(std::move(self), mode, me));
}

absl::StatusOr<EntryHold> LockEntry::acquire_wait(
    std::shared_ptr<LockEntry> self, Mode mode, const WaitPolicy& policy) {
  const ThreadKey me = current_thread_key();
  if (policy.stop.stop_requested()) {
    return cancelled_before_start(self->file_.path(), mode);  // no syscall
  }
  const bool timed = policy.deadline.has_value() || policy.stop.stop_possible();
  const Clock::time_point start = timed ? Clock::now() : Clock::time_point();
  absl::StatusOr<bool> got = hold_current(self, mode, policy, me);
  if (got.ok() && *got) [[likely]] {
    return EntryHold(std::move(self), mode, me);
  }
  if (!got.ok() && got.status().code() != absl::StatusCode::kCancelled) {
    return got.status();
  }
  // Cancelled, or not acquired by the deadline (or in the single try).
  return self->wait_failed(policy,
                           got.ok() ? absl::StatusCode::kDeadlineExceeded
                                    : absl::StatusCode::kCancelled,
                           mode, Clock::now() - start);
}

absl::StatusOr<bool> LockEntry::lockable_acquire(
    std::shared_ptr<LockEntry>& self, Mode mode, const WaitPolicy& policy) {
  // The hold is on the entry that granted it (DirLock's unlock finds it
  // through current()).
  absl::StatusOr<bool> got =
      hold_current(self, mode, policy, current_thread_key());
  if (got.ok() && *got) {
    UniqueLock lk(self->mu_);
    if (self->lockable_holds_++ == 0) self->self_ = self;
  }
  return got;
}

absl::Status LockEntry::lockable_release(Mode mode) {
  std::shared_ptr<LockEntry> keep;  // dropped after mu_ is released
  UniqueLock lk(mu_);
  const bool held =
      mode == Mode::kExclusive ? exclusive_held_ : !shared_owners_.empty();
  if (lockable_holds_ == 0 || !held) {
    return absl::FailedPreconditionError(
        absl::StrCat("unlock '", platform::path_text(file_.path()),
                     "': not held ", to_absl(mode_name(mode)),
                     " through lock()/lock_shared() in this process"));
  }
  if (--lockable_holds_ == 0) keep = std::move(self_);
  return release_hold_locked(mode, current_thread_key(),
                             /*any_owner=*/true);
}

absl::Status LockEntry::release(Mode mode, ThreadKey owner) {
  UniqueLock lk(mu_);
  return release_hold_locked(mode, owner, /*any_owner=*/false);
}

bool LockEntry::holds_locked(ThreadKey thread) const {
  if (exclusive_held_) return exclusive_owner_ == thread;
  return std::find(shared_owners_.begin(), shared_owners_.end(), thread) !=
         shared_owners_.end();
}

bool LockEntry::may_barge_locked(Mode mode) const {
  return mode == Mode::kExclusive && head_ != nullptr && head_->woken &&
         kernel_ == Kernel::kExclusive && free_locked();
}

void LockEntry::grant_locked(Mode mode, ThreadKey thread) {
  if (mode == Mode::kExclusive) {
    exclusive_held_ = true;
    exclusive_owner_ = thread;
  } else {
    shared_owners_.push_back(thread);
  }
}

absl::StatusOr<bool> LockEntry::take_kernel_locked(
    Mode mode, const std::optional<Tier>& tier) {
  // Called only while no thread of this process holds the lock, so even a
  // non-atomic conversion could not expose a critical section. On Linux a
  // downgrade (exclusive -> shared) is atomic: the kernel swaps the lock under
  // one spinlock and nothing can conflict with it, so another process waiting
  // for exclusive never slips in. An upgrade that finds another holder fails
  // having dropped our shared lock; then we hold nothing and wait like anyone.
  absl::StatusOr<bool> got = file_.try_lock(mode);
  if (got.ok() && *got) {
    kernel_ = mode == Mode::kExclusive ? Kernel::kExclusive : Kernel::kShared;
    if (absl::Status fresh = verify_grant_locked(); !fresh.ok()) [[unlikely]] {
      return fresh;
    }
    record_.acquired(file_.path(), file_.id(), mode, tier);
    return true;
  }
  if (kernel_ != Kernel::kNone) (void)unlock_kernel_locked();  // make sure
  return got;
}

absl::Status LockEntry::unlock_kernel_locked() {
  kernel_ = Kernel::kNone;
  record_.released();
  return file_.unlock();
}

absl::Status LockEntry::verify_grant_locked() {
  // One lstat of the path: a grant on a file that no longer has this name
  // excludes nobody who opens the name now (nix's pathlocks checks the same).
  absl::StatusOr<platform::PathCheck> named = file_.check_path();
  if (named.ok() && *named == platform::PathCheck::kNamesIt) [[likely]] {
    return absl::OkStatus();
  }
  kernel_ = Kernel::kNone;
  (void)file_.unlock();  // never recorded: record_ is untouched
  if (!named.ok()) return named.status();
  if (*named == platform::PathCheck::kGone) {
    return absl::NotFoundError(absl::StrCat(
        "acquire '", platform::path_text(file_.path()),
        "': the lock file was deleted after its directory was moved away "
        "from '",
        platform::path_text(file_.paths().directory),
        "'; there is no file left to lock"));
  }
  absl::Status why = replaced_status();
  retire_locked(why);
  return why;
}

void LockEntry::retire_locked(const absl::Status& why) {
  replaced_ = true;
  replaced_flag_.store(true, std::memory_order_release);
  // Each waiter redoes its acquire on the successor (no thread of this
  // process holds this entry: grants happen only when it is free).
  while (head_ != nullptr) {
    Waiter* w = head_;
    remove_locked(w);
    w->leader = false;
    w->woken = false;
    w->error = why;
    wake_locked(w);
  }
}

void LockEntry::push_back_locked(Waiter* w) {
  w->prev = tail_;
  w->next = nullptr;
  if (tail_ != nullptr) {
    tail_->next = w;
  } else {
    head_ = w;
  }
  tail_ = w;
  w->queued = true;
  ++waiting_;
}

void LockEntry::remove_locked(Waiter* w) {
  if (!w->queued) return;
  (w->prev != nullptr ? w->prev->next : head_) = w->next;
  (w->next != nullptr ? w->next->prev : tail_) = w->prev;
  w->prev = w->next = nullptr;
  w->queued = false;
  --waiting_;
}

absl::StatusOr<bool> LockEntry::acquire_uncontended_locked(
    Mode mode, ThreadKey self, const std::optional<Tier>& tier) {
  const Kernel want =
      mode == Mode::kExclusive ? Kernel::kExclusive : Kernel::kShared;
  if (mode == Mode::kExclusive ? !free_locked() : exclusive_held_) {
    return false;
  }
  if (kernel_ != want) {
    absl::StatusOr<bool> got = take_kernel_locked(mode, tier);
    if (!got.ok() || !*got) return got;
  }
  grant_locked(mode, self);
  return true;
}

void LockEntry::StopWaiter::operator()() const noexcept {
  UniqueLock lk(entry->mu_);
  entry->stop_locked(waiter, code);
}

void LockEntry::stop_locked(Waiter* w, absl::StatusCode code) {
  if (w->granted || !w->error.ok() || w->stopped || !w->queued) return;
  w->stopped = true;
  w->stop_code = code;
  if (w->in_kernel) {
    w->kernel_wait->interrupt();  // the leader removes itself when it is out
    return;
  }
  if (w->async != nullptr) {
    // No thread waits for it: leave the queue here. If it was the head (even
    // an elected leader whose kernel wait has not started), the next waiter
    // takes over.
    remove_locked(w);
    w->leader = false;
    dispatch_locked();
    wake_locked(w);
    return;
  }
  w->cv.notify_one();  // a sync waiter removes itself
}

void LockEntry::wake_locked(Waiter* w) {
  if (w->async == nullptr) {
    w->cv.notify_one();
    return;
  }
  AsyncWaiter* a = w->async;
  if (w->queued) {
    // Elected leader: a pool thread waits in the kernel for it.
    a->pool->post([k = a->keep] { run_async_leader(k); });
    return;
  }
  // Out of the queue (granted, failed or stopped): complete it, once. (A
  // leader task that was running when a stop took it out of the queue
  // finds the completion already posted.)
  if (w->completion_posted) return;
  w->completion_posted = true;
  a->pool->post([k = std::move(a->keep)] { complete_async(k); });
}

absl::StatusOr<bool> LockEntry::lead_locked(Waiter& w,
                                            const WaitPolicy& policy) {
  using Result = platform::InterruptibleWait::Result;
  absl::StatusOr<Result> r = Result::kInterrupted;
  const bool interruptible = policy.deadline.has_value() ||
                             policy.stop.stop_possible() || w.async != nullptr;
  // mu_ is dropped and re-taken directly (the caller's UniqueLock still
  // owns it on return). Blocks in the kernel without mu_, so releases, tries
  // and new waiters proceed meanwhile; they queue behind the leader.
  if (!interruptible) {
    mu_.unlock();
    absl::Status st = file_.lock(w.mode);
    mu_.lock();
    r = st.ok() ? absl::StatusOr<Result>(Result::kLocked) : st;
  } else {
    mu_.unlock();
    platform::InterruptibleWait kernel_wait(
        policy.deadline);  // no mu_: syscalls
    mu_.lock();
    if (!w.stopped) {
      w.in_kernel = true;
      w.kernel_wait = &kernel_wait;
      mu_.unlock();
      r = kernel_wait.lock(file_.handle(), w.mode, file_.path());
      mu_.lock();
      w.in_kernel = false;
      w.kernel_wait = nullptr;
    }
  }
  w.leader = false;
  remove_locked(&w);
  if (r.ok() && *r == Result::kLocked) {
    // Taken even if a stop raced with it: the outcome is the grant.
    kernel_ = w.mode == Mode::kExclusive ? Kernel::kExclusive : Kernel::kShared;
    if (absl::Status fresh = verify_grant_locked(); !fresh.ok()) [[unlikely]] {
      // Replaced: the queue was failed too, all redo on the successor. A
      // lookup error: this waiter fails, the next one leads.
      if (!is_replaced(fresh)) dispatch_locked();
      w.error = fresh;
      return fresh;
    }
    record_.acquired(file_.path(), file_.id(), w.mode, w.tier);
    grant_locked(w.mode, w.thread);
    w.granted = true;
    dispatch_locked();  // shared waiters behind a shared leader join it
    return true;
  }
  dispatch_locked();  // the next waiter takes over the kernel wait
  if (!r.ok()) {
    w.error = r.status();
    return r.status();
  }
  if (*r == Result::kDeadline) {
    w.stopped = true;
    w.stop_code = absl::StatusCode::kDeadlineExceeded;
  }
  if (w.stop_code == absl::StatusCode::kDeadlineExceeded) return false;
  return absl::CancelledError();
}

absl::Status LockEntry::reentry_error(Mode mode) const {
  return with_kind(
      absl::FailedPreconditionError(absl::StrCat(
          "acquire '", platform::path_text(file_.path()), "' (",
          to_absl(mode_name(mode)), "): this thread already holds it ",
          exclusive_held_ ? "exclusively" : "shared",
          "; waiting for itself would deadlock")),
      ErrorKind::kSelfDeadlock);
}

absl::StatusOr<bool> LockEntry::acquire_hold(Mode mode,
                                             const WaitPolicy& policy,
                                             ThreadKey self) {
  {
    UniqueLock lk(mu_);
    if (replaced_) [[unlikely]]
      return replaced_status();
    if (holds_locked(self)) return reentry_error(mode);
    if (head_ == nullptr || may_barge_locked(mode)) {
      absl::StatusOr<bool> got =
          acquire_uncontended_locked(mode, self, policy.tier);
      if (!got.ok() || *got) return got;
    }
    if (!policy.wait) return false;
  }
  return acquire_slow(mode, policy, self);
}

absl::StatusOr<bool> LockEntry::acquire_slow(Mode mode,
                                             const WaitPolicy& policy,
                                             ThreadKey self) {
  Waiter w(mode, self);
  w.tier = policy.tier;
  // Declared before the lock: destroyed after it is released, because a
  // running callback takes mu_ and the destructor waits for it.
  std::optional<std::stop_callback<StopWaiter>> on_stop;
  UniqueLock lk(mu_);
  if (replaced_) return replaced_status();
  // The state may have changed since acquire_hold looked: look again.
  if (head_ == nullptr || may_barge_locked(mode)) {
    absl::StatusOr<bool> got =
        acquire_uncontended_locked(mode, self, policy.tier);
    if (!got.ok() || *got) return got;
  }
  w.since = Clock::now();
  if (policy.deadline && w.since >= *policy.deadline) return false;

  push_back_locked(&w);
  if (head_ == &w && free_locked() && kernel_ == Kernel::kNone) {
    w.leader = true;  // nobody here holds it, so another process does
  }
  if (policy.queued) policy.queued();
  if (policy.stop.stop_possible()) {
    lk.unlock();  // the callback runs inline if a stop is already requested
    on_stop.emplace(policy.stop,
                    StopWaiter{this, &w, absl::StatusCode::kCancelled});
    lk.lock();
  }
  for (;;) {
    if (w.granted) return true;
    if (!w.error.ok()) return w.error;
    if (w.woken && !w.stopped) {
      w.woken = false;
      if (head_ == &w && free_locked() && kernel_ == Kernel::kExclusive) {
        remove_locked(&w);
        grant_locked(mode, self);
        return true;
      }
      // Someone arrived first and took it: wait again, still at the head.
    }
    if (w.stopped) {
      remove_locked(&w);
      dispatch_locked();
      return absl::CancelledError();
    }
    if (w.leader) return lead_locked(w, policy);
    if (!policy.deadline) {
      w.cv.wait(lk.native());
    } else if (w.cv.wait_until(lk.native(), *policy.deadline) ==
                   std::cv_status::timeout &&
               !w.granted && !w.leader && w.error.ok() && !w.stopped) {
      remove_locked(&w);
      dispatch_locked();  // e.g. shared waiters behind a timed-out writer
      return false;
    }
  }
}

void LockEntry::acquire_async(std::shared_ptr<LockEntry> self, Mode mode,
                              WaitPolicy policy,
                              std::shared_ptr<PoolState> pool,
                              Executor* executor, Done done) {
  LockEntry& e = *self;
  auto w =
      std::make_shared<AsyncWaiter>(std::move(self), mode, std::move(policy),
                                    std::move(pool), executor, std::move(done));
  const WaitPolicy& p = w->policy;
  if (p.stop.stop_requested()) {
    w->error = cancelled_before_start(e.file_.path(), mode);  // no syscall
    w->pool->post([w] { complete_async(w); });
    return;
  }
  bool queued = false;
  bool leader = false;
  {
    UniqueLock lk(e.mu_);
    absl::StatusOr<bool> got = false;
    if (e.replaced_) {
      got = e.replaced_status();
    } else if (e.head_ == nullptr) {
      got = e.acquire_uncontended_locked(mode, w->thread, p.tier);
    }
    if (!got.ok()) {
      w->error = got.status();
    } else if (*got) {
      w->granted = true;
    } else if (!p.wait || (p.deadline && Clock::now() >= *p.deadline)) {
      w->stopped = true;
      w->stop_code = absl::StatusCode::kDeadlineExceeded;
    } else {
      e.push_back_locked(w.get());
      if (p.queued) p.queued();
      w->keep = w;
      queued = true;
      if (e.head_ == w.get() && e.free_locked() && e.kernel_ == Kernel::kNone) {
        w->leader = leader = true;
      }
    }
  }
  if (!queued) {
    w->pool->post([w] { complete_async(w); });
    return;
  }
  // Outside mu_: a callback for an already-requested stop runs inline.
  w->on_stop.emplace(p.stop,
                     StopWaiter{&e, w.get(), absl::StatusCode::kCancelled});
  w->on_pool_stop.emplace(
      w->pool->stop.get_token(),
      StopWaiter{&e, w.get(), absl::StatusCode::kCancelled});
  if (p.deadline) {
    w->pool->call_at(*p.deadline, [weak = std::weak_ptr<AsyncWaiter>(w)] {
      if (std::shared_ptr<AsyncWaiter> a = weak.lock()) {
        StopWaiter{a->entry.get(), a.get(),
                   absl::StatusCode::kDeadlineExceeded}();
      }
    });
  }
  if (leader) w->pool->post([w] { run_async_leader(w); });
}

void LockEntry::run_async_leader(const std::shared_ptr<AsyncWaiter>& w) {
  LockEntry& e = *w->entry;
  {
    UniqueLock lk(e.mu_);
    // Already stopped and completed, or a duplicate post: nothing to do.
    if (!w->queued || !w->leader || w->in_kernel) return;
    (void)e.lead_locked(*w, w->policy);
    w->keep.reset();  // not the last reference: `w` is ours
    // A stop while the kernel wait was being set up (mu_ released) took it
    // out of the queue and posted its completion already.
    if (w->completion_posted) return;
    w->completion_posted = true;
  }
  complete_async(w);
}

void LockEntry::complete_async(const std::shared_ptr<AsyncWaiter>& w) {
  LockEntry& e = *w->entry;
  bool granted;
  absl::Status error;
  absl::StatusCode stop_code;
  {
    UniqueLock lk(e.mu_);
    granted = w->granted;
    error = w->error;
    stop_code = w->stopped ? w->stop_code : absl::StatusCode::kOk;
  }
  if (!granted && is_replaced(error)) [[unlikely]] {
    // Redo on the file the path names now, with the same policy, pool,
    // executor and completion (a fresh waiter; this one is done).
    absl::StatusOr<std::shared_ptr<LockEntry>> next = current(w->entry);
    if (next.ok()) {
      acquire_async(*std::move(next), w->mode, w->policy, w->pool, w->executor,
                    std::move(w->done));
      return;
    }
    error = next.status();
  }
  absl::StatusOr<EntryHold> result = absl::UnknownError("unset");
  if (granted) {
    result = EntryHold(w->entry, w->mode, ThreadKey());
    w->delivered = true;
  } else if (!error.ok()) {
    result = std::move(error);
  } else {
    result = e.wait_failed(w->policy,
                           stop_code == absl::StatusCode::kOk
                               ? absl::StatusCode::kCancelled
                               : stop_code,
                           w->mode, Clock::now() - w->start);
  }
  Done done = std::move(w->done);
  if (w->executor != nullptr) {
    // If the executor drops this task, destroying `r` releases the lock.
    w->executor->execute(
        [done = std::move(done), r = std::move(result)]() mutable {
          std::move(done)(std::move(r));
        });
  } else {
    std::move(done)(std::move(result));
  }
}

void LockEntry::dispatch_locked() {
  while (head_ != nullptr) {
    Waiter* w = head_;
    if (w->leader)
      return;  // about to block in the kernel; dispatches when done
    const bool exclusive = w->mode == Mode::kExclusive;
    if (exclusive ? !free_locked() : exclusive_held_) return;
    const Kernel want = exclusive ? Kernel::kExclusive : Kernel::kShared;
    if (exclusive && kernel_ == want && w->async == nullptr &&
        Clock::now() - w->since < kStarvation) {
      // Wake the head to come and take it, leaving the lock free meanwhile
      // for whoever gets there first; a starving head is handed it below.
      if (!w->woken) {
        w->woken = true;
        w->cv.notify_one();
      }
      return;
    }
    if (kernel_ != want) {
      absl::StatusOr<bool> got = take_kernel_locked(w->mode, w->tier);
      if (!got.ok()) {
        remove_locked(w);
        w->error = got.status();
        wake_locked(w);
        continue;
      }
      if (!*got) {
        w->leader = true;  // another process holds it
        wake_locked(w);
        return;
      }
    }
    remove_locked(w);
    grant_locked(w->mode, w->thread);
    w->granted = true;
    wake_locked(w);
    if (exclusive) return;
  }
  if (free_locked() && kernel_ != Kernel::kNone) (void)unlock_kernel_locked();
}

absl::Status LockEntry::release_hold_locked(Mode mode, ThreadKey owner,
                                            bool any_owner) {
  if (mode == Mode::kExclusive) {
    if (!exclusive_held_) {
      return absl::FailedPreconditionError(
          absl::StrCat("release '", platform::path_text(file_.path()),
                       "': not held exclusively"));
    }
    exclusive_held_ = false;
    exclusive_owner_ = ThreadKey();
  } else {
    auto it = std::find(shared_owners_.rbegin(), shared_owners_.rend(), owner);
    if (it == shared_owners_.rend() && any_owner && !shared_owners_.empty()) {
      it = shared_owners_.rbegin();
    }
    if (it == shared_owners_.rend()) {
      return absl::FailedPreconditionError(
          absl::StrCat("release '", platform::path_text(file_.path()),
                       "': not held shared"));
    }
    shared_owners_.erase(std::next(it).base());
  }
  if (!free_locked()) return absl::OkStatus();
  if (head_ == nullptr) return unlock_kernel_locked();
  // Hand over: same mode keeps the kernel lock (no syscall); otherwise
  // dispatch changes the kernel mode while nobody here holds it.
  dispatch_locked();
  return absl::OkStatus();
}

absl::Status LockEntry::wait_failed(const WaitPolicy& policy,
                                    absl::StatusCode code, Mode mode,
                                    Clock::duration waited) const {
  if (policy.wait_failed != nullptr) {
    return policy.wait_failed(*this, code, mode, waited);
  }
  return absl::Status(
      code, absl::StrCat("acquire '", platform::path_text(file_.path()), "' (",
                         to_absl(mode_name(mode)), "): ",
                         code == absl::StatusCode::kCancelled ? "cancelled"
                                                              : "timed out",
                         " after ", format_duration(waited)));
}

std::size_t LockEntry::waiting() const {
  UniqueLock lk(mu_);
  return waiting_;
}

bool LockEntry::kernel_held() const {
  UniqueLock lk(mu_);
  return kernel_ != Kernel::kNone;
}

std::size_t LockEntry::holders() const {
  UniqueLock lk(mu_);
  return shared_owners_.size() + (exclusive_held_ ? 1 : 0);
}

}  // namespace tierlock::internal

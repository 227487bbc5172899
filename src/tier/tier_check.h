// src/tier/tier_check.h
//
// Tier checks (internal), the layer between acquires and their callers:
//   SpinLock       - the short lock guarding one context's held stack.
//   ContextState   - a LockContext's held stack.
//   AcquireSite    - what an acquire about to happen is taking, and from where.
//   check_acquire / record_hold / forget_hold - check before blocking, record
//                    after the grant, forget at release.
//   (TIERLOCK_HELD, the parent's holds: tier_env.h.)
#ifndef TIERLOCK_SRC_TIER_TIER_CHECK_H_
#define TIERLOCK_SRC_TIER_TIER_CHECK_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "platform/platform.h"
#include "tier/tier_env.h"
#include "tierlock/mode.h"
#include "tierlock/source_location.h"
#include "tierlock/tier.h"

namespace tierlock::internal {

// A test-and-test-and-set lock: held for a few loads and stores, and
// contended only when a hold is released on another thread than the one
// acquiring. std::atomic, so ThreadSanitizer understands it.
class ABSL_LOCKABLE SpinLock {
 public:
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    if (!locked_.exchange(true, std::memory_order_acquire)) [[likely]] return;
    lock_slow();
  }
  void unlock() ABSL_UNLOCK_FUNCTION() {
    locked_.store(false, std::memory_order_release);
  }

 private:
  ABSL_ATTRIBUTE_NOINLINE void lock_slow() {
    do {
      while (locked_.load(std::memory_order_relaxed)) std::this_thread::yield();
    } while (locked_.exchange(true, std::memory_order_acquire));
  }

  std::atomic<bool> locked_{false};
};

class ABSL_SCOPED_LOCKABLE SpinLockHolder {
 public:
  explicit SpinLockHolder(SpinLock& mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu)
      : mu_(mu) {
    mu_.lock();
  }
  ~SpinLockHolder() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  SpinLockHolder(const SpinLockHolder&) = delete;
  SpinLockHolder& operator=(const SpinLockHolder&) = delete;

 private:
  SpinLock& mu_;
};

// An optional Tier laid out flat (level, name, flag) with optional's reading
// interface: the record is copied on every checked acquire, and
// std::optional's piecewise construction made those copies stall on store
// forwarding.
struct MaybeTier {
  Tier tier;
  bool present = false;
  MaybeTier() = default;
  MaybeTier(const std::optional<Tier>& t)  // NOLINT: implicit, like optional
      : tier(t.value_or(Tier{})), present(t.has_value()) {}
  MaybeTier(const Tier& t, bool p) : tier(t), present(p) {}
  explicit operator bool() const { return present; }
  const Tier* operator->() const { return &tier; }
  const Tier& operator*() const { return tier; }
  operator std::optional<Tier>() const {  // NOLINT: implicit, like optional
    return present ? std::optional<Tier>(tier) : std::nullopt;
  }
};

// What an acquire takes. `lock_file` must stay valid while the hold is
// recorded (it points into the registry entry, which the Guard keeps alive).
struct AcquireSite {
  const std::filesystem::path* lock_file = nullptr;
  MaybeTier tier;
  Mode mode = Mode::kExclusive;
  SourceLocation where;
  bool try_only = false;
  std::uint64_t group = 0;  // non-zero: one acquire_all call
  std::uint32_t node = 0;   // learned-order node (debug checks), 0 if none
};

struct HeldRecord {
  std::uint64_t hold_id = 0;
  AcquireSite site;
  // True when every lock the context held when this one was taken is known to
  // reach it in the learned order (an edge each, or a chained hold between).
  // Then the locks older than it in the stack need no edge of their own to a
  // lock taken later: they reach it through this one (lockdep's argument for
  // walking the held stack back only to the first such hold). False for a
  // try, for a hold taken in spite of a reported violation, and for a hold
  // recorded without the check (an async grant): walking back goes past it.
  bool chained = false;
};
static_assert(std::is_trivially_copyable_v<HeldRecord>);

// Returns the learned-order node of a lock file, keyed by its identity (hard
// links are one node; an inode number reused by a new file elsewhere is a new
// node: see tier_check.cc), caching it in `cache`; never 0.
std::uint32_t order_node(std::atomic<std::uint32_t>& cache,
                         const platform::FileId& id,
                         const std::filesystem::path& lock_file);

// A LockContext's state. Owned by its handles (LockContext, Scope, the
// thread's default) through make_context's shared_ptr, AND by its recorded
// holds: when the last handle goes while holds remain, the state is orphaned
// and the last forget_hold deletes it. So a Guard keeps a plain pointer and an
// acquire pays no reference count.
struct ContextState {
  explicit ContextState(std::string n) : name(std::move(n)) {
    held.reserve(kReservedHolds);
  }
  // A std::vector reserved once, not an InlinedVector: its push_back and
  // pop_back inline to a few instructions on the acquire path (HeldRecord is
  // trivially copyable), and 8 covers nesting depths seen in practice.
  static constexpr std::size_t kReservedHolds = 8;
  SpinLock mu;
  std::vector<HeldRecord> held ABSL_GUARDED_BY(mu);
  std::uint64_t next_hold_id ABSL_GUARDED_BY(mu) = 1;
  std::string name ABSL_GUARDED_BY(mu);  // empty: named by the first recording thread
  bool orphaned ABSL_GUARDED_BY(mu) = false;  // no handle left
};

// Creates a context state owned as described above.
std::shared_ptr<ContextState> make_context(std::string name);

extern std::atomic<TierCheckMode> g_tier_check_mode;

// The one load an acquire pays when checks are off.
inline bool tier_checks_active() {
  return g_tier_check_mode.load(std::memory_order_relaxed) !=
         TierCheckMode::kIgnore;
}

// Returns the context current on this thread (never null). The reference is
// valid until the thread exits or its innermost Scope ends.
const std::shared_ptr<ContextState>& current_context();
// The innermost Scope's context on this thread, or null.
const std::shared_ptr<ContextState>*& bound_context();
// Binds `ctx` (which must outlive the binding) as the current context;
// returns the previous binding, which pop_scope restores. For
// LockContext::Scope: the context current before stays an outer context of
// this thread (outer_holds_present) until pop_scope.
const std::shared_ptr<ContextState>* push_scope(
    const std::shared_ptr<ContextState>* ctx);
void pop_scope(const std::shared_ptr<ContextState>* previous) noexcept;

// current_context().get(), cached per thread: what a synchronous acquire
// needs (its Guard keeps a plain pointer), in one thread-local load. The cache
// is cleared whenever the binding changes or the thread's default context
// goes away.
extern thread_local constinit ContextState* t_current_context;
ContextState& current_context_state_slow();
inline ContextState& current_context_state() {
  if (ContextState* c = t_current_context) [[likely]] return *c;
  return current_context_state_slow();
}

// Checks an acquire about to happen against `ctx`. OK: go on (also after a
// reported violation in kReport). kFailedPrecondition naming both locks: a
// violation in kFail. Does not return in kAbort.
absl::Status check_acquire(ContextState& ctx, const AcquireSite& site);
// check_acquire, then records the hold at once, before the acquire waits
// (as lockdep does): one critical section on the fast path. Returns the hold
// id; the caller must forget_hold it if the acquire then fails.
absl::StatusOr<std::uint64_t> check_and_record(ContextState& ctx,
                                               const AcquireSite& site);
// As above for the hot path: returns the hold id (never 0), or 0 with the
// failure in `*error`. Inline: an in-order acquire with nothing to report or
// learn is one pass of the context's spin lock, with the record built in
// place (the budget is 30 ns for all of it, the release included).
// The site is taken by value so that, inlined, it lives in registers and
// is stored once, into the record.
std::uint64_t check_and_record_fast(ContextState& ctx, AcquireSite site);
std::uint64_t check_and_record_slow(ContextState& ctx, const AcquireSite& site,
                                    absl::Status* error);
inline std::uint64_t check_and_record(ContextState& ctx, AcquireSite site,
                                      absl::Status* error) {
  if (std::uint64_t id = check_and_record_fast(ctx, site); id != 0) [[likely]] {
    return id;
  }
  return check_and_record_slow(ctx, site, error);
}
// Records a granted hold; returns the id forget_hold takes. `chained`: see
// HeldRecord (false for a hold recorded without the check).
std::uint64_t record_hold(ContextState& ctx, const AcquireSite& site,
                          bool chained = false);
// Forgets a recorded hold (any thread). No-op if unknown. Inline for the
// common release: the newest hold of a context that still has a handle.
void forget_hold_slow(ContextState& ctx, std::uint64_t hold_id) noexcept;
inline void forget_hold(ContextState& ctx, std::uint64_t hold_id) noexcept {
  ctx.mu.lock();
  if (!ctx.held.empty() && ctx.held.back().hold_id == hold_id &&
      !ctx.orphaned) [[likely]] {
    ctx.held.pop_back();
    ctx.mu.unlock();
    return;
  }
  ctx.mu.unlock();
  forget_hold_slow(ctx, hold_id);
}

// Holds taken through the std Lockable members have no Guard: they are
// remembered per (entry, mode), last in first out, until unlock().
void record_lockable_hold(const void* entry, Mode mode, ContextState* ctx,
                          std::uint64_t hold_id);
void forget_lockable_hold(const void* entry, Mode mode) noexcept;

// A new id for one acquire_all call.
std::uint64_t new_acquire_group();

// TIERLOCK_HELD (InheritedHold, inherited_holds, the codec): tier_env.h.

// Learned nestings (debug checks) this thread has seen accepted, as a
// direct-mapped cache of edge keys (from << 32 | to; 0 is never a key): a hit
// is one multiply and one thread-local load, and takes no lock. A miss only
// means "ask the slow path", which looks in the thread's full set and the
// global graph and refills the slot.
extern thread_local constinit std::array<std::uint64_t, 64> t_edge_cache;
inline std::uint64_t edge_key(std::uint32_t from, std::uint32_t to) {
  return (std::uint64_t{from} << 32) | to;
}
inline std::size_t edge_slot(std::uint64_t key) {
  return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ULL) >> 58);
}

// True when `site` may be taken with nothing to report, learn or name: not
// held by the context already (re-entry is an error the slow path builds), no
// held tier at or above its own (outside its acquire_all group), a named
// context, and every learned nesting it adds (debug checks) already in this
// thread's cache. A try is never checked for order and learns nothing: it
// cannot wait, so it cannot deadlock. False only means "take the slow path",
// which decides.
inline bool fast_check_locked(const ContextState& ctx, const AcquireSite& site)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(ctx.mu) {
  if (ctx.name.empty()) return false;
  // Nodes are zero only for holds without a lock file of their own (leases),
  // which take no part in the learned order. The walk back for
  // edges stops at the first chained hold (see HeldRecord::chained): in order,
  // that is the newest, and the check is one cache probe.
  bool linked = site.try_only;
  for (auto it = ctx.held.rbegin(); it != ctx.held.rend(); ++it) {
    const HeldRecord& r = *it;
    if (r.site.lock_file == site.lock_file) return false;  // re-entry
    if (site.try_only) continue;
    if (site.tier.present && r.site.tier.present &&
        r.site.tier.tier.level >= site.tier.tier.level &&
        (r.site.group == 0 || r.site.group != site.group)) {
      return false;  // a violation to report (or an acquire_all group's own)
    }
    if (!linked && r.site.node != 0) {
      const std::uint64_t key = edge_key(r.site.node, site.node);
      if (t_edge_cache[edge_slot(key)] != key) return false;
      linked = r.chained;
    }
  }
  return true;
}

// The number of LockContext::Scope bindings on this thread. Inside one, the
// holds of the contexts bound below it (the thread's own, outer scopes') are
// held while the task runs, so the slow path checks against them too.
extern thread_local constinit int t_scope_depth;
// True when a context bound below the current one on this thread holds a lock.
bool outer_holds_present(const ContextState& ctx);

inline std::uint64_t check_and_record_fast(ContextState& ctx,
                                           AcquireSite site) {
  if (site.tier.present) {
    // The parent process's holds (TIERLOCK_HELD) are checked the slow way.
    const std::vector<InheritedHold>* inherited =
        g_inherited_holds.load(std::memory_order_acquire);
    if (inherited == nullptr || !inherited->empty()) return 0;
  }
  if (t_scope_depth != 0 && outer_holds_present(ctx)) return 0;
  ctx.mu.lock();
  if (!fast_check_locked(ctx, site) ||
      ctx.held.size() == ctx.held.capacity()) {
    ctx.mu.unlock();
    return 0;
  }
  const std::uint64_t id = ctx.next_hold_id++;
  ctx.held.push_back(HeldRecord{id, site, !site.try_only});
  ctx.mu.unlock();
  return id;
}

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_TIER_TIER_CHECK_H_

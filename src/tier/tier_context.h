// src/tier/tier_context.h
//
// Tier-check contexts (internal): what a LockContext holds, and which one is
// current on a thread.
//   SpinLock, SpinLockHolder - the short lock guarding one context's holds.
//   MaybeTier      - an optional Tier laid out flat.
//   AcquireSite    - what an acquire is taking, how and from where.
//   HeldRecord     - one recorded hold.
//   ContextState   - a LockContext's held stack.
//   record_hold / forget_hold - record a hold, forget it at release.
//   current_context, push_scope / pop_scope - the thread's current context.
#ifndef TIERLOCK_SRC_TIER_TIER_CONTEXT_H_
#define TIERLOCK_SRC_TIER_TIER_CONTEXT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "tier/lock_id.h"
#include "tierlock/lock_context.h"
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
    if (!locked_.exchange(true, std::memory_order_acquire)) [[likely]]
      return;
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

// What an acquire takes. `lock`'s name must stay valid while the hold is
// recorded (a lock file's points into the registry entry, which the Guard
// keeps alive; a lease's is kept by the lease).
struct AcquireSite {
  LockId lock;
  MaybeTier tier;
  Mode mode = Mode::kExclusive;
  SourceLocation where;
  bool try_only = false;
  std::uint64_t group = 0;  // non-zero: one acquire_all call
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

}  // namespace tierlock::internal

namespace tierlock {

// A LockContext's state (lock_context.h declares it, opaque). Owned by its
// handles (LockContext, Scope, the thread's default) through make_context's
// shared_ptr, AND by its recorded holds: when the last handle goes while holds
// remain, the state is orphaned and the last forget_hold deletes it. So a Guard
// keeps a plain pointer and an acquire pays no reference count.
struct LockContext::State {
  explicit State(std::string n) : name(std::move(n)) {
    held.reserve(kReservedHolds);
  }
  // A std::vector reserved once, not an InlinedVector: its push_back and
  // pop_back inline to a few instructions on the acquire path (HeldRecord is
  // trivially copyable), and 8 covers nesting depths seen in practice.
  static constexpr std::size_t kReservedHolds = 8;
  internal::SpinLock mu;
  std::vector<internal::HeldRecord> held ABSL_GUARDED_BY(mu);
  std::uint64_t next_hold_id ABSL_GUARDED_BY(mu) = 1;
  std::string name
      ABSL_GUARDED_BY(mu);  // empty: named by the first recording thread
  bool orphaned ABSL_GUARDED_BY(mu) = false;  // no handle left
};

}  // namespace tierlock

namespace tierlock::internal {

using ContextState = LockContext::State;

// Creates a context state owned as described above.
std::shared_ptr<ContextState> make_context(std::string name);

// The name a thread's own context gets: "thread <tid>".
std::string thread_task_name();

// Records a granted hold; returns the id forget_hold takes. `chained`: see
// HeldRecord (false for a hold recorded without the check).
std::uint64_t record_hold(ContextState& ctx, const AcquireSite& site,
                          bool chained = false);
// Forgets a recorded hold (any thread). No-op if unknown. Inline for the
// common release: the newest hold of a context that still has a handle.
void forget_hold_slow(ContextState& ctx, std::uint64_t hold_id) noexcept;
inline void forget_hold(ContextState& ctx, std::uint64_t hold_id) noexcept {
  ctx.mu.lock();
  if (!ctx.held.empty() && ctx.held.back().hold_id == hold_id && !ctx.orphaned)
      [[likely]] {
    ctx.held.pop_back();
    ctx.mu.unlock();
    return;
  }
  ctx.mu.unlock();
  forget_hold_slow(ctx, hold_id);
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
  if (ContextState* c = t_current_context) [[likely]]
    return *c;
  return current_context_state_slow();
}

// The number of LockContext::Scope bindings on this thread. Inside one, the
// holds of the contexts bound below it (the thread's own, outer scopes') are
// held while the task runs, so the slow path checks against them too.
extern thread_local constinit int t_scope_depth;
// True when a context bound below the current one on this thread holds a lock.
bool outer_holds_present(const ContextState& ctx);
// Calls `fn` for each context bound below `ctx` on this thread, outermost
// first, each once (not `ctx` itself).
void for_each_outer_context(const ContextState& ctx,
                            absl::FunctionRef<void(ContextState&)> fn);

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_TIER_TIER_CONTEXT_H_

// src/tier/tier_check.h
//
// Tier checks (internal): an acquire is checked against its context before
// it waits, and its hold recorded at once.
//   tier_checks_active - the one load an acquire pays when checks are off.
//   check_acquire / check_and_record - check (and record) an acquire.
//   order_node         - a lock file's node in the learned order.
//   new_acquire_group  - an id for one acquire_all call.
// (Contexts and holds: tier_context.h; the learned order: order_graph.h;
// reports: tier_report.h; TIERLOCK_HELD: tier_env.h.)
#ifndef TIERLOCK_SRC_TIER_TIER_CHECK_H_
#define TIERLOCK_SRC_TIER_TIER_CHECK_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "platform/platform.h"
#include "tier/tier_context.h"
#include "tier/tier_env.h"
#include "tierlock/tier.h"

namespace tierlock::internal {

// Returns the learned-order node of a lock file, keyed by its identity (hard
// links are one node; an inode number reused by a new file elsewhere is a new
// node: see tier_check.cc), caching it in `cache`; never 0.
std::uint32_t order_node(std::atomic<std::uint32_t>& cache,
                         const platform::FileId& id,
                         const std::filesystem::path& lock_file);

extern std::atomic<TierCheckMode> g_tier_check_mode;

// The one load an acquire pays when checks are off.
inline bool tier_checks_active() {
  return g_tier_check_mode.load(std::memory_order_relaxed) !=
         TierCheckMode::kIgnore;
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

// A new id for one acquire_all call.
std::uint64_t new_acquire_group();

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
  // Nodes are zero only for leases, which take no part in the learned order.
  // The walk back for edges stops at the first chained hold (see
  // HeldRecord::chained): in order, that is the newest, and the check is one
  // cache probe.
  bool linked = site.try_only;
  for (auto it = ctx.held.rbegin(); it != ctx.held.rend(); ++it) {
    const HeldRecord& r = *it;
    if (r.site.lock == site.lock) return false;  // re-entry
    if (site.try_only) continue;
    if (site.tier.present && r.site.tier.present &&
        r.site.tier.tier.level >= site.tier.tier.level &&
        (r.site.group == 0 || r.site.group != site.group)) {
      return false;  // a violation to report (or an acquire_all group's own)
    }
    if (!linked && r.site.lock.node() != 0) {
      const std::uint64_t key = edge_key(r.site.lock.node(), site.lock.node());
      if (t_edge_cache[edge_slot(key)] != key) return false;
      linked = r.chained;
    }
  }
  return true;
}

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
  if (!fast_check_locked(ctx, site) || ctx.held.size() == ctx.held.capacity()) {
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

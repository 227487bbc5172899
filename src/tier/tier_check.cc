// Tier checks: declared tiers and the learned nesting order, checked before
// an acquire waits (see tier_check.h).
#include "tier/tier_check.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/attributes.h"
#include "absl/container/flat_hash_set.h"
#include "tier/order_graph.h"
#include "tier/tier_report.h"

#ifndef TIERLOCK_DEBUG_CHECKS
#define TIERLOCK_DEBUG_CHECKS 0
#endif

namespace tierlock {
namespace internal {

// Only the library's default mode follows its build: every check, the
// learned order included, is compiled into every build.
constexpr bool kDebugChecks = TIERLOCK_DEBUG_CHECKS != 0;

std::atomic<TierCheckMode> g_tier_check_mode{
    kDebugChecks ? TierCheckMode::kAbort : TierCheckMode::kIgnore};

namespace {

// Set once TIERLOCK_CHECKS has chosen the mode: a consumer's Debug default
// (request_debug_default) then leaves it alone.
constinit std::atomic<bool> g_env_mode{false};

std::optional<TierCheckMode> parse_checks(std::string_view v) {
  if (v == "abort") return TierCheckMode::kAbort;
  if (v == "fail") return TierCheckMode::kFail;
  if (v == "report") return TierCheckMode::kReport;
  if (v == "off" || v == "ignore") return TierCheckMode::kIgnore;
  return std::nullopt;
}

// TIERLOCK_CHECKS=abort|fail|report|off, read once, when the library is
// loaded (before main, normally before any thread changes the environment).
[[maybe_unused]] const bool g_env_read = [] {
  const char* v =
      std::getenv("TIERLOCK_CHECKS");  // NOLINT(concurrency-mt-unsafe)
  if (v == nullptr || *v == '\0') return false;
  if (std::optional<TierCheckMode> mode = parse_checks(v)) {
    g_tier_check_mode.store(*mode, std::memory_order_relaxed);
    g_env_mode.store(true, std::memory_order_relaxed);
    return true;
  }
  std::fprintf(stderr,
               "tierlock: ignoring TIERLOCK_CHECKS=%s (expected abort, fail, "
               "report or off)\n",
               v);
  return false;
}();

}  // namespace

bool request_debug_default() noexcept {
  if (!g_env_mode.load(std::memory_order_relaxed)) {
    g_tier_check_mode.store(TierCheckMode::kAbort, std::memory_order_relaxed);
  }
  return true;
}

}  // namespace internal

bool request_tier_debug_default() noexcept {
  return internal::request_debug_default();
}

namespace internal {

// Constant-initialised, so access is a plain thread-local load.
thread_local constinit std::array<std::uint64_t, 64> t_edge_cache{};

namespace {

// ------------------------------------------------------------ learned order

// The process's learned order (order_graph.h). A thread remembers the edges
// it has seen, so a repeated nesting costs one thread-local lookup and no
// global lock.
OrderGraph& learned_order() {
  static auto* g = new OrderGraph();  // leaked: holds may outlive statics
  return *g;
}

// Nestings (edges) this thread has seen and the graph has accepted. Edges are
// never removed, so a thread's copy never goes stale.
thread_local absl::flat_hash_set<std::uint64_t> t_edges;
// t_edge_cache (tier_check.h) is its direct-mapped front.

bool edge_known(std::uint64_t key) {
  std::uint64_t& slot = t_edge_cache[edge_slot(key)];
  if (slot == key) [[likely]]
    return true;
  if (!t_edges.contains(key)) return false;
  slot = key;
  return true;
}

void edge_learned(std::uint64_t key) {
  t_edges.insert(key);
  t_edge_cache[edge_slot(key)] = key;
}

OrderGraph::Site graph_site(const AcquireSite& site, const std::string& task) {
  return OrderGraph::Site{platform::path_text(site.lock.display()), site.tier,
                          site.mode, site.where, task};
}

// One hold as the slow path sees it: the acquiring context's, or one of a
// context bound below it on this thread (see outer_holds).
struct HeldView {
  HeldRecord record;
  const ContextState* owner;
  std::string task;
};

// Copies the holds of the contexts bound below `ctx` on this thread,
// outermost first: while a Scope runs synchronously on a thread, the thread
// cannot release what it holds until the task is done, so for deadlock those
// are the task's holds too.
std::vector<HeldView> outer_holds(const ContextState& ctx) {
  std::vector<HeldView> out;
  for_each_outer_context(ctx, [&](ContextState& outer) {
    SpinLockHolder lock(outer.mu);
    for (const HeldRecord& r : outer.held) {
      out.push_back({r, &outer, outer.name});
    }
  });
  return out;
}

// The parent's holds, then `all`, for a report.
std::vector<HeldLock> snapshot(const std::vector<HeldView>& all) {
  std::vector<HeldLock> held;
  for (const InheritedHold& h : inherited_holds()) held.push_back(held_lock(h));
  for (const HeldView& h : all)
    held.push_back(held_lock(h.record.site, h.task));
  return held;
}

// The learned-order check (see OrderGraph). `from` indexes the holds in
// `all` that get an edge to the lock being taken (the walk back to each
// context's first chained hold); every held lock is a target: reaching any of
// them from the new lock closes a cycle. In kReport an accepted violation
// adds no edge, so the graph stays acyclic.
std::optional<TierViolation> check_nesting(
    const AcquireSite& site, const std::string& task,
    const std::vector<HeldView>& all, const std::vector<std::size_t>& from) {
  const OrderGraph::Node node = site.lock.node();
  absl::flat_hash_set<OrderGraph::Node> targets;
  for (const HeldView& h : all) {
    const OrderGraph::Node n = h.record.site.lock.node();
    if (n != 0 && n != node) targets.insert(n);
  }
  std::vector<OrderGraph::Edge> edges;
  edges.reserve(from.size());
  const OrderGraph::Site inner = graph_site(site, task);
  for (std::size_t i : from) {
    edges.push_back({all[i].record.site.lock.node(), node,
                     graph_site(all[i].record.site, all[i].task), inner});
  }
  std::vector<OrderGraph::Edge> path =
      learned_order().add_unless_cycle(node, edges, targets);
  if (path.empty()) {
    for (std::size_t i : from) {
      edge_learned(edge_key(all[i].record.site.lock.node(), node));
    }
    return std::nullopt;
  }
  TierViolation v;
  v.kind = TierViolation::Kind::kLearnedCycle;
  v.task = task;
  v.acquiring = held_lock(site, task);
  // The path ends at the held lock that closes the cycle.
  const OrderGraph::Node closing = path.back().to;
  for (const HeldView& h : all) {
    if (h.record.site.lock.node() == closing) {
      v.conflicting = held_lock(h.record.site, h.task);
      break;
    }
  }
  for (const OrderGraph::Edge& e : path) {
    v.earlier.push_back({held_lock(e.outer), held_lock(e.inner)});
  }
  v.held = snapshot(all);
  return v;
}

}  // namespace

std::uint32_t order_node(std::atomic<std::uint32_t>& cache,
                         const platform::FileId& id,
                         const std::filesystem::path& lock_file) {
  if (std::uint32_t n = cache.load(std::memory_order_relaxed); n != 0) return n;
  // An identity met again at another path is the same node only while the
  // path it was first seen at still names it (a hard link); otherwise the old
  // file is gone (tests make and remove thousands of lock files) and this is
  // a new one. Both probes happen once per registry entry.
  const std::uint32_t node = learned_order().node_of(
      id, platform::path_text(lock_file), [&](const std::string& seen_at) {
        const std::filesystem::path old(seen_at);
        absl::StatusOr<platform::FileId> now = platform::stat_lock_file(
            old.parent_path(), old.filename().string());
        return now.ok() && *now == id;
      });
  cache.store(node, std::memory_order_relaxed);
  return node;
}

namespace {

// The checks, the slow way: everything a report needs. Kept out of line so
// the fast path has a small frame (a TierViolation is ~1 KB of stack to
// zero). In order: re-entry (an error), then, unless the acquire is a try,
// declared tiers and the learned order.
ABSL_ATTRIBUTE_NOINLINE absl::StatusOr<std::uint64_t> check_slow(
    ContextState& ctx, const AcquireSite& site, bool record,
    TierCheckMode mode) {
  const std::uint32_t node = site.lock.node();
  std::vector<HeldView> all = outer_holds(ctx);
  const std::size_t outer_count = all.size();
  std::optional<TierViolation> violation;
  std::string task;
  if (site.tier && !site.try_only) {
    for (const InheritedHold& h : inherited_holds()) {
      if (h.level >= site.tier->level) {
        TierViolation v;
        v.kind = h.level == site.tier->level ? TierViolation::Kind::kSameTier
                                             : TierViolation::Kind::kTierOrder;
        v.conflicting = held_lock(h);
        violation = std::move(v);
        break;
      }
    }
  }
  {
    SpinLockHolder lock(ctx.mu);
    if (ctx.name.empty()) ctx.name = thread_task_name();
    task = ctx.name;
    for (const HeldRecord& r : ctx.held) all.push_back({r, &ctx, task});
  }
  // An async acquire (record false) occupies no thread while it waits: it
  // is granted when the task releases its own hold, so it is no re-entry.
  for (const HeldView& h : all) {
    if (!record) break;
    if (site.lock.kind() != LockId::Kind::kNone &&
        h.record.site.lock == site.lock) {
      return reentry_error(site, h.record.site, h.task);
    }
  }
  if (site.try_only) return record ? record_hold(ctx, site, false) : 0;

  // Declared tiers: this context's holds (the parent's were looked at above).
  const HeldView* worst = nullptr;
  for (std::size_t i = outer_count; i < all.size() && !violation; ++i) {
    const HeldRecord& r = all[i].record;
    if (!site.tier || !r.site.tier) continue;
    if (r.site.tier->level < site.tier->level) continue;
    if (r.site.group != 0 && r.site.group == site.group) continue;
    if (worst == nullptr ||
        r.site.tier->level > worst->record.site.tier->level) {
      worst = &all[i];
    }
  }
  if (worst != nullptr) {
    TierViolation v;
    v.kind = worst->record.site.tier->level == site.tier->level
                 ? TierViolation::Kind::kSameTier
                 : TierViolation::Kind::kTierOrder;
    v.conflicting = held_lock(worst->record.site, task);
    violation = std::move(v);
  }

  // Learned order: edges from each context's holds back to its first chained
  // one (see HeldRecord::chained).
  std::vector<std::size_t> from;
  bool known = true;
  if (node != 0) {
    std::vector<const ContextState*> done;
    for (std::size_t i = all.size(); i-- > 0;) {
      const HeldView& h = all[i];
      if (std::find(done.begin(), done.end(), h.owner) != done.end()) continue;
      const std::uint32_t held_node = h.record.site.lock.node();
      if (held_node != 0 && held_node != node) {
        from.push_back(i);
        if (!edge_known(edge_key(held_node, node))) known = false;
      }
      if (h.record.chained) done.push_back(h.owner);
    }
  }
  if (!violation && known) return record ? record_hold(ctx, site, true) : 0;

  bool chained = true;
  if (violation) {
    violation->task = task;
    violation->acquiring = held_lock(site, task);
    std::vector<HeldView> own(
        all.begin() + static_cast<std::ptrdiff_t>(outer_count), all.end());
    violation->held = snapshot(own);
    if (absl::Status st = report_violation(*std::move(violation), mode);
        !st.ok()) {
      return st;
    }
    chained = false;  // taken in spite of the report: learned nothing
  } else if (std::optional<TierViolation> v =
                 check_nesting(site, task, all, from)) {
    if (absl::Status st = report_violation(*std::move(v), mode); !st.ok()) {
      return st;
    }
    chained = false;
  }
  return record ? record_hold(ctx, site, chained) : 0;
}

// The checks, and with `record`, the hold recorded: the fast path, or the slow
// way.
absl::StatusOr<std::uint64_t> check(ContextState& ctx, const AcquireSite& site,
                                    bool record) {
  const TierCheckMode mode = g_tier_check_mode.load(std::memory_order_relaxed);
  if (mode == TierCheckMode::kIgnore) {
    return record ? record_hold(ctx, site) : 0;
  }
  if (!record) {
    if ((!site.tier || inherited_holds().empty()) &&
        (t_scope_depth == 0 || !outer_holds_present(ctx))) {
      SpinLockHolder lock(ctx.mu);
      if (fast_check_locked(ctx, site)) return 0;
    }
  } else if (!site.tier || inherited_holds().empty()) {
    if (std::uint64_t id = check_and_record_fast(ctx, site); id != 0) {
      return id;
    }
  }
  return check_slow(ctx, site, record, mode);
}

}  // namespace

absl::Status check_acquire(ContextState& ctx, const AcquireSite& site) {
  return check(ctx, site, false).status();
}

absl::StatusOr<std::uint64_t> check_and_record(ContextState& ctx,
                                               const AcquireSite& site) {
  return check(ctx, site, true);
}

std::uint64_t check_and_record_slow(ContextState& ctx, const AcquireSite& site,
                                    absl::Status* error) {
  // The fast path has just said no: straight to the slow way.
  const TierCheckMode mode = g_tier_check_mode.load(std::memory_order_relaxed);
  absl::StatusOr<std::uint64_t> id = mode == TierCheckMode::kIgnore
                                         ? record_hold(ctx, site)
                                         : check_slow(ctx, site, true, mode);
  if (!id.ok()) {
    *error = std::move(id).status();
    return 0;
  }
  return *id;
}

std::uint64_t new_acquire_group() {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace internal

// ------------------------------------------------------------- public API

void set_tier_check_mode(TierCheckMode mode) {
  internal::g_tier_check_mode.store(mode, std::memory_order_relaxed);
}

TierCheckMode tier_check_mode() {
  return internal::g_tier_check_mode.load(std::memory_order_relaxed);
}

bool tier_debug_checks() { return internal::kDebugChecks; }

}  // namespace tierlock

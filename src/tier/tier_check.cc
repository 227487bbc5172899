// Tier checks: declared tiers, learned nesting order, reports, TIERLOCK_HELD.
#include "tier/tier_check.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <utility>

#include "absl/base/attributes.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/mutex.h"
#include "base/string_util.h"
#include "tier/tier_names.h"
#include "tierlock/lock_context.h"
#include "tierlock/text.h"

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
  const char* v = std::getenv("TIERLOCK_CHECKS");  // NOLINT(concurrency-mt-unsafe)
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

// Constant-initialised, so access is a plain thread-local load.
thread_local constinit std::array<std::uint64_t, 64> t_edge_cache{};

namespace {

// ---------------------------------------------------------------- contexts

thread_local const std::shared_ptr<ContextState>* t_bound = nullptr;
// The thread's own context, made at its first checked acquire. Its end clears
// the cache, so a lock taken by a later thread_local destructor finds no
// dangling pointer.
struct DefaultContext {
  std::shared_ptr<ContextState> ctx;
  DefaultContext() = default;
  DefaultContext(const DefaultContext&) = delete;
  DefaultContext& operator=(const DefaultContext&) = delete;
  ~DefaultContext() { t_current_context = nullptr; }
};
thread_local DefaultContext t_default;
// The contexts current below each Scope on this thread, outermost first (null
// for a thread default never made). Each stays alive through its Scope or
// the thread's default while it is listed here.
thread_local std::vector<ContextState*> t_outer;

std::string thread_name() {
  return absl::StrCat("thread ", platform::current_tid());
}

// ------------------------------------------------------------ learned order
//
// A directed graph over lock-file identities: an edge A -> B means B was
// taken while A was held. It only grows and is kept acyclic: an edge that
// would close a cycle is reported instead of added. Because every held lock
// was taken while the older held ones were held, the held stack is already a
// path in the graph, so a new edge from the newest held lock H to the lock N
// being taken closes a cycle exactly when N reaches some held lock. A thread
// remembers the edges it has seen, so a repeated nesting costs one
// thread-local lookup and no global lock.

struct Site {
  std::string lock_file;
  std::optional<Tier> tier;
  Mode mode = Mode::kExclusive;
  SourceLocation where;
  std::string task;
};

struct Edge {
  Site outer;
  Site inner;
};

struct OrderGraph {
  Mutex mu;
  // The node of each file identity, with the lock-file path it was first
  // seen at (see order_node).
  absl::flat_hash_map<platform::FileId, std::pair<std::string, std::uint32_t>>
      node_of ABSL_GUARDED_BY(mu);
  // out[n]: successors of node n (1-based ids; out[0] unused).
  std::vector<absl::flat_hash_map<std::uint32_t, Edge>> out
      ABSL_GUARDED_BY(mu) = std::vector<absl::flat_hash_map<std::uint32_t, Edge>>(1);
};

OrderGraph& graph() {
  static auto* g = new OrderGraph();  // leaked: holds may outlive statics
  return *g;
}

// Nestings (edges) this thread has seen and the graph has accepted. Edges are
// never removed, so a thread's copy never goes stale.
thread_local absl::flat_hash_set<std::uint64_t> t_edges;
// t_edge_cache (tier_check.h) is its direct-mapped front.

bool edge_known(std::uint64_t key) {
  std::uint64_t& slot = t_edge_cache[edge_slot(key)];
  if (slot == key) [[likely]] return true;
  if (!t_edges.contains(key)) return false;
  slot = key;
  return true;
}

void edge_learned(std::uint64_t key) {
  t_edges.insert(key);
  t_edge_cache[edge_slot(key)] = key;
}

// Returns the path from `from` to the first node of `targets` reached, as the
// edges along it; empty if none is reachable. Iterative DFS.
std::vector<Edge> find_path(const OrderGraph& g, std::uint32_t from,
                            const absl::flat_hash_set<std::uint32_t>& targets)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(g.mu) {
  absl::flat_hash_map<std::uint32_t, std::uint32_t> parent;  // node -> via
  std::vector<std::uint32_t> stack = {from};
  parent.emplace(from, from);
  std::uint32_t found = 0;
  while (!stack.empty() && found == 0) {
    std::uint32_t n = stack.back();
    stack.pop_back();
    for (const auto& [next, edge] : g.out[n]) {
      if (!parent.emplace(next, n).second) continue;
      if (targets.contains(next)) {
        found = next;
        break;
      }
      stack.push_back(next);
    }
  }
  std::vector<Edge> path;
  if (found == 0) return path;
  for (std::uint32_t n = found; n != from;) {
    std::uint32_t p = parent.at(n);
    path.push_back(g.out[p].at(n));
    n = p;
  }
  std::reverse(path.begin(), path.end());
  return path;
}

// ---------------------------------------------------------------- reports

Mutex& handler_mu() {
  static auto* mu = new Mutex();
  return *mu;
}
std::function<void(const TierViolation&)>& handler_slot() {
  static auto* h = new std::function<void(const TierViolation&)>();
  return *h;
}

HeldLock held_lock(const AcquireSite& site, std::string task) {
  HeldLock h;
  if (site.lock_file != nullptr) h.lock_file = *site.lock_file;
  h.tier = site.tier;
  h.mode = site.mode;
  h.where = site.where;
  h.task = std::move(task);
  return h;
}

HeldLock held_lock(const Site& site) {
  HeldLock h;
  h.lock_file = site.lock_file;
  h.tier = site.tier;
  h.mode = site.mode;
  h.where = site.where;
  h.task = site.task;
  return h;
}

HeldLock held_lock(const InheritedHold& inherited) {
  HeldLock h;
  h.lock_file = inherited.lock_file;
  h.tier = Tier{inherited.level, intern_tier_name(inherited.name)};
  h.mode = inherited.mode;
  h.inherited_from_pid = inherited.pid;
  return h;
}

Site site_of(const AcquireSite& site, const std::string& task) {
  return Site{site.lock_file != nullptr
                  ? internal::platform::path_text(*site.lock_file)
                  : std::string(),
              site.tier, site.mode, site.where, task};
}

// Reports show paths, tier, task and function names through escape_text: a
// hostile name must not drive the terminal that reads the report.
std::string describe(const HeldLock& h) {
  std::string s = absl::StrCat(
      "'", escape_text(internal::platform::path_text(h.lock_file)), "'");
  if (h.tier) {
    absl::StrAppend(&s, " [tier ", h.tier->level);
    if (!h.tier->name.empty()) {
      absl::StrAppend(&s, " '", escape_text(h.tier->name), "'");
    }
    absl::StrAppend(&s, ", ", to_absl(mode_name(h.mode)), "]");
  } else {
    absl::StrAppend(&s, " [untiered, ", to_absl(mode_name(h.mode)), "]");
  }
  return s;
}

std::string where(const HeldLock& h) {
  if (h.inherited_from_pid != 0) {
    return absl::StrCat("held by the parent process, pid ",
                        h.inherited_from_pid, " (from ",
                        to_absl(kHeldEnvVar), ")");
  }
  std::string fn = h.where.function_name();
  return absl::StrCat(
      escape_text(h.where.file_name()), ":", h.where.line(), " in ",
      fn.empty() ? "?" : escape_text(fn),
      h.task.empty() ? "" : absl::StrCat(" by '", escape_text(h.task), "'"));
}

std::string tier_text(const HeldLock& h) {
  if (!h.tier) return "untiered";
  return h.tier->name.empty()
             ? absl::StrCat("tier ", h.tier->level)
             : absl::StrCat("tier ", h.tier->level, " '",
                            escape_text(h.tier->name), "'");
}

std::string summary(const TierViolation& v) {
  switch (v.kind) {
    case TierViolation::Kind::kTierOrder:
      return absl::StrCat("lock order violation: taking ", describe(v.acquiring),
                          " while holding ", describe(v.conflicting),
                          ": tiers must be taken in strictly increasing order");
    case TierViolation::Kind::kSameTier:
      return absl::StrCat("lock order violation: taking ", describe(v.acquiring),
                          " while holding ", describe(v.conflicting),
                          " of the same tier: take both with acquire_all");
    case TierViolation::Kind::kLearnedCycle:
      return absl::StrCat("lock order violation: taking ", describe(v.acquiring),
                          " while holding ", describe(v.conflicting),
                          " reverses the order in which they were nested before");
  }
  return "lock order violation";
}

void deliver(const TierViolation& v) {
  std::function<void(const TierViolation&)> handler;
  {
    UniqueLock lock(handler_mu());
    handler = handler_slot();
  }
  if (handler) {
    handler(v);
    return;
  }
  std::string text = v.to_string();
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

absl::Status act_on(const TierViolation& v, TierCheckMode mode) {
  deliver(v);
  switch (mode) {
    case TierCheckMode::kAbort:
      std::abort();
    case TierCheckMode::kFail:
      return absl::FailedPreconditionError(
          absl::StrCat(summary(v), " (acquire at ", where(v.acquiring),
                       "; held lock taken at ", where(v.conflicting), ")"));
    case TierCheckMode::kIgnore:
    case TierCheckMode::kReport:
      break;
  }
  return absl::OkStatus();
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
  if (t_scope_depth == 0) return out;
  std::vector<const ContextState*> seen;
  for (ContextState* outer : t_outer) {
    if (outer == nullptr || outer == &ctx ||
        std::find(seen.begin(), seen.end(), outer) != seen.end()) {
      continue;
    }
    seen.push_back(outer);
    SpinLockHolder lock(outer->mu);
    for (const HeldRecord& r : outer->held) {
      out.push_back({r, outer, outer->name});
    }
  }
  return out;
}

// The parent's holds, then `all`, for a report.
std::vector<HeldLock> snapshot(const std::vector<HeldView>& all) {
  std::vector<HeldLock> held;
  for (const InheritedHold& h : inherited_holds()) held.push_back(held_lock(h));
  for (const HeldView& h : all) held.push_back(held_lock(h.record.site, h.task));
  return held;
}

// The learned-order check; see OrderGraph. `from` indexes the holds in `all`
// that get an edge to the lock being taken (the walk back to each context's
// first chained hold); every held lock is a target: reaching any of them from
// the new lock closes a cycle. In kReport an accepted violation adds no edge,
// so the graph stays acyclic.
std::optional<TierViolation> check_nesting(const AcquireSite& site,
                                           const std::string& task,
                                           const std::vector<HeldView>& all,
                                           const std::vector<std::size_t>& from) {
  const std::uint32_t node = site.node;
  absl::flat_hash_set<std::uint32_t> targets;
  for (const HeldView& h : all) {
    if (h.record.site.node != 0 && h.record.site.node != node) {
      targets.insert(h.record.site.node);
    }
  }
  OrderGraph& g = graph();
  std::vector<Edge> path;
  {
    UniqueLock lock(g.mu);
    bool all_known = true;
    for (std::size_t i : from) {
      if (!g.out[all[i].record.site.node].contains(node)) all_known = false;
    }
    // Known edges keep the graph acyclic with them: nothing to search.
    if (!all_known) path = find_path(g, node, targets);
    if (path.empty()) {
      for (std::size_t i : from) {
        g.out[all[i].record.site.node].try_emplace(
            node, Edge{site_of(all[i].record.site, all[i].task),
                       site_of(site, task)});
      }
    }
  }
  if (path.empty()) {
    for (std::size_t i : from) {
      edge_learned(edge_key(all[i].record.site.node, node));
    }
    return std::nullopt;
  }
  TierViolation v;
  v.kind = TierViolation::Kind::kLearnedCycle;
  v.task = task;
  v.acquiring = held_lock(site, task);
  // The path ends at the held lock that closes the cycle.
  const std::string& closing = path.back().inner.lock_file;
  for (const HeldView& h : all) {
    if (h.record.site.lock_file != nullptr &&
        internal::platform::path_text(*h.record.site.lock_file) == closing) {
      v.conflicting = held_lock(h.record.site, h.task);
      break;
    }
  }
  for (const Edge& e : path) {
    v.earlier.push_back({held_lock(e.outer), held_lock(e.inner)});
  }
  v.held = snapshot(all);
  return v;
}

// -------------------------------------------------------- lockable holds

struct LockableHolds {
  Mutex mu;
  absl::flat_hash_map<std::pair<const void*, int>,
                      std::vector<std::pair<ContextState*, std::uint64_t>>>
      by_entry ABSL_GUARDED_BY(mu);
  std::atomic<std::size_t> count{0};
};

LockableHolds& lockable_holds() {
  static auto* h = new LockableHolds();
  return *h;
}

}  // namespace

thread_local constinit ContextState* t_current_context = nullptr;
thread_local constinit int t_scope_depth = 0;

const std::shared_ptr<ContextState>*& bound_context() { return t_bound; }

const std::shared_ptr<ContextState>* push_scope(
    const std::shared_ptr<ContextState>* ctx) {
  t_outer.push_back(t_bound != nullptr ? t_bound->get() : t_default.ctx.get());
  ++t_scope_depth;
  t_current_context = nullptr;
  return std::exchange(t_bound, ctx);
}

void pop_scope(const std::shared_ptr<ContextState>* previous) noexcept {
  if (!t_outer.empty()) t_outer.pop_back();
  --t_scope_depth;
  t_current_context = nullptr;
  t_bound = previous;
}

bool outer_holds_present(const ContextState& ctx) {
  for (ContextState* outer : t_outer) {
    if (outer == nullptr || outer == &ctx) continue;
    SpinLockHolder lock(outer->mu);
    if (!outer->held.empty()) return true;
  }
  return false;
}

ContextState& current_context_state_slow() {
  ContextState* c = current_context().get();
  t_current_context = c;
  return *c;
}

// One node per file identity, so hard links to one lock file are one node.
// An inode number can be reused by a new file once the old one is deleted
// (tests make and remove thousands of lock files): an identity met again at
// another path is the same node only while the path it was first seen at
// still names that identity (a hard link); otherwise the old file is gone and
// this is a new one. Both probes happen once per registry entry.
std::uint32_t order_node(std::atomic<std::uint32_t>& cache,
                         const platform::FileId& id,
                         const std::filesystem::path& lock_file) {
  if (std::uint32_t n = cache.load(std::memory_order_relaxed); n != 0) return n;
  OrderGraph& g = graph();
  const std::string path = internal::platform::path_text(lock_file);
  std::string seen_at;
  {
    UniqueLock lock(g.mu);
    auto it = g.node_of.find(id);
    if (it != g.node_of.end() && it->second.first == path) {
      cache.store(it->second.second, std::memory_order_relaxed);
      return it->second.second;
    }
    if (it != g.node_of.end()) seen_at = it->second.first;
  }
  // Looked at outside the graph's lock: a path walk can be slow.
  bool same_file = false;
  if (!seen_at.empty()) {
    const std::filesystem::path old(seen_at);
    absl::StatusOr<platform::FileId> now =
        platform::stat_lock_file(old.parent_path(), old.filename().string());
    same_file = now.ok() && *now == id;
  }
  std::uint32_t node;
  {
    UniqueLock lock(g.mu);
    auto [it, inserted] = g.node_of.try_emplace(id, path, 0);
    if (!inserted && (same_file || it->second.first == path)) {
      node = it->second.second;
    } else {
      node = static_cast<std::uint32_t>(g.out.size());
      g.out.emplace_back();
      it->second = {path, node};
    }
  }
  cache.store(node, std::memory_order_relaxed);
  return node;
}

const std::shared_ptr<ContextState>& current_context() {
  if (t_bound != nullptr) return *t_bound;
  if (t_default.ctx == nullptr) {
    t_default.ctx = make_context(thread_name());
  }
  return t_default.ctx;
}

namespace {

// Taking a lock the task already holds: an error the caller gets back in
// every mode, never a lock-order report (it is no order between two locks).
absl::Status reentry_error(const AcquireSite& site, const HeldView& held) {
  return absl::FailedPreconditionError(absl::StrCat(
      "acquire '",
      site.lock_file != nullptr
          ? escape_text(internal::platform::path_text(*site.lock_file))
          : std::string(),
      "' (", to_absl(mode_name(site.mode)), ") at ",
      where(held_lock(site, {})), ": task '", escape_text(held.task),
      "' already holds it (", to_absl(mode_name(held.record.site.mode)),
      ", taken at ", where(held_lock(held.record.site, held.task)),
      "); waiting for itself would deadlock"));
}

// The checks, the slow way: everything a report needs. Kept out of line so
// the fast path has a small frame (a TierViolation is ~1 KB of stack to
// zero). In order: re-entry (an error), then, unless the acquire is a try,
// declared tiers and the learned order.
ABSL_ATTRIBUTE_NOINLINE absl::StatusOr<std::uint64_t> check_slow(
    ContextState& ctx, const AcquireSite& site, bool record,
    TierCheckMode mode) {
  const std::uint32_t node = site.node;
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
    if (ctx.name.empty()) ctx.name = thread_name();
    task = ctx.name;
    for (const HeldRecord& r : ctx.held) all.push_back({r, &ctx, task});
  }
  // An async acquire (record false) occupies no thread while it waits: it
  // is granted when the task releases its own hold, so it is no re-entry.
  for (const HeldView& h : all) {
    if (!record) break;
    if (site.lock_file != nullptr && h.record.site.lock_file == site.lock_file) {
      return reentry_error(site, h);
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
      if (h.record.site.node != 0 && h.record.site.node != node) {
        from.push_back(i);
        if (!edge_known(edge_key(h.record.site.node, node))) known = false;
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
    if (absl::Status st = act_on(*std::move(violation), mode); !st.ok()) {
      return st;
    }
    chained = false;  // taken in spite of the report: learned nothing
  } else if (std::optional<TierViolation> v =
                 check_nesting(site, task, all, from)) {
    if (absl::Status st = act_on(*std::move(v), mode); !st.ok()) return st;
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
  absl::StatusOr<std::uint64_t> id =
      mode == TierCheckMode::kIgnore ? record_hold(ctx, site)
                                     : check_slow(ctx, site, true, mode);
  if (!id.ok()) {
    *error = std::move(id).status();
    return 0;
  }
  return *id;
}

std::uint64_t record_hold(ContextState& ctx, const AcquireSite& site,
                          bool chained) {
  SpinLockHolder lock(ctx.mu);
  if (ctx.name.empty()) ctx.name = thread_name();
  std::uint64_t id = ctx.next_hold_id++;
  ctx.held.push_back(HeldRecord{id, site, chained});
  return id;
}

std::shared_ptr<ContextState> make_context(std::string name) {
  return std::shared_ptr<ContextState>(
      new ContextState(std::move(name)), [](ContextState* ctx) {
        bool last;
        {
          SpinLockHolder lock(ctx->mu);
          last = ctx->held.empty();
          ctx->orphaned = !last;
        }
        if (last) delete ctx;
      });
}

void forget_hold_slow(ContextState& ctx, std::uint64_t hold_id) noexcept {
  bool last = false;
  {
    SpinLockHolder lock(ctx.mu);
    // Holds are mostly released in reverse order: the newest goes first.
    if (!ctx.held.empty() && ctx.held.back().hold_id == hold_id) [[likely]] {
      ctx.held.pop_back();
    } else {
      for (auto it = ctx.held.end(); it != ctx.held.begin();) {
        --it;
        if (it->hold_id == hold_id) {
          ctx.held.erase(it);
          break;
        }
      }
    }
    last = ctx.orphaned && ctx.held.empty();
  }
  if (last) delete &ctx;
}

void record_lockable_hold(const void* entry, Mode mode, ContextState* ctx,
                          std::uint64_t hold_id) {
  LockableHolds& h = lockable_holds();
  UniqueLock lock(h.mu);
  h.by_entry[{entry, static_cast<int>(mode)}].emplace_back(ctx, hold_id);
  h.count.fetch_add(1, std::memory_order_relaxed);
}

void forget_lockable_hold(const void* entry, Mode mode) noexcept {
  LockableHolds& h = lockable_holds();
  if (h.count.load(std::memory_order_relaxed) == 0) return;
  ContextState* ctx = nullptr;
  std::uint64_t id = 0;
  {
    UniqueLock lock(h.mu);
    auto it = h.by_entry.find(std::pair{entry, static_cast<int>(mode)});
    if (it == h.by_entry.end()) return;
    std::tie(ctx, id) = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) h.by_entry.erase(it);
    h.count.fetch_sub(1, std::memory_order_relaxed);
  }
  forget_hold(*ctx, id);
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

void set_tier_violation_handler(
    std::function<void(const TierViolation&)> handler) {
  internal::UniqueLock lock(internal::handler_mu());
  internal::handler_slot() = std::move(handler);
}

std::string TierViolation::to_string() const {
  using internal::describe;
  using internal::where;
  std::string s = "======================================================\n";
  absl::StrAppend(&s, "tierlock: ", internal::summary(*this), "\n");
  s += "------------------------------------------------------\n";
  absl::StrAppend(&s, "task '", escape_text(task), "' is taking:\n  ",
                  describe(acquiring), "\n  at ", where(acquiring), "\n");
  absl::StrAppend(&s, "while holding:\n  ", describe(conflicting), "\n  taken at ",
                  where(conflicting), "\n");
  if (kind == Kind::kLearnedCycle && !earlier.empty()) {
    s += "\nbut the opposite order was seen before:\n";
    for (const Nesting& n : earlier) {
      absl::StrAppend(&s, "  ", describe(n.inner), " taken at ", where(n.inner),
                      "\n    while holding ", describe(n.outer),
                      " taken at ", where(n.outer), "\n");
    }
    s += "two tasks taking them in these two orders at once can deadlock.\n";
  }
  absl::StrAppend(&s, "\nlocks held by task '", escape_text(task), "' (",
                  held.size(),
                  ", oldest first):\n");
  for (std::size_t i = 0; i < held.size(); ++i) {
    absl::StrAppend(&s, "  #", i, " ", describe(held[i]), "\n     taken at ",
                    where(held[i]), "\n");
  }
  switch (kind) {
    case Kind::kTierOrder:
      absl::StrAppend(&s, "\nfix: take ", internal::tier_text(acquiring),
                      " before ", internal::tier_text(conflicting),
                      ", or release ", describe(conflicting), " first.\n");
      break;
    case Kind::kSameTier:
      absl::StrAppend(&s,
                      "\nfix: take locks of one tier together with "
                      "tierlock::acquire_all (canonical path order), or "
                      "release ",
                      describe(conflicting), " first.\n");
      break;
    case Kind::kLearnedCycle:
      s += "\nfix: always nest these locks in one order (give them tiers to "
           "have it checked).\n";
      break;
  }
  s += "======================================================\n";
  return s;
}

// ------------------------------------------------------------ LockContext

LockContext::LockContext(std::string name)
    : state_(internal::make_context(std::move(name))) {}

LockContext LockContext::current() {
  return LockContext(internal::current_context());
}

std::string LockContext::name() const {
  internal::SpinLockHolder lock(state_->mu);
  return state_->name;
}

std::vector<HeldLock> LockContext::held() const {
  std::vector<HeldLock> out;
  internal::SpinLockHolder lock(state_->mu);
  for (const internal::HeldRecord& r : state_->held) {
    out.push_back(internal::held_lock(r.site, state_->name));
  }
  return out;
}

std::vector<HeldLock> LockContext::inherited() {
  std::vector<HeldLock> out;
  for (const internal::InheritedHold& h : internal::inherited_holds()) {
    out.push_back(internal::held_lock(h));
  }
  return out;
}

std::string LockContext::held_env() const {
  std::vector<internal::InheritedHold> holds = internal::inherited_holds();
  const std::int64_t pid = internal::platform::current_pid();
  internal::SpinLockHolder lock(state_->mu);
  for (const internal::HeldRecord& r : state_->held) {
    if (!r.site.tier || r.site.lock_file == nullptr) continue;
    holds.push_back({r.site.tier->level, std::string(r.site.tier->name),
                     r.site.mode, pid,
                     internal::platform::path_text(*r.site.lock_file)});
  }
  return internal::format_held_env(holds);
}

LockContext::Scope::Scope(const LockContext& context)
    : state_(context.state_), previous_(internal::push_scope(&state_)) {}

LockContext::Scope::~Scope() { internal::pop_scope(previous_); }

}  // namespace tierlock

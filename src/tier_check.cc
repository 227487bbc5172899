// Tier checks: declared tiers, learned nesting order, reports, TIERLOCK_HELD.
#include "tier_check.h"

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
#include "mutex.h"
#include "string_util.h"
#include "tier_names.h"
#include "tierlock/lock_context.h"
#include "tierlock/text.h"

#ifndef TIERLOCK_DEBUG_CHECKS
#define TIERLOCK_DEBUG_CHECKS 0
#endif

namespace tierlock {
namespace internal {

constexpr bool kDebugChecks = TIERLOCK_DEBUG_CHECKS != 0;

std::atomic<TierCheckMode> g_tier_check_mode{
    kDebugChecks ? TierCheckMode::kAbort : TierCheckMode::kIgnore};

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
  absl::flat_hash_map<std::pair<platform::FileId, std::string>, std::uint32_t>
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

// Copies the context's held stack (with the parent's first) for a report.
std::vector<HeldLock> snapshot(ContextState& ctx) {
  std::vector<HeldLock> held;
  for (const InheritedHold& h : inherited_holds()) held.push_back(held_lock(h));
  SpinLockHolder lock(ctx.mu);
  for (const HeldRecord& r : ctx.held) held.push_back(held_lock(r.site, ctx.name));
  return held;
}

std::string context_name(ContextState& ctx) {
  SpinLockHolder lock(ctx.mu);
  return ctx.name;
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

// The learned-order check; see OrderGraph. `newest` is the node of the most
// recent held lock other than the one being taken.
std::optional<TierViolation> check_nesting(ContextState& ctx,
                                           const AcquireSite& site,
                                           std::uint32_t node,
                                           std::uint32_t newest,
                                           const AcquireSite& newest_site) {
  if (edge_known(edge_key(newest, node))) return std::nullopt;
  // Slow path, once per new nesting per thread.
  absl::flat_hash_set<std::uint32_t> held_nodes;
  std::vector<HeldRecord> held;
  std::string task;
  {
    SpinLockHolder lock(ctx.mu);
    held.assign(ctx.held.begin(), ctx.held.end());
    task = ctx.name;
  }
  for (const HeldRecord& r : held) {
    if (r.site.node != 0 && r.site.node != node) held_nodes.insert(r.site.node);
  }
  OrderGraph& g = graph();
  std::vector<Edge> path;
  {
    UniqueLock lock(g.mu);
    if (!g.out[newest].contains(node)) {
      path = find_path(g, node, held_nodes);
      if (path.empty()) {
        g.out[newest].emplace(node, Edge{site_of(newest_site, task),
                                         site_of(site, task)});
      }
    }
  }
  if (path.empty()) {
    edge_learned(edge_key(newest, node));
    return std::nullopt;
  }
  TierViolation v;
  v.kind = TierViolation::Kind::kLearnedCycle;
  v.task = task;
  v.try_acquire = site.try_only;
  v.acquiring = held_lock(site, task);
  // The path ends at the held lock that closes the cycle.
  const std::string& closing = path.back().inner.lock_file;
  for (const HeldRecord& r : held) {
    if (r.site.lock_file != nullptr &&
        internal::platform::path_text(*r.site.lock_file) == closing) {
      v.conflicting = held_lock(r.site, task);
    }
  }
  for (const Edge& e : path) {
    v.earlier.push_back({held_lock(e.outer), held_lock(e.inner)});
  }
  v.held = snapshot(ctx);
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

const std::shared_ptr<ContextState>*& bound_context() { return t_bound; }

const std::shared_ptr<ContextState>* bind_context(
    const std::shared_ptr<ContextState>* ctx) {
  t_current_context = nullptr;
  return std::exchange(t_bound, ctx);
}

ContextState& current_context_state_slow() {
  ContextState* c = current_context().get();
  t_current_context = c;
  return *c;
}

std::uint32_t order_node(std::atomic<std::uint32_t>& cache,
                         const platform::FileId& id,
                         const std::filesystem::path& lock_file) {
  if constexpr (!kDebugChecks) return 0;
  if (std::uint32_t n = cache.load(std::memory_order_relaxed); n != 0) return n;
  OrderGraph& g = graph();
  std::uint32_t node;
  {
    UniqueLock lock(g.mu);
    auto [it, inserted] = g.node_of.try_emplace(
        std::pair(id, internal::platform::path_text(lock_file)), 0);
    if (inserted) {
      it->second = static_cast<std::uint32_t>(g.out.size());
      g.out.emplace_back();
    }
    node = it->second;
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

// The checks, the slow way: everything a report needs. Kept out of line so
// the fast path below has a small frame (a TierViolation is ~1 KB of stack
// to zero).
ABSL_ATTRIBUTE_NOINLINE absl::StatusOr<std::uint64_t> check_slow(
    ContextState& ctx, const AcquireSite& site, bool record,
    TierCheckMode mode) {
  const std::uint32_t node = site.node;

  // Declared tiers: the parent process's holds, then this context's.
  std::optional<TierViolation> violation;
  std::uint32_t newest = 0;
  AcquireSite newest_site;
  if (site.tier) {
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
    const HeldRecord* worst = nullptr;
    for (const HeldRecord& r : ctx.held) {
      if (r.site.node != 0 && r.site.node != node) {
        newest = r.site.node;
        newest_site = r.site;
      }
      if (violation || !site.tier || !r.site.tier) continue;
      if (r.site.tier->level < site.tier->level) continue;
      if (r.site.group != 0 && r.site.group == site.group) continue;
      if (worst == nullptr || r.site.tier->level > worst->site.tier->level) {
        worst = &r;
      }
    }
    if (worst != nullptr) {
      TierViolation v;
      v.kind = worst->site.tier->level == site.tier->level
                   ? TierViolation::Kind::kSameTier
                   : TierViolation::Kind::kTierOrder;
      v.conflicting = held_lock(worst->site, ctx.name);
      violation = std::move(v);
    }
    const bool known_nesting =
        !kDebugChecks || newest == 0 || edge_known(edge_key(newest, node));
    if (record && !violation && known_nesting) {
      std::uint64_t id = ctx.next_hold_id++;
      ctx.held.push_back(HeldRecord{id, site});
      return id;
    }
  }
  if (violation) {
    std::string task = context_name(ctx);
    violation->task = task;
    violation->try_acquire = site.try_only;
    violation->acquiring = held_lock(site, task);
    violation->held = snapshot(ctx);
    if (absl::Status st = act_on(*std::move(violation), mode); !st.ok()) {
      return st;
    }
  } else if (kDebugChecks && newest != 0) {
    if (std::optional<TierViolation> v =
            check_nesting(ctx, site, node, newest, newest_site)) {
      if (absl::Status st = act_on(*std::move(v), mode); !st.ok()) return st;
    }
  }
  return record ? record_hold(ctx, site) : 0;
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
    if (!site.tier || inherited_holds().empty()) {
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

std::uint64_t record_hold(ContextState& ctx, const AcquireSite& site) {
  SpinLockHolder lock(ctx.mu);
  if (ctx.name.empty()) ctx.name = thread_name();
  std::uint64_t id = ctx.next_hold_id++;
  ctx.held.push_back(HeldRecord{id, site});
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
  absl::StrAppend(&s, "task '", escape_text(task), "' is ",
                  try_acquire ? "trying to take" : "taking", ":\n  ",
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
    : state_(context.state_), previous_(internal::bind_context(&state_)) {}

LockContext::Scope::~Scope() { internal::bind_context(previous_); }

}  // namespace tierlock

// Tier-check contexts: see tier_context.h.
#include "tier/tier_context.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "platform/platform.h"

namespace tierlock::internal {
namespace {

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

}  // namespace

thread_local constinit ContextState* t_current_context = nullptr;
thread_local constinit int t_scope_depth = 0;

std::string thread_task_name() {
  return absl::StrCat("thread ", platform::current_tid());
}

std::shared_ptr<ContextState> make_context(std::string name) {
  return std::shared_ptr<ContextState>(new ContextState(std::move(name)),
                                       [](ContextState* ctx) {
                                         bool last;
                                         {
                                           SpinLockHolder lock(ctx->mu);
                                           last = ctx->held.empty();
                                           ctx->orphaned = !last;
                                         }
                                         if (last) delete ctx;
                                       });
}

std::uint64_t record_hold(ContextState& ctx, const AcquireSite& site,
                          bool chained) {
  SpinLockHolder lock(ctx.mu);
  if (ctx.name.empty()) ctx.name = thread_task_name();
  std::uint64_t id = ctx.next_hold_id++;
  ctx.held.push_back(HeldRecord{id, site, chained});
  return id;
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

const std::shared_ptr<ContextState>& current_context() {
  if (t_bound != nullptr) return *t_bound;
  if (t_default.ctx == nullptr) {
    t_default.ctx = make_context(thread_task_name());
  }
  return t_default.ctx;
}

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

ContextState& current_context_state_slow() {
  ContextState* c = current_context().get();
  t_current_context = c;
  return *c;
}

bool outer_holds_present(const ContextState& ctx) {
  for (ContextState* outer : t_outer) {
    if (outer == nullptr || outer == &ctx) continue;
    SpinLockHolder lock(outer->mu);
    if (!outer->held.empty()) return true;
  }
  return false;
}

void for_each_outer_context(const ContextState& ctx,
                            absl::FunctionRef<void(ContextState&)> fn) {
  if (t_scope_depth == 0) return;
  std::vector<const ContextState*> seen;
  for (ContextState* outer : t_outer) {
    if (outer == nullptr || outer == &ctx ||
        std::find(seen.begin(), seen.end(), outer) != seen.end()) {
      continue;
    }
    seen.push_back(outer);
    fn(*outer);
  }
}

}  // namespace tierlock::internal

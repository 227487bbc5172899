// LockContext (tierlock/lock_context.h): a handle on a context state
// (tier_context.h).
#include "tierlock/lock_context.h"

#include <string>
#include <utility>
#include <vector>

#include "platform/platform.h"
#include "tier/tier_context.h"
#include "tier/tier_env.h"
#include "tier/tier_report.h"

namespace tierlock {

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
    // Only lock files: a child can check its own acquires against those.
    if (!r.site.tier || r.site.lock.kind() != internal::LockId::Kind::kFile) {
      continue;
    }
    holds.push_back({r.site.tier->level, std::string(r.site.tier->name),
                     r.site.mode, pid,
                     internal::platform::path_text(r.site.lock.lock_file())});
  }
  return internal::format_held_env(holds);
}

LockContext::Scope::Scope(const LockContext& context)
    : state_(context.state_), previous_(internal::push_scope(&state_)) {}

LockContext::Scope::~Scope() { internal::pop_scope(previous_); }

}  // namespace tierlock

// The tier layer's seam for acquire paths above it: see tier_hold.h.
#include "tier/tier_hold.h"

#include <optional>

#include "tier/tier_check.h"
#include "tier/tier_context.h"

namespace tierlock::internal {

bool tier_checks_on() { return tier_checks_active(); }

absl::StatusOr<TierHold> check_tier_hold(LockId lock, const Tier& tier,
                                         Mode mode, bool try_only,
                                         SourceLocation where) {
  AcquireSite site;
  site.lock = lock;
  site.tier = MaybeTier(std::optional<Tier>(tier));
  site.mode = mode;
  site.where = where;
  site.try_only = try_only;
  ContextState& ctx = current_context_state();
  absl::Status refused;
  TierHold hold;
  hold.hold_id = check_and_record(ctx, site, &refused);
  if (hold.hold_id == 0) return refused;
  hold.context = &ctx;
  return hold;
}

void forget_tier_hold(TierHold& hold) noexcept {
  if (hold.context == nullptr) return;
  forget_hold(*hold.context, hold.hold_id);
  hold.context = nullptr;
}

}  // namespace tierlock::internal

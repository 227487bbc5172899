// src/tier/tier_hold.h
//
// The tier layer's seam for the acquire paths above it that are not DirLock's
// (leases): check an acquire against the calling thread's context and record
// its hold before it waits; forget the hold if the acquire then takes nothing.
//   tier_checks_on   - false when the tier checks are off.
//   TierHold         - a recorded hold: its context and id.
//   check_tier_hold  - checks an acquire and records its hold, or refuses it.
//   forget_tier_hold - forgets a recorded hold (any thread).
//   (A lease's identity, LeaseName: lock_id.h; interned tier names:
//   tier_names.h.)
#ifndef TIERLOCK_SRC_TIER_TIER_HOLD_H_
#define TIERLOCK_SRC_TIER_TIER_HOLD_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "tier/lock_id.h"
#include "tierlock/lock_context.h"
#include "tierlock/mode.h"
#include "tierlock/source_location.h"
#include "tierlock/tier.h"

namespace tierlock::internal {

using ContextState = LockContext::State;

// True when tier checks run (TierCheckMode other than kIgnore).
bool tier_checks_on();

struct TierHold {
  ContextState* context = nullptr;  // null: nothing recorded
  std::uint64_t hold_id = 0;
};

// Checks an acquire of `lock` (whose name must stay valid while the hold is
// recorded) in `tier` and `mode` against the calling thread's current
// context, then records the hold. A try (`try_only`) is never checked for
// order. kFailedPrecondition naming both locks for a violation in kFail; does
// not return in kAbort. Never blocks.
absl::StatusOr<TierHold> check_tier_hold(LockId lock, const Tier& tier,
                                         Mode mode, bool try_only,
                                         SourceLocation where);

// Forgets `hold` (a no-op for an empty one) and empties it.
void forget_tier_hold(TierHold& hold) noexcept;

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_TIER_TIER_HOLD_H_

// src/tier/tier_report.h
//
// Lock-order reports (internal): what a violation says and where it goes.
//   held_lock        - a hold (recorded, learned or inherited) as a HeldLock.
//   report_violation - delivers a TierViolation and acts on the mode.
//   reentry_error    - the error for taking a lock the task already holds.
// (TierViolation::to_string and set_tier_violation_handler are defined in
// tier_report.cc too.)
#ifndef TIERLOCK_SRC_TIER_TIER_REPORT_H_
#define TIERLOCK_SRC_TIER_TIER_REPORT_H_

#include <string>

#include "absl/status/status.h"
#include "tier/order_graph.h"
#include "tier/tier_context.h"
#include "tier/tier_env.h"
#include "tierlock/tier.h"

namespace tierlock::internal {

// Returns a recorded hold of task `task`, an edge's end, or a hold inherited
// from the parent process as the public HeldLock.
HeldLock held_lock(const AcquireSite& site, std::string task);
HeldLock held_lock(const OrderGraph::Site& site);
HeldLock held_lock(const InheritedHold& inherited);

// Delivers `v` (to the handler, else stderr) and acts on `mode`: kAbort
// aborts; kFail returns kFailedPrecondition naming both locks and both call
// sites; otherwise OK.
absl::Status report_violation(const TierViolation& v, TierCheckMode mode);

// The kFailedPrecondition for acquiring `site` while task `task` holds
// `held` of the same lock: an error in every mode, never a lock-order report.
absl::Status reentry_error(const AcquireSite& site, const AcquireSite& held,
                           const std::string& task);

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_TIER_TIER_REPORT_H_

// tests/support/tier_mode.h
//
//   ScopedTierCheckMode - sets the tier check mode for a scope, then restores it.
#ifndef TIERLOCK_TESTS_SUPPORT_TIER_MODE_H_
#define TIERLOCK_TESTS_SUPPORT_TIER_MODE_H_

#include "tierlock/tier.h"

namespace tierlock::testing {

class ScopedTierCheckMode {
 public:
  explicit ScopedTierCheckMode(TierCheckMode mode)
      : previous_(tier_check_mode()) {
    set_tier_check_mode(mode);
  }
  ~ScopedTierCheckMode() { set_tier_check_mode(previous_); }
  ScopedTierCheckMode(const ScopedTierCheckMode&) = delete;
  ScopedTierCheckMode& operator=(const ScopedTierCheckMode&) = delete;

 private:
  TierCheckMode previous_;
};

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_TIER_MODE_H_

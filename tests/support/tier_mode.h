// tests/support/tier_mode.h
//
//   ScopedTierCheckMode - sets the tier check mode for a scope, then restores
//   it. Reports             - collects the reports the violation handler
//   receives,
//                         for a scope; then restores the default handler.
#ifndef TIERLOCK_TESTS_SUPPORT_TIER_MODE_H_
#define TIERLOCK_TESTS_SUPPORT_TIER_MODE_H_

#include <mutex>
#include <vector>

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

class Reports {
 public:
  Reports() {
    set_tier_violation_handler([this](const TierViolation& v) {
      std::lock_guard<std::mutex> lock(mu_);
      seen_.push_back(v);
    });
  }
  ~Reports() { set_tier_violation_handler({}); }
  Reports(const Reports&) = delete;
  Reports& operator=(const Reports&) = delete;
  std::vector<TierViolation> seen() const {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<TierViolation> seen_;
};

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_TIER_MODE_H_

// tierlock/tier.h
//
// Defines lock tiers, the declared order in which a task may take locks:
//   Tier - a level (the order) and a name (for reports).
#ifndef TIERLOCK_TIER_H_
#define TIERLOCK_TIER_H_

#include <string_view>

namespace tierlock {

// Tier
//
// A lock's place in the declared lock order. A task may only take a lock
// whose level is strictly greater than that of every tiered lock it holds
// (see tier_check.h). Untiered locks are not order-checked against tiers.
//
// DirLock::open copies the name, so a Tier built from a temporary string is
// fine to pass; the copy lives until the process exits (tier names are few).
//
// Example:
//   inline constexpr tierlock::Tier kWorkspace{10, "workspace"};
//   inline constexpr tierlock::Tier kPackage{20, "package"};
//   auto ws = tierlock::DirLock::open("/ws", {.tier = kWorkspace});
struct Tier {
  int level = 0;
  std::string_view name;

  friend bool operator==(const Tier& a, const Tier& b) {
    return a.level == b.level && a.name == b.name;
  }
};

}  // namespace tierlock

#endif  // TIERLOCK_TIER_H_

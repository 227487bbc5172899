// src/tier/tier_names.h
//
// Interned tier names (internal): a Tier's name is a string_view, so DirLock
// keeps a copy that outlives every handle. Names are few; they live until exit.
#ifndef TIERLOCK_SRC_TIER_TIER_NAMES_H_
#define TIERLOCK_SRC_TIER_TIER_NAMES_H_

#include <string_view>

namespace tierlock::internal {

// Returns a view of a process-lifetime copy of `name` (the same view for
// equal names). Thread-safe.
std::string_view intern_tier_name(std::string_view name);

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_TIER_TIER_NAMES_H_

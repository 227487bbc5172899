// src/tier/lockable_holds.h
//
// The tier holds of the std Lockable members (internal): a hold taken by
// DirLock::lock() has no Guard, so it is remembered per (entry, mode), last
// in first out, until unlock().
//   record_lockable_hold / forget_lockable_hold
#ifndef TIERLOCK_SRC_TIER_LOCKABLE_HOLDS_H_
#define TIERLOCK_SRC_TIER_LOCKABLE_HOLDS_H_

#include <cstdint>

#include "tier/tier_context.h"
#include "tierlock/mode.h"

namespace tierlock::internal {

// Remembers hold `hold_id` of `ctx` for the lock `entry` (any stable address
// naming the lock) taken in `mode`.
void record_lockable_hold(const void* entry, Mode mode, ContextState* ctx,
                          std::uint64_t hold_id);
// Forgets the newest hold remembered for (`entry`, `mode`), if any; one
// relaxed load when none is remembered anywhere.
void forget_lockable_hold(const void* entry, Mode mode) noexcept;

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_TIER_LOCKABLE_HOLDS_H_

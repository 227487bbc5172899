// tierlock/tierlock.h
//
// Umbrella header: includes every public tierlock header.
//   DirLock, LockOptions (dir_lock.h), Guard (guard.h), Mode (mode.h),
//   Registry (registry.h).
#ifndef TIERLOCK_TIERLOCK_H_
#define TIERLOCK_TIERLOCK_H_

#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"
#include "tierlock/mode.h"
#include "tierlock/registry.h"

#endif  // TIERLOCK_TIERLOCK_H_

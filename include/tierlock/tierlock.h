// tierlock/tierlock.h
//
// Umbrella header: includes every public tierlock header.
//   DirLock, LockOptions (dir_lock.h), Guard (guard.h), Mode (mode.h),
//   ErrorKind, error_kind (error.h), AcquireOptions (acquire_options.h),
//   Executor, WorkerPool (executor.h), set_wait_interrupt_signal (config.h),
//   Tier, TierCheckMode, TierViolation (tier.h), LockContext (lock_context.h),
//   acquire_all (dir_lock.h), Holder, LockState, inspect_lock (holder.h),
//   escape_text (text.h), registry_size and Registry (diagnostics.h).
#ifndef TIERLOCK_TIERLOCK_H_
#define TIERLOCK_TIERLOCK_H_

#include "tierlock/acquire_options.h"
#include "tierlock/config.h"
#include "tierlock/diagnostics.h"
#include "tierlock/dir_lock.h"
#include "tierlock/error.h"
#include "tierlock/executor.h"
#include "tierlock/guard.h"
#include "tierlock/holder.h"
#include "tierlock/lock_context.h"
#include "tierlock/mode.h"
#include "tierlock/text.h"
#include "tierlock/tier.h"

#endif  // TIERLOCK_TIERLOCK_H_

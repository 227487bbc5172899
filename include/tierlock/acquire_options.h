// tierlock/acquire_options.h
//
// Defines how an acquire may wait:
//   AcquireOptions - mode, an optional timeout, a stop token, and (async) where
//   to wait
//                    and complete.
#ifndef TIERLOCK_ACQUIRE_OPTIONS_H_
#define TIERLOCK_ACQUIRE_OPTIONS_H_

#include <chrono>
#include <optional>
#include <stop_token>

#include "tierlock/mode.h"

namespace tierlock {

class Executor;
class WorkerPool;

// AcquireOptions
//
// Example:
//   lock.acquire({.mode = tierlock::Mode::kShared, .timeout = 2s, .stop =
//   token});
struct AcquireOptions {
  Mode mode = Mode::kExclusive;
  // How long to wait: nullopt waits without limit; zero (or negative) makes
  // one try. Measured on std::chrono::steady_clock from the call. When it
  // passes, the acquire returns kDeadlineExceeded and holds nothing.
  std::optional<std::chrono::nanoseconds> timeout;
  // Ends the wait when stop is requested: kCancelled, holding nothing. A stop
  // already requested at the call returns kCancelled without touching the
  // lock (no syscall). A default-constructed token never stops.
  std::stop_token stop;
  // Async acquires only: the pool whose threads wait in the kernel (null:
  // WorkerPool::global()), and where the completion runs (null: on that
  // pool's thread).
  WorkerPool* pool = nullptr;
  Executor* executor = nullptr;
};

}  // namespace tierlock

#endif  // TIERLOCK_ACQUIRE_OPTIONS_H_

// tierlock/acquire_options.h
//
// Defines how an acquire may wait:
//   AcquireOptions - mode, an optional timeout, a stop token, a hook told when
//                    the acquire has to wait, and (async) where to wait and
//                    complete.
//   WaitInfo       - what that hook is told: the lock, how long the acquire
//                    has waited, who holds it.
#ifndef TIERLOCK_ACQUIRE_OPTIONS_H_
#define TIERLOCK_ACQUIRE_OPTIONS_H_

#include <chrono>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tierlock/holder.h"
#include "tierlock/mode.h"

namespace tierlock {

class Executor;
class WorkerPool;

// WaitInfo
//
// What AcquireOptions::on_wait is told about an acquire that is waiting.
struct WaitInfo {
  // The lock as reports name it: a directory lock's lock file path, or
  // "lease:BACKEND/KEY". Exact bytes (a path may hold anything): pass it
  // through escape_text (tierlock/text.h) before printing it.
  std::string lock;
  Mode mode = Mode::kExclusive;
  // How long the acquire has waited (from the call) when the hook runs.
  std::chrono::nanoseconds waited{0};
  // Who holds the lock, read just before the hook runs: for a directory lock
  // what DirLock::holders() returns (the kernel's lock table plus holder
  // records), for a lease the holder the service reports (owner_id, token,
  // host, pid, program, since, where the backend stores them). An error if
  // they could not be read; an empty list if the holder let go meanwhile.
  absl::StatusOr<std::vector<Holder>> holders;
};

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
  // Told once that the acquire is still waiting `on_wait_after` after the
  // call, with who holds the lock (cargo's "Blocking waiting for file lock"
  // message, without a racy try, read holders, acquire sequence). Not called
  // for an acquire granted or ended (timeout, stop, error) sooner, nor for a
  // try (a zero timeout). It runs on a library timer thread (the pool's:
  // `pool`, else WorkerPool::global()'s), never on the caller's, and never
  // after the acquire has returned or completed: a grant that arrives while
  // it runs waits for it to return before the acquire returns. So it must
  // not wait for this acquire; keep it short (it delays the pool's other
  // timers), and do not throw from it (std::terminate). The acquire keeps
  // its place in the queue while it runs.
  std::function<void(const WaitInfo&)> on_wait;
  std::chrono::nanoseconds on_wait_after{0};
};

}  // namespace tierlock

#endif  // TIERLOCK_ACQUIRE_OPTIONS_H_

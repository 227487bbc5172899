// tests/support/acquire_threads.h
//
// Blocking acquires on other threads, for the timed and cancellable acquire
// tests:
//   Timed             - an acquire's result and how long it took.
//   timed_acquire     - lock.acquire(options), timed.
//   acquire_in_thread - the same on a new thread (a std::future).
//   with_stop / with_timeout - AcquireOptions with a stop token / a timeout.
//   ready             - a future is ready within a bound.
// Header-only.
#ifndef TIERLOCK_TESTS_SUPPORT_ACQUIRE_THREADS_H_
#define TIERLOCK_TESTS_SUPPORT_ACQUIRE_THREADS_H_

#include <chrono>
#include <future>
#include <stop_token>
#include <utility>

#include "absl/status/statusor.h"
#include "support/subprocess.h"
#include "tierlock/acquire_options.h"
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"

namespace tierlock::testing {

// An acquire's result and how long it took.
struct Timed {
  absl::StatusOr<Guard> result;
  std::chrono::steady_clock::duration waited{};
};

inline Timed timed_acquire(DirLock& lock, AcquireOptions options) {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<Guard> r = lock.acquire(std::move(options));
  return Timed{std::move(r), std::chrono::steady_clock::now() - start};
}

// Runs lock.acquire(options) on a new thread.
inline std::future<Timed> acquire_in_thread(DirLock& lock,
                                            AcquireOptions options) {
  return std::async(std::launch::async,
                    [&lock, o = std::move(options)]() mutable {
                      return timed_acquire(lock, std::move(o));
                    });
}

inline AcquireOptions with_stop(std::stop_token stop,
                                Mode mode = Mode::kExclusive) {
  AcquireOptions o;
  o.mode = mode;
  o.stop = std::move(stop);
  return o;
}

inline AcquireOptions with_timeout(std::chrono::nanoseconds timeout,
                                   Mode mode = Mode::kExclusive) {
  AcquireOptions o;
  o.mode = mode;
  o.timeout = timeout;
  return o;
}

// True if `f` is ready within `timeout`.
template <typename T>
inline bool ready(std::future<T>& f,
                  std::chrono::milliseconds timeout = kTimeout) {
  return f.wait_for(timeout) == std::future_status::ready;
}

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_ACQUIRE_THREADS_H_

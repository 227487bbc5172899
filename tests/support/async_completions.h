// tests/support/async_completions.h
//
// For the asynchronous acquire tests:
//   Completions - collects async completions, checking that exclusive ones
//                 never overlap and recording the grant order.
//   iota        - the ids first, first + 1, ..., n of them.
//   on          - AcquireOptions that wait on a given WorkerPool.
// Header-only.
#ifndef TIERLOCK_TESTS_SUPPORT_ASYNC_COMPLETIONS_H_
#define TIERLOCK_TESTS_SUPPORT_ASYNC_COMPLETIONS_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "support/subprocess.h"
#include "tierlock/acquire_options.h"
#include "tierlock/executor.h"
#include "tierlock/guard.h"

namespace tierlock::testing {

// Collects async completions. For an exclusive grant the callback checks that
// no other callback is inside the lock, increments a counter and appends its
// id to the grant order -- both plain variables ordered only by the DirLock,
// so ThreadSanitizer reports a race if the lock does not order them -- and
// then releases the Guard (or keeps it, if asked).
class Completions {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<Guard>) &&>;
  struct Outcome {
    int id = 0;
    absl::Status status;
    std::thread::id thread;
    std::chrono::steady_clock::time_point at;
  };

  explicit Completions(bool keep_guards = false) : keep_(keep_guards) {}

  Done callback(int id) {
    return [this, id](absl::StatusOr<Guard> g) {
      if (g.ok() && g->mode() == Mode::kExclusive) {
        if (inside_.fetch_add(1) != 0) overlaps_.fetch_add(1);
        ++counter_;
        grant_order_.push_back(id);
        inside_.fetch_sub(1);
      }
      std::optional<Guard> kept;
      absl::Status released;
      if (g.ok()) {
        if (keep_) {
          kept = std::move(*g);
        } else {
          released = g->release();
        }
      }
      std::lock_guard<std::mutex> l(mu_);
      outcomes_.push_back(Outcome{id, g.status(), std::this_thread::get_id(),
                                  std::chrono::steady_clock::now()});
      if (kept) kept_.push_back(std::move(*kept));
      if (!released.ok()) errors_.push_back(released.ToString());
      cv_.notify_all();
    };
  }

  // Waits until at least `n` completions have run.
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout = kTimeout) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, timeout, [&] { return outcomes_.size() >= n; });
  }
  std::size_t count() {
    std::lock_guard<std::mutex> l(mu_);
    return outcomes_.size();
  }
  std::vector<Outcome> outcomes() {
    std::lock_guard<std::mutex> l(mu_);
    return outcomes_;
  }
  // The outcome of waiter `id` (an Unknown status if it has not run).
  Outcome outcome(int id) {
    std::lock_guard<std::mutex> l(mu_);
    for (const Outcome& o : outcomes_) {
      if (o.id == id) return o;
    }
    return Outcome{id, absl::UnknownError("did not run"), {}, {}};
  }
  std::vector<std::string> errors() {
    std::lock_guard<std::mutex> l(mu_);
    return errors_;
  }
  // Read only once the exclusive callbacks are done (wait_for).
  std::vector<int> grant_order() {
    std::lock_guard<std::mutex> l(mu_);
    return grant_order_;
  }
  int counter() {
    std::lock_guard<std::mutex> l(mu_);
    return counter_;
  }
  int overlaps() const { return overlaps_.load(); }
  void release_kept() {
    std::vector<Guard> kept;
    {
      std::lock_guard<std::mutex> l(mu_);
      kept.swap(kept_);
    }
  }

 private:
  const bool keep_;
  std::atomic<int> inside_{0};
  std::atomic<int> overlaps_{0};
  int counter_ = 0;               // ordered by the DirLock
  std::vector<int> grant_order_;  // ordered by the DirLock
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Outcome> outcomes_;
  std::vector<Guard> kept_;
  std::vector<std::string> errors_;
};

inline std::vector<int> iota(int first, int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

inline AcquireOptions on(WorkerPool& pool, Mode mode = Mode::kExclusive) {
  AcquireOptions o;
  o.mode = mode;
  o.pool = &pool;
  return o;
}

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_ASYNC_COMPLETIONS_H_

// tests/support/wait.h
//
// Bounded waits on a condition (never a fixed sleep):
//   wait_until - polls a predicate until it holds or a timeout passes.
#ifndef TIERLOCK_TESTS_SUPPORT_WAIT_H_
#define TIERLOCK_TESTS_SUPPORT_WAIT_H_

#include <chrono>
#include <thread>

#include "support/subprocess.h"

namespace tierlock::testing {

// Polls `pred` until it returns true (then returns true at once) or `timeout`
// passes (returns false). Spins briefly, then backs off to 1 ms polls.
template <typename Pred>
bool wait_until(Pred&& pred, std::chrono::milliseconds timeout = kTimeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (int i = 0;; ++i) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    if (i < 100) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(
          std::chrono::microseconds(i < 1000 ? 50 : 1000));
    }
  }
}

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_WAIT_H_

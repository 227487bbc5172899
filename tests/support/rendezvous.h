// tests/support/rendezvous.h
//
// Tools for tests that race two threads against each other many times:
//   Rendezvous - a reusable barrier whose wait is bounded: a thread stuck
//                elsewhere (say, inside tierlock) is reported and the test
//                binary aborts instead of stalling ctest.
//   spin       - burns a little CPU to shift two racing threads against each
//                other by varying amounts (never to make a race pass).
//   spin_for   - the same, for a given time (busy, not a sleep).
// Header-only.
#ifndef TIERLOCK_TESTS_SUPPORT_RENDEZVOUS_H_
#define TIERLOCK_TESTS_SUPPORT_RENDEZVOUS_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>

#include "support/subprocess.h"

namespace tierlock::testing {

class Rendezvous {
 public:
  explicit Rendezvous(int parties) : parties_(parties) {}
  Rendezvous(const Rendezvous&) = delete;
  Rendezvous& operator=(const Rendezvous&) = delete;

  // Blocks until `parties` threads have arrived (at most `timeout`; then
  // prints `what` and aborts).
  void arrive_and_wait(const char* what,
                       std::chrono::milliseconds timeout = kTimeout) {
    std::unique_lock<std::mutex> lk(mu_);
    const long gen = generation_;
    if (++arrived_ == parties_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    if (!cv_.wait_for(lk, timeout, [&] { return generation_ != gen; })) {
      std::cerr << "FATAL: rendezvous '" << what
                << "' timed out: a thread is stuck (in tierlock?)" << std::endl;
      std::abort();
    }
  }

 private:
  const int parties_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  long generation_ = 0;
};

// Burns roughly `units` * 20 relaxed atomic increments.
inline void spin(int units) {
  static std::atomic<int> sink{0};
  for (int i = 0; i < units * 20; ++i)
    sink.fetch_add(1, std::memory_order_relaxed);
}

// Busy-waits for `d` on the steady clock.
inline void spin_for(std::chrono::nanoseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_RENDEZVOUS_H_

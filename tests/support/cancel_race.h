// tests/support/cancel_race.h
//
// The cancel-vs-grant race, one harness for the blocking and the async
// acquire tests:
//   RaceAcquire                 - how a round's acquire is made.
//   blocking_acquire            - lock.acquire(stop) on a waiter thread.
//   async_acquire               - lock.acquire_async(stop) on a WorkerPool.
//   race_cancel_against_release - runs the rounds; each must end as exactly
//                                 one of "granted" and "cancelled, nothing
//                                 held".
#ifndef TIERLOCK_TESTS_SUPPORT_CANCEL_RACE_H_
#define TIERLOCK_TESTS_SUPPORT_CANCEL_RACE_H_

#include <functional>
#include <stop_token>
#include <string>

#include "absl/status/statusor.h"
#include "tierlock/dir_lock.h"
#include "tierlock/executor.h"
#include "tierlock/guard.h"

namespace tierlock::testing {

// Hands a round's outcome to the harness; called exactly once per round.
using RaceDeliver = std::function<void(absl::StatusOr<Guard>)>;

struct RaceAcquire {
  // True: `begin` blocks until the outcome and runs on the harness's waiter
  // thread once the round starts. False: `begin` only queues the acquire, on
  // the driving thread before the round starts; the outcome comes later,
  // from whichever thread completes it.
  bool blocking = true;
  std::function<void(std::stop_token, const RaceDeliver&)> begin;
};

// An exclusive lock.acquire stopped by the round's token.
RaceAcquire blocking_acquire(DirLock& lock);
// An exclusive lock.acquire_async on `pool`, stopped by the round's token.
RaceAcquire async_acquire(DirLock& lock, WorkerPool& pool);

struct RaceCounts {
  int granted = 0;
  int cancelled = 0;
};

// Drives rounds of: the acquire waits on `lock`; then, at about the same
// time, `release` runs on the driving thread and a canceller thread requests
// the stop. `hold` starts a round by taking the lock for the releaser (""
// or what went wrong); `in_position` says when the waiter is waiting;
// `inspect` checks the outcome (a held Guard, or kCancelled with nothing
// held) before the Guard is released. Anything else -- another error, both,
// neither -- fails the test, naming the round. A round whose outcome never
// comes (kTimeout) aborts the binary.
RaceCounts race_cancel_against_release(
    const RaceAcquire& acquire, int rounds,
    const std::function<std::string(int round)>& hold,
    const std::function<bool(int round)>& in_position,
    const std::function<std::string(int round)>& release,
    const std::function<std::string(int round, bool granted, const Guard& g)>&
        inspect);

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_CANCEL_RACE_H_

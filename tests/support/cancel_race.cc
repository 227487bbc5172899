#include "support/cancel_race.h"

#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "support/rendezvous.h"
#include "support/subprocess.h"
#include "tierlock/acquire_options.h"

namespace tierlock::testing {

RaceAcquire blocking_acquire(DirLock& lock) {
  return RaceAcquire{true,
                     [&lock](std::stop_token stop, const RaceDeliver& deliver) {
                       AcquireOptions o;
                       o.mode = Mode::kExclusive;
                       o.stop = std::move(stop);
                       deliver(lock.acquire(std::move(o)));
                     }};
}

RaceAcquire async_acquire(DirLock& lock, WorkerPool& pool) {
  return RaceAcquire{
      false, [&lock, &pool](std::stop_token stop, const RaceDeliver& deliver) {
        AcquireOptions o;
        o.mode = Mode::kExclusive;
        o.pool = &pool;
        o.stop = std::move(stop);
        lock.acquire_async(std::move(o), [deliver](absl::StatusOr<Guard> g) {
          deliver(std::move(g));
        });
      }};
}

RaceCounts race_cancel_against_release(
    const RaceAcquire& acquire, int rounds,
    const std::function<std::string(int round)>& hold,
    const std::function<bool(int round)>& in_position,
    const std::function<std::string(int round)>& release,
    const std::function<std::string(int round, bool granted, const Guard& g)>&
        inspect) {
  // The driving thread, the canceller, and the waiter thread if the acquire
  // blocks.
  const int parties = acquire.blocking ? 3 : 2;
  RaceCounts counts;
  Rendezvous start(parties);
  Rendezvous fire(2);
  Rendezvous done(parties);
  std::stop_token token;                 // written before `start`
  std::optional<std::stop_source> stop;  // likewise
  std::mutex mu;
  std::condition_variable cv;
  std::optional<absl::StatusOr<Guard>> result;  // guarded by mu
  const RaceDeliver deliver = [&](absl::StatusOr<Guard> g) {
    std::lock_guard<std::mutex> l(mu);
    result = std::move(g);
    cv.notify_all();
  };
  int round = 0;
  bool quit = false;
  std::optional<std::thread> waiter;
  if (acquire.blocking) {
    waiter.emplace([&] {
      for (;;) {
        start.arrive_and_wait("start");
        if (quit) return;
        acquire.begin(token, deliver);
        done.arrive_and_wait("done");
      }
    });
  }
  std::thread canceller([&] {
    for (;;) {
      start.arrive_and_wait("start");
      if (quit) return;
      const int r = round;
      fire.arrive_and_wait("fire");
      if (r % 2 == 0) spin((r / 2) % 40);
      stop->request_stop();
      done.arrive_and_wait("done");
    }
  });
  std::string failure;
  for (round = 0; round < rounds && failure.empty(); ++round) {
    failure = hold(round);
    if (!failure.empty()) break;
    stop.emplace();
    token = stop->get_token();
    {
      std::lock_guard<std::mutex> l(mu);
      result.reset();
    }
    if (!acquire.blocking) acquire.begin(token, deliver);
    start.arrive_and_wait("start");
    if (!in_position(round)) failure = "the waiter never got into position";
    fire.arrive_and_wait("fire");
    if (round % 2 == 1) spin((round / 2) % 40);
    std::string released = release(round);
    if (failure.empty()) failure = released;
    done.arrive_and_wait("done");
    std::optional<absl::StatusOr<Guard>> got;
    {
      std::unique_lock<std::mutex> l(mu);
      if (!cv.wait_for(l, kTimeout, [&] { return result.has_value(); })) {
        std::cerr << "FATAL: round " << round << ": the outcome never came"
                  << std::endl;
        std::abort();
      }
      got = std::move(result);
      result.reset();
    }
    if (got->ok()) {
      ++counts.granted;
      if (failure.empty()) failure = inspect(round, true, **got);
      absl::Status r = (*got)->release();
      if (failure.empty() && !r.ok()) failure = "release: " + r.ToString();
    } else if (got->status().code() == absl::StatusCode::kCancelled) {
      ++counts.cancelled;
      Guard none;
      if (failure.empty()) failure = inspect(round, false, none);
    } else {
      failure = "neither a Guard nor kCancelled: " + got->status().ToString();
    }
    if (!failure.empty()) {
      failure = "round " + std::to_string(round) + ": " + failure;
    }
  }
  quit = true;
  start.arrive_and_wait("start");
  if (waiter) waiter->join();
  canceller.join();
  EXPECT_EQ(failure, "");
  std::cout << "[ outcome  ] " << counts.granted << " granted, "
            << counts.cancelled << " cancelled of " << round << " rounds\n";
  return counts;
}

}  // namespace tierlock::testing

// src/queue/worker_pool.h
//
// The worker pool's shared state (internal).
//   PoolState - task queue, workers, timers and the stop source that cancels
//               the pool's async acquires; shared with those acquires, so it
//               outlives the WorkerPool object if they do.
//   WorkerPool::State - the public WorkerPool's opaque state: a PoolState.
#ifndef TIERLOCK_SRC_QUEUE_WORKER_POOL_H_
#define TIERLOCK_SRC_QUEUE_WORKER_POOL_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <stop_token>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "tierlock/executor.h"

namespace tierlock::internal {

struct PoolState {
  using Task = absl::AnyInvocable<void() &&>;
  using Clock = std::chrono::steady_clock;

  explicit PoolState(std::size_t threads) : size(threads) {}

  // Queues `task`; never runs it inline and never destroys it here, so it
  // may be called with an entry's mutex held. On a closed pool the task is
  // kept and destroyed (not run) by the pool's destructor.
  void post(Task task);
  // A timer call_at set, for cancel_timer.
  struct TimerId {
    Clock::time_point when;
    std::uint64_t id = 0;
  };
  // Runs `task` on the pool's timer thread at `when` (unless closed first;
  // then it is destroyed, not run).
  TimerId call_at(Clock::time_point when, Task task);
  // Destroys the task of `timer` unrun, unless it ran or runs already: a
  // timer set far ahead for something that ended sooner does not stay in the
  // pool until then.
  void cancel_timer(const TimerId& timer);

  void start();
  void shut_down();  // the WorkerPool destructor

  const std::size_t size;
  std::stop_source stop;  // requested at shut-down: cancels async acquires

 private:
  void work();
  void time();

  std::mutex mu;
  std::condition_variable cv;        // workers: tasks or closed
  std::condition_variable timer_cv;  // timer thread: earlier timer or closed
  std::condition_variable idle_cv;   // shut-down: per-task threads done
  std::deque<Task> tasks;
  std::multimap<Clock::time_point, std::pair<std::uint64_t, Task>> timers;
  std::uint64_t last_timer = 0;
  bool closed = false;
  bool timer_started = false;
  std::size_t task_threads = 0;  // size == 0: per-task threads running
  std::vector<std::thread> workers;
  std::thread timer_thread;
};

}  // namespace tierlock::internal

namespace tierlock {

// What WorkerPool's header declares opaquely; the queue takes it as the
// PoolState it is.
class WorkerPool::State final : public internal::PoolState {
 public:
  using PoolState::PoolState;
};

}  // namespace tierlock

#endif  // TIERLOCK_SRC_QUEUE_WORKER_POOL_H_

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
#include <deque>
#include <map>
#include <mutex>
#include <stop_token>
#include <thread>
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
  // Runs `task` on the pool's timer thread at `when` (unless closed first;
  // then it is destroyed, not run).
  void call_at(Clock::time_point when, Task task);

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
  std::multimap<Clock::time_point, Task> timers;
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

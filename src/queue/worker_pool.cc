// WorkerPool: FIFO task queue, persistent or per-task threads, one timer
// thread.
#include "queue/worker_pool.h"

#include <atomic>
#include <utility>

#include "base/fork_generation.h"
#include "tierlock/executor.h"

namespace tierlock {
namespace internal {

void PoolState::start() {
  std::lock_guard<std::mutex> lk(mu);
  for (std::size_t i = 0; i < size; ++i)
    workers.emplace_back([this] { work(); });
}

void PoolState::post(Task task) {
  std::unique_lock<std::mutex> lk(mu);
  if (size == 0 && !closed) {
    ++task_threads;
    lk.unlock();
    std::thread([this, t = std::move(task)]() mutable {
      {
        Task local = std::move(t);  // run and destroyed before we sign off
        std::move(local)();
      }
      std::lock_guard<std::mutex> done(mu);
      if (--task_threads == 0) idle_cv.notify_all();
    }).detach();
    return;
  }
  tasks.push_back(std::move(task));
  cv.notify_one();
}

PoolState::TimerId PoolState::call_at(Clock::time_point when, Task task) {
  std::lock_guard<std::mutex> lk(mu);
  if (closed) {
    tasks.push_back(std::move(task));  // destroyed, not run, at shut-down
    return TimerId{when, 0};
  }
  if (!timer_started) {
    timer_started = true;
    timer_thread = std::thread([this] { time(); });
  }
  const bool earliest = timers.empty() || when < timers.begin()->first;
  const std::uint64_t id = ++last_timer;
  timers.emplace(when, std::pair(id, std::move(task)));
  if (earliest) timer_cv.notify_one();
  return TimerId{when, id};
}

void PoolState::cancel_timer(const TimerId& timer) {
  Task dropped;  // destroyed outside the lock
  {
    std::lock_guard<std::mutex> lk(mu);
    auto [first, last] = timers.equal_range(timer.when);
    for (auto it = first; it != last; ++it) {
      if (it->second.first == timer.id) {
        dropped = std::move(it->second.second);
        timers.erase(it);
        break;
      }
    }
  }
}

void PoolState::work() {
  for (;;) {
    Task task;
    {
      std::unique_lock<std::mutex> lk(mu);
      while (!closed && tasks.empty()) cv.wait(lk);
      if (closed) return;
      task = std::move(tasks.front());
      tasks.pop_front();
    }
    std::move(task)();
  }
}

void PoolState::time() {
  std::unique_lock<std::mutex> lk(mu);
  for (;;) {
    if (closed) return;
    if (timers.empty()) {
      timer_cv.wait(lk);
      continue;
    }
    auto first = timers.begin();
    // A copy: while this waits (mu released), cancel_timer may erase the
    // node the time lives in.
    if (const Clock::time_point when = first->first; Clock::now() < when) {
      timer_cv.wait_until(lk, when);
      continue;
    }
    Task task = std::move(first->second.second);
    timers.erase(first);
    lk.unlock();
    std::move(task)();
    task = nullptr;  // destroyed outside the lock too
    lk.lock();
  }
}

void PoolState::shut_down() {
  {
    std::lock_guard<std::mutex> lk(mu);
    closed = true;
  }
  // Cancel every async acquire bound to this pool: queued waiters leave their
  // queues, kernel waits are interrupted. Their completions are posted here
  // and destroyed below without running.
  stop.request_stop();
  cv.notify_all();
  timer_cv.notify_all();
  for (std::thread& t : workers) t.join();
  if (timer_thread.joinable()) timer_thread.join();
  std::deque<Task> dropped;
  std::multimap<Clock::time_point, std::pair<std::uint64_t, Task>>
      dropped_timers;
  {
    std::unique_lock<std::mutex> lk(mu);
    while (task_threads > 0) idle_cv.wait(lk);
    dropped.swap(tasks);
    dropped_timers.swap(timers);
  }
  // Destroyed outside the lock: a dropped completion releases its lock.
}

}  // namespace internal

WorkerPool::WorkerPool(std::size_t threads)
    : state_(std::make_shared<State>(threads)) {
  state_->start();
}

WorkerPool::~WorkerPool() { state_->shut_down(); }

void WorkerPool::execute(absl::AnyInvocable<void() &&> task) {
  state_->post(std::move(task));
}

std::size_t WorkerPool::size() const { return state_->size; }

WorkerPool& WorkerPool::global() {
  // One pool per process image: a fork()ed child has none of the parent's
  // threads, so it gets a pool of its own (the inherited one is abandoned).
  // Never destroyed: at exit the kernel releases whatever it held.
  struct Global {
    WorkerPool* pool;
    std::uint64_t generation;
  };
  static std::atomic<Global*> global{nullptr};
  Global* current = global.load(std::memory_order_acquire);
  if (current != nullptr && current->generation == internal::fork_generation())
      [[likely]] {
    return *current->pool;
  }
  auto* fresh = new Global{new WorkerPool(2), internal::fork_generation()};
  if (global.compare_exchange_strong(current, fresh,
                                     std::memory_order_acq_rel)) {
    return *fresh->pool;
  }
  delete fresh->pool;  // another thread won the race
  delete fresh;
  return *current->pool;
}

}  // namespace tierlock

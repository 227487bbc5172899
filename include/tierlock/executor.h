// tierlock/executor.h
//
// Defines where asynchronous acquires wait and where their completions run:
//   Executor   - the interface a user implements to run completions on their
//                own threads.
//   WorkerPool - tierlock's thread pool: runs kernel waits and (by default)
//                completions.
#ifndef TIERLOCK_EXECUTOR_H_
#define TIERLOCK_EXECUTOR_H_

#include <cstddef>
#include <memory>

#include "absl/functional/any_invocable.h"

namespace tierlock {

// Executor
//
// Runs tasks. execute() must not run the task inline while the caller holds
// locks it may need (tierlock never calls it with an internal lock held). An
// executor that drops a task instead of running it (e.g. while shutting down)
// destroys it; a dropped completion releases the lock it carried.
class Executor {
 public:
  virtual ~Executor() = default;
  virtual void execute(absl::AnyInvocable<void() &&> task) = 0;
};

// WorkerPool
//
// The threads on which asynchronous acquires (DirLock::acquire_async) wait
// and complete. Waiting costs threads only where the kernel is involved: of
// all the async waiters on one lock file, only the head of the in-process
// queue occupies a pool thread (blocked in the kernel, interruptibly, while
// another process holds the lock); the others are queue nodes and occupy no
// thread. Completions run on the pool unless AcquireOptions::executor says
// otherwise.
//
// Size: `threads` persistent workers, started at construction. 0 means no
// persistent workers: each task runs on a thread of its own, started for it
// (useful when waits are long and rare). A pool of N threads can wait in the
// kernel for at most N lock files at once; completions queue behind such
// waits, so give the pool one thread more than the number of lock files you
// expect other processes to hold against it at the same time.
//
// Lifetime: the destructor cancels every async acquire bound to this pool
// that has not completed (waiters leave their queues; kernel waits are
// interrupted), does not run completions still queued (their locks are
// released as they are destroyed), and joins its threads. It does not hang on
// a kernel wait and leaves no lock held. WorkerPool::global() is never
// destroyed: at process exit the kernel releases whatever it held.
//
// Thread-safety: execute() may be called from any thread, concurrently.
class WorkerPool final : public Executor {
 public:
  explicit WorkerPool(std::size_t threads);
  ~WorkerPool() override;
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs `task` on a pool thread, in submission order (FIFO) per pool.
  void execute(absl::AnyInvocable<void() &&> task) override;

  // Returns the number of persistent worker threads (0: thread per task).
  std::size_t size() const;

  // Returns the process-wide pool used when AcquireOptions::pool is null:
  // 2 threads, started on first use, never destroyed. A fork()ed child gets
  // a new one on first use (the parent's threads do not exist there).
  static WorkerPool& global();

 private:
  // The queue, workers and timers (defined in the library), shared with the
  // async acquires bound to the pool, which DirLock hands it to.
  class State;
  friend class DirLock;
  friend class LeaseLock;  // its wait hooks run on the pool's timer thread
  std::shared_ptr<State> state_;
};

}  // namespace tierlock

#endif  // TIERLOCK_EXECUTOR_H_

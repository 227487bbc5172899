// src/api/wait_hook.h
//
// WaitHook - runs AcquireOptions::on_wait once for an acquire that has
// waited on_wait_after, on a pool's timer thread, and never after the
// acquire is over (internal; directory locks and leases share it).
#ifndef TIERLOCK_SRC_API_WAIT_HOOK_H_
#define TIERLOCK_SRC_API_WAIT_HOOK_H_

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "queue/worker_pool.h"
#include "tierlock/acquire_options.h"
#include "tierlock/holder.h"

namespace tierlock::internal {

// Thread-safe. The acquire calls waiting() when it starts to wait (possibly
// with a mutex of its own held: waiting() only sets a timer) and finish()
// before it returns or completes. The timer's task runs the hook if the
// acquire is not over by then; finish() waits for a hook that is running,
// so the hook never outlives the acquire.
class WaitHook : public std::enable_shared_from_this<WaitHook> {
 public:
  using Clock = std::chrono::steady_clock;
  using ReadHolders = std::function<absl::StatusOr<std::vector<Holder>>()>;

  // Null if `options` has no hook. Takes the hook out of `options`; its
  // timer runs on `timers` (the acquire's pool), from `start` (the call).
  static std::shared_ptr<WaitHook> make(AcquireOptions& options,
                                        std::shared_ptr<PoolState> timers,
                                        Clock::time_point start);

  // The acquire has to wait for `lock`: arms the timer the first time; a
  // later call (acquire_all's next lock, a redo on a replaced lock file)
  // only changes which lock the hook is told about. Never blocks on the
  // hook.
  void waiting(std::string lock, ReadHolders read);
  // The acquire is over: the hook will not run; if it is running, returns
  // when it has returned. Not from inside the hook.
  void finish();

  WaitHook(std::function<void(const WaitInfo&)> hook, Mode mode,
           std::chrono::nanoseconds after, std::shared_ptr<PoolState> timers,
           Clock::time_point start)
      : hook_(std::move(hook)),
        mode_(mode),
        after_(after),
        timers_(std::move(timers)),
        start_(start) {}

 private:
  enum class State { kIdle, kArmed, kRunning, kDone };
  void fire();

  std::mutex mu_;
  std::condition_variable done_;
  State state_ = State::kIdle;
  std::function<void(const WaitInfo&)> hook_;
  const Mode mode_;
  const std::chrono::nanoseconds after_;
  const std::shared_ptr<PoolState> timers_;
  const Clock::time_point start_;
  std::string lock_;
  ReadHolders read_;
  PoolState::TimerId timer_;
};

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_API_WAIT_HOOK_H_

// WaitHook: one timer per waiting acquire, and a state that tells the timer
// whether the acquire is still waiting.
#include "api/wait_hook.h"

#include <utility>

namespace tierlock::internal {

std::shared_ptr<WaitHook> WaitHook::make(AcquireOptions& options,
                                         std::shared_ptr<PoolState> timers,
                                         Clock::time_point start) {
  if (!options.on_wait) return nullptr;
  return std::make_shared<WaitHook>(
      std::move(options.on_wait), options.mode,
      std::max(options.on_wait_after, std::chrono::nanoseconds::zero()),
      std::move(timers), start);
}

void WaitHook::waiting(std::string lock, ReadHolders read) {
  std::lock_guard<std::mutex> lk(mu_);
  if (state_ == State::kDone || state_ == State::kRunning) return;
  lock_ = std::move(lock);
  read_ = std::move(read);
  if (state_ == State::kArmed) return;
  state_ = State::kArmed;
  // A weak reference: an acquire that is over does not wait for its timer
  // to be destroyed, and a timer that outlives it finds nothing to run.
  timer_ = timers_->call_at(start_ + std::chrono::ceil<Clock::duration>(after_),
                            [weak = weak_from_this()] {
                              if (std::shared_ptr<WaitHook> self = weak.lock())
                                self->fire();
                            });
}

void WaitHook::fire() {
  std::function<void(const WaitInfo&)> hook;
  ReadHolders read;
  WaitInfo info;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (state_ != State::kArmed) return;
    state_ = State::kRunning;
    hook = std::move(hook_);
    read = std::move(read_);
    info.lock = std::move(lock_);
  }
  info.mode = mode_;
  info.holders =
      read ? read()
           : absl::StatusOr<std::vector<Holder>>(std::vector<Holder>{});
  info.waited = std::chrono::duration_cast<std::chrono::nanoseconds>(
      Clock::now() - start_);
  hook(info);
  {
    std::lock_guard<std::mutex> lk(mu_);
    state_ = State::kDone;
  }
  done_.notify_all();
}

void WaitHook::finish() {
  bool cancel = false;
  ReadHolders read;  // destroyed outside the lock
  std::function<void(const WaitInfo&)> hook;
  {
    std::unique_lock<std::mutex> lk(mu_);
    done_.wait(lk, [this] { return state_ != State::kRunning; });
    cancel = state_ == State::kArmed;
    state_ = State::kDone;
    read = std::move(read_);
    hook = std::move(hook_);
  }
  if (cancel) timers_->cancel_timer(timer_);
}

}  // namespace tierlock::internal

// src/lease/backends/fair_wait.h
//
// The fair, woken wait shared by the Redis, PostgreSQL lease-table and SQLite
// backends (internal; docs/design.md, "Lease waits"):
//   StopPipe      - a pipe written when a stop is requested, for poll(2).
//   wait_readable - blocks until a descriptor is readable, a time or a stop.
//   WaitTurn      - one attempt of a queued waiter: granted, or when to look
//                   again at the latest.
//   fair_wait     - the waiter's loop: subscribe to its wake signal first,
//                   then join the key's queue and try as its head; block
//                   until woken or the hint or refresh period; leave the
//                   queue on timeout, stop or error.
//   WaitSteps     - the same steps as an object that owns its captures, for
//                   the async acquire (src/lease/async_acquire.cc), which
//                   runs them on a pool and waits for the wake in a poller.
//   set_wait_steps / wait_steps_for - each woken backend's factory of
//                   WaitSteps, by backend instance (no public SPI yet).
#ifndef TIERLOCK_SRC_LEASE_FAIR_WAIT_H_
#define TIERLOCK_SRC_LEASE_FAIR_WAIT_H_

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "absl/status/statusor.h"
#include "tierlock/lease.h"

namespace tierlock::internal {

// A pipe written when a stop is requested (for poll). fd() is -1 when the
// token can never be stopped.
class StopPipe {
 public:
  explicit StopPipe(const std::stop_token& stop) {
    if (!stop.stop_possible()) return;
    if (::pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0) fds_[0] = fds_[1] = -1;
    if (fds_[1] >= 0) {
      const int w = fds_[1];
      cb_.emplace(stop, [w] {
        const char c = 1;
        (void)!::write(w, &c, 1);
      });
    }
  }
  StopPipe(const StopPipe&) = delete;
  StopPipe& operator=(const StopPipe&) = delete;
  ~StopPipe() {
    cb_.reset();  // waits for a running callback before the fds close
    if (fds_[0] >= 0) ::close(fds_[0]);
    if (fds_[1] >= 0) ::close(fds_[1]);
  }
  int fd() const { return fds_[0]; }

 private:
  int fds_[2] = {-1, -1};
  std::optional<std::stop_callback<std::function<void()>>> cb_;
};

enum class WaitEnd { kReadable, kTimedOut, kStopped, kFailed };

// Blocks until `fd` is readable (or hung up), `until` passes or `stop` is
// requested (`stop_fd`: its StopPipe). kFailed only if poll itself fails.
inline WaitEnd wait_readable(int fd, int stop_fd,
                             std::chrono::steady_clock::time_point until,
                             const std::stop_token& stop) {
  for (;;) {
    if (stop.stop_requested()) return WaitEnd::kStopped;
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) return WaitEnd::kTimedOut;
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - now);
    pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    const int n = ::poll(
        fds, stop_fd >= 0 ? 2 : 1,
        static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 60'000)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return WaitEnd::kFailed;
    }
    if (n > 0 && fds[0].revents != 0) return WaitEnd::kReadable;
  }
}

// One attempt of a queued waiter.
struct WaitTurn {
  std::unique_ptr<LeaseSession> session;  // granted (and out of the queue)
  // Otherwise: the service's hint of when the state can change without a
  // wake (the lease's or the queue head's expiry); negative: none.
  std::chrono::milliseconds retry_in{-1};
};

// The waiter's loop. `subscribe()` opens the waiter's wake signal before it
// joins the queue (so no release after its first attempt is missed) and
// returns an object with `int fd()` and `absl::StatusOr<bool> drain(bool
// readable)` (reads what is there, at most one read if `readable`, never
// blocking; true if a wake came). `attempt()` joins the queue (or refreshes
// its place, pushing its expiry to ttl from now) and takes the key if this
// waiter heads the queue and the key is free. `leave()` takes the waiter out
// of the queue (best effort: otherwise it lapses within its ttl) and wakes
// the next. The waiter looks again when woken, at the service's hint, and
// every ttl/3 at the latest (its refresh; the safety net for a holder that
// dies without a release).
template <typename Subscribe, typename Attempt, typename Leave>
absl::StatusOr<std::unique_ptr<LeaseSession>> fair_wait(
    const LeaseRequest& request, std::chrono::steady_clock::time_point deadline,
    const std::stop_token& stop, Subscribe&& subscribe, Attempt&& attempt,
    Leave&& leave) {
  using std::chrono::milliseconds;
  using Clock = std::chrono::steady_clock;
  auto waker = subscribe();
  if (!waker.ok()) return waker.status();
  StopPipe stop_pipe(stop);
  const milliseconds refresh = std::max(milliseconds(1), request.ttl / 3);
  for (;;) {
    if (stop.stop_requested()) {
      leave();
      return absl::CancelledError("cancelled");
    }
    absl::StatusOr<WaitTurn> turn = attempt();
    if (!turn.ok()) {
      leave();
      return turn.status();
    }
    if (turn->session) return std::move(turn->session);
    const Clock::time_point now = Clock::now();
    Clock::time_point until = std::min(deadline, now + refresh);
    if (turn->retry_in >= milliseconds::zero()) {
      until = std::min(until, now + turn->retry_in + milliseconds(1));
    }
    // Wakes read with an earlier reply are already buffered.
    absl::StatusOr<bool> woken = waker->drain(false);
    while (woken.ok() && !*woken) {
      const WaitEnd end =
          wait_readable(waker->fd(), stop_pipe.fd(), until, stop);
      if (end == WaitEnd::kStopped) break;
      if (end == WaitEnd::kFailed) {
        woken = absl::InternalError("poll on the wake signal failed");
        break;
      }
      if (end == WaitEnd::kTimedOut) {
        if (Clock::now() >= deadline) {
          leave();
          return std::unique_ptr<LeaseSession>();
        }
        break;
      }
      woken = waker->drain(true);
    }
    if (!woken.ok()) {
      leave();
      return woken.status();
    }
  }
}

// One queued waiter's steps, owned: subscribe() once (blocks on the service
// briefly), then attempt() / drain() until granted, leave() when giving up.
// The calls are never concurrent; drain() never blocks.
class WaitSteps {
 public:
  virtual ~WaitSteps() = default;
  virtual absl::Status subscribe() = 0;
  // The wake signal's descriptor after subscribe(); -1: none (look again at
  // the hint or refresh period only).
  virtual int fd() const = 0;
  virtual absl::StatusOr<bool> drain(bool readable) = 0;
  virtual absl::StatusOr<WaitTurn> attempt() = 0;
  virtual void leave() = 0;
};

template <typename Subscribe, typename Attempt, typename Leave>
class WaitStepsOf final : public WaitSteps {
 public:
  WaitStepsOf(Subscribe s, Attempt a, Leave l)
      : subscribe_(std::move(s)),
        attempt_(std::move(a)),
        leave_(std::move(l)) {}
  absl::Status subscribe() override {
    auto w = subscribe_();
    if (!w.ok()) return w.status();
    waker_.emplace(*std::move(w));
    return absl::OkStatus();
  }
  int fd() const override { return waker_ ? waker_->fd() : -1; }
  absl::StatusOr<bool> drain(bool readable) override {
    if (!waker_) return false;
    return waker_->drain(readable);
  }
  absl::StatusOr<WaitTurn> attempt() override { return attempt_(); }
  void leave() override { leave_(); }

 private:
  using Waker = typename std::invoke_result_t<Subscribe&>::value_type;
  Subscribe subscribe_;
  Attempt attempt_;
  Leave leave_;
  std::optional<Waker> waker_;
};

template <typename Subscribe, typename Attempt, typename Leave>
std::unique_ptr<WaitSteps> make_wait_steps(Subscribe s, Attempt a, Leave l) {
  return std::make_unique<WaitStepsOf<Subscribe, Attempt, Leave>>(
      std::move(s), std::move(a), std::move(l));
}

// fair_wait over `steps` (the synchronous wait of a backend that also has
// WaitSteps for the async acquire).
inline absl::StatusOr<std::unique_ptr<LeaseSession>> fair_wait(
    const LeaseRequest& request, std::chrono::steady_clock::time_point deadline,
    const std::stop_token& stop, WaitSteps& steps) {
  struct Waker {
    WaitSteps* steps;
    int fd() const { return steps->fd(); }
    absl::StatusOr<bool> drain(bool readable) { return steps->drain(readable); }
  };
  return fair_wait(
      request, deadline, stop,
      [&]() -> absl::StatusOr<Waker> {
        if (absl::Status s = steps.subscribe(); !s.ok()) return s;
        return Waker{&steps};
      },
      [&] { return steps.attempt(); }, [&] { steps.leave(); });
}

// Makes a queued waiter's steps for `request`, or null when the backend (in
// its current mode) has no woken queue.
using WaitStepsFactory =
    std::function<std::unique_ptr<WaitSteps>(const LeaseRequest& request)>;
// Registers (null: removes) `backend`'s factory; backends call it from
// create() and their destructor. Thread-safe.
void set_wait_steps(const LeaseBackend* backend, WaitStepsFactory factory);
// Returns `backend`'s factory, or null.
WaitStepsFactory wait_steps_for(const LeaseBackend* backend);

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_LEASE_FAIR_WAIT_H_

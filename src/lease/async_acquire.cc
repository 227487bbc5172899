// src/lease/async_acquire.cc
//
// Async lease acquires: each waiter is a small state machine whose steps
// (try, subscribe, attempt, leave: short round trips to the service) run as
// tasks on its pool, and whose waits (wake descriptor, refresh or backoff
// timer, stop) are all watched by one poller thread. N waiters cost N
// descriptors and no thread each.
#include "lease/async_acquire.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lease/backends/fair_wait.h"
#include "tierlock/text.h"

namespace tierlock::internal {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// ------------------------------------------------------ wait-steps registry

struct StepsRegistry {
  std::mutex mu;
  absl::flat_hash_map<const LeaseBackend*, WaitStepsFactory> factories;
};

StepsRegistry& registry() {
  static auto* r = new StepsRegistry;  // never destroyed: used at exit
  return *r;
}

// ------------------------------------------------------------------- poller

class LeaseWaitPoller {
 public:
  using Fire = absl::AnyInvocable<void(WaitEnd) &&>;

  static LeaseWaitPoller& instance() {
    // Never destroyed: waiters may still be registered at exit.
    static auto* p = new LeaseWaitPoller;
    return *p;
  }

  // Watches `fd` (-1: none) until it is readable, `until` passes or stop(id)
  // is called, then calls `fire` once, on the poller thread, with no lock
  // held. Returns the id, or an error if epoll refuses the descriptor.
  absl::StatusOr<std::uint64_t> add(int fd, Clock::time_point until,
                                    Fire fire) {
    std::lock_guard<std::mutex> lk(mu_);
    const std::uint64_t id = next_id_++;
    if (fd >= 0) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.u64 = id;
      if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
        return absl::ErrnoToStatus(
            errno, absl::StrCat("epoll_ctl ADD of wake descriptor ", fd));
      }
    }
    entries_.emplace(id, Entry{fd, until, std::move(fire)});
    const bool earliest = timers_.empty() || until < timers_.begin()->first;
    timers_.emplace(until, id);
    if (earliest) poke();
    return id;
  }

  // Fires `id` with kStopped soon (on the poller thread), if still watched.
  void stop(std::uint64_t id) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!entries_.contains(id)) return;
    stopped_.push_back(id);
    poke();
  }

  std::size_t size() {
    std::lock_guard<std::mutex> lk(mu_);
    return entries_.size();
  }

 private:
  struct Entry {
    int fd;
    Clock::time_point until;
    Fire fire;
  };
  using Fired = std::vector<std::pair<Fire, WaitEnd>>;

  LeaseWaitPoller() {
    epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
    evfd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;  // ids start at 1
    if (epfd_ < 0 || evfd_ < 0 ||
        ::epoll_ctl(epfd_, EPOLL_CTL_ADD, evfd_, &ev) != 0) {
      // Without these nothing can wait: a process out of descriptors this
      // early cannot run async acquires at all.
      std::abort();
    }
    thread_ = std::thread([this] { run(); });
    thread_.detach();
  }

  void poke() {
    const std::uint64_t one = 1;
    (void)!::write(evfd_, &one, sizeof one);
  }

  // mu_ held.
  void take(std::uint64_t id, WaitEnd end, Fired& fired) {
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    if (it->second.fd >= 0) {
      (void)::epoll_ctl(epfd_, EPOLL_CTL_DEL, it->second.fd, nullptr);
    }
    timers_.erase({it->second.until, id});
    fired.emplace_back(std::move(it->second.fire), end);
    entries_.erase(it);
  }

  void run() {
    epoll_event events[64];
    for (;;) {
      int timeout_ms = -1;
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (!timers_.empty()) {
          const auto left = std::chrono::ceil<milliseconds>(
              timers_.begin()->first - Clock::now());
          timeout_ms = static_cast<int>(
              std::clamp<std::int64_t>(left.count(), 0, 60'000));
        }
      }
      const int n = ::epoll_wait(epfd_, events, 64, timeout_ms);
      Fired fired;
      {
        std::lock_guard<std::mutex> lk(mu_);
        for (int i = 0; i < n; ++i) {
          if (events[i].data.u64 == 0) {
            std::uint64_t v;
            (void)!::read(evfd_, &v, sizeof v);
            continue;
          }
          take(events[i].data.u64, WaitEnd::kReadable, fired);
        }
        for (std::uint64_t id : std::exchange(stopped_, {})) {
          take(id, WaitEnd::kStopped, fired);
        }
        const Clock::time_point now = Clock::now();
        while (!timers_.empty() && timers_.begin()->first <= now) {
          take(timers_.begin()->second, WaitEnd::kTimedOut, fired);
        }
      }
      for (auto& [fire, end] : fired) std::move(fire)(end);
    }
  }

  std::mutex mu_;
  absl::flat_hash_map<std::uint64_t, Entry> entries_;
  std::set<std::pair<Clock::time_point, std::uint64_t>> timers_;
  std::vector<std::uint64_t> stopped_;
  std::uint64_t next_id_ = 1;
  int epfd_ = -1;
  int evfd_ = -1;
  std::thread thread_;
};

// ------------------------------------------------------- one async acquire

std::string seconds(std::chrono::nanoseconds d) { return format_duration(d); }

std::chrono::nanoseconds jittered(std::chrono::nanoseconds step) {
  thread_local std::minstd_rand rng(std::random_device{}());
  std::uniform_int_distribution<std::int64_t> dist(step.count() / 2,
                                                   step.count());
  return std::chrono::nanoseconds(dist(rng));
}

// Shared by the pool tasks and the poller entry of one acquire; exactly one
// of them holds it at a time, so its steps never run concurrently.
struct Op {
  explicit Op(std::unique_ptr<AsyncLeaseAcquire> acquire)
      : a(std::move(acquire)) {}
  ~Op() {
    // Dropped unfinished (its pool shut down): leave the queue (best
    // effort; otherwise the entry lapses within the ttl).
    if (steps && joined) steps->leave();
  }

  std::unique_ptr<AsyncLeaseAcquire> a;
  std::unique_ptr<WaitSteps> steps;  // null: polled with backoff
  bool joined = false;
  bool finished = false;
  Clock::time_point until;  // the current wait's end
  std::chrono::nanoseconds backoff = milliseconds(1);

  std::mutex mu;
  std::uint64_t poll_id = 0;  // watched by the poller under this id
  // Destroyed with the Op (waiting for a running callback).
  std::optional<std::stop_callback<std::function<void()>>> on_stop;
};
using OpPtr = std::shared_ptr<Op>;

void run_on_pool(const OpPtr& op, void (*fn)(const OpPtr&, WaitEnd),
                 WaitEnd end) {
  op->a->pool->execute([op, fn, end]() mutable { fn(op, end); });
}

void finish(const OpPtr& op, absl::StatusOr<Lease> result) {
  AsyncLeaseAcquire& a = *op->a;
  op->finished = true;
  op->joined = false;
  if (!result.ok() && a.forget) a.forget();
  auto done = std::move(a.done);
  if (a.executor != nullptr) {
    // A task the executor drops destroys the Lease: released.
    a.executor->execute(
        [done = std::move(done), r = std::move(result)]() mutable {
          std::move(done)(std::move(r));
        });
  } else {
    std::move(done)(std::move(result));
  }
}

void fail(const OpPtr& op, const absl::Status& s) {
  finish(op,
         absl::Status(s.code(), absl::StrCat(op->a->what, ": ", s.message())));
}

void leave(const OpPtr& op) {
  if (op->steps && op->joined) op->steps->leave();
  op->joined = false;
}

void cancelled(const OpPtr& op) {
  leave(op);
  finish(op, absl::CancelledError(
                 absl::StrCat(op->a->what, ": cancelled after ",
                              seconds(Clock::now() - op->a->start))));
}

void timed_out(const OpPtr& op) {
  leave(op);
  // One more short round trip on the pool, as every step: names the holder
  // when the backend can tell.
  std::string who = "another owner";
  absl::StatusOr<std::optional<Holder>> h =
      op->a->backend->holder_of(op->a->request.key);
  if (h.ok() && h->has_value()) who = describe_lease_holder(**h);
  finish(op,
         absl::DeadlineExceededError(absl::StrCat(
             op->a->what, ": timed out after ",
             seconds(Clock::now() - op->a->start), " (held by ", who, ")")));
}

void step(const OpPtr& op, WaitEnd end);

// Hands the wait to the poller until op->until, the wake descriptor or a
// stop. Runs on the pool.
void wait_in_poller(const OpPtr& op) {
  const int fd = op->steps ? op->steps->fd() : -1;
  // The entry owns the op while it waits.
  absl::StatusOr<std::uint64_t> id =
      LeaseWaitPoller::instance().add(fd, op->until, [op](WaitEnd end) mutable {
        {
          std::lock_guard<std::mutex> lk(op->mu);
          op->poll_id = 0;
        }
        run_on_pool(op, step, end);
      });
  if (!id.ok()) {
    leave(op);
    fail(op, id.status());
    return;
  }
  {
    std::lock_guard<std::mutex> lk(op->mu);
    op->poll_id = *id;
  }
  // A stop requested before poll_id was set found nothing to stop.
  if (op->a->stop.stop_requested()) LeaseWaitPoller::instance().stop(*id);
}

// One attempt as a queued waiter; then granted, or waiting in the poller.
void attempt(const OpPtr& op) {
  AsyncLeaseAcquire& a = *op->a;
  const milliseconds refresh = std::max(milliseconds(1), a.request.ttl / 3);
  for (;;) {
    if (a.stop.stop_requested()) return cancelled(op);
    const Clock::time_point sent = a.backend->clock().now();
    absl::StatusOr<WaitTurn> turn = op->steps->attempt();
    op->joined = true;
    if (!turn.ok()) {
      leave(op);
      return fail(op, turn.status());
    }
    if (turn->session) {
      op->joined = false;  // a grant takes the waiter out of the queue
      return finish(op, a.make_lease(std::move(turn->session), sent));
    }
    const Clock::time_point now = Clock::now();
    op->until = std::min(a.deadline, now + refresh);
    if (turn->retry_in >= milliseconds::zero()) {
      op->until = std::min(op->until, now + turn->retry_in + milliseconds(1));
    }
    absl::StatusOr<bool> woken = op->steps->drain(false);
    if (!woken.ok()) {
      leave(op);
      return fail(op, woken.status());
    }
    if (!*woken) return wait_in_poller(op);
  }
}

// One try (the first step, and a polled waiter's every step).
void try_once(const OpPtr& op) {
  AsyncLeaseAcquire& a = *op->a;
  if (a.stop.stop_requested()) return cancelled(op);
  const Clock::time_point sent = a.backend->clock().now();
  absl::StatusOr<std::unique_ptr<LeaseSession>> s =
      a.backend->try_acquire(a.request);
  if (!s.ok()) return fail(op, s.status());
  if (*s) return finish(op, a.make_lease(*std::move(s), sent));
  const Clock::time_point now = Clock::now();
  if (a.one_try || now >= a.deadline) return timed_out(op);
  op->until = std::min(a.deadline, now + jittered(op->backoff));
  op->backoff =
      std::min<std::chrono::nanoseconds>(op->backoff * 2, milliseconds(100));
  wait_in_poller(op);
}

void start(const OpPtr& op) {
  AsyncLeaseAcquire& a = *op->a;
  if (a.stop.stop_requested()) return cancelled(op);
  // Uncontended: one try, no subscription (as acquire() does).
  const Clock::time_point sent = a.backend->clock().now();
  absl::StatusOr<std::unique_ptr<LeaseSession>> s =
      a.backend->try_acquire(a.request);
  if (!s.ok()) return fail(op, s.status());
  if (*s) return finish(op, a.make_lease(*std::move(s), sent));
  if (a.one_try || Clock::now() >= a.deadline) return timed_out(op);
  if (WaitStepsFactory factory = wait_steps_for(a.backend.get())) {
    op->steps = factory(a.request);
  }
  if (!op->steps) {
    op->until = std::min(a.deadline, Clock::now() + jittered(op->backoff));
    op->backoff *= 2;
    return wait_in_poller(op);
  }
  // Subscribed before joining: no release after the first attempt is missed.
  if (absl::Status st = op->steps->subscribe(); !st.ok()) return fail(op, st);
  attempt(op);
}

// A pool task: the first step (kFailed is never fired by the poller; used
// here as "start"), or what the poller saw.
void step(const OpPtr& op, WaitEnd end) {
  if (op->finished) return;
  switch (end) {
    case WaitEnd::kFailed:
      return start(op);
    case WaitEnd::kStopped:
      return cancelled(op);
    case WaitEnd::kTimedOut:
      if (Clock::now() >= op->a->deadline) return timed_out(op);
      if (!op->steps) return try_once(op);
      return attempt(op);
    case WaitEnd::kReadable: {
      absl::StatusOr<bool> woken = op->steps->drain(true);
      if (!woken.ok()) {
        leave(op);
        return fail(op, woken.status());
      }
      if (*woken) return attempt(op);
      return wait_in_poller(op);  // a partial read: same wait, same end
    }
  }
}

}  // namespace

void set_wait_steps(const LeaseBackend* backend, WaitStepsFactory factory) {
  StepsRegistry& r = registry();
  std::lock_guard<std::mutex> lk(r.mu);
  if (factory) {
    r.factories[backend] = std::move(factory);
  } else {
    r.factories.erase(backend);
  }
}

WaitStepsFactory wait_steps_for(const LeaseBackend* backend) {
  StepsRegistry& r = registry();
  std::lock_guard<std::mutex> lk(r.mu);
  auto it = r.factories.find(backend);
  return it == r.factories.end() ? nullptr : it->second;
}

void start_async_acquire(std::unique_ptr<AsyncLeaseAcquire> a) {
  auto op = std::make_shared<Op>(std::move(a));
  Op* raw = op.get();
  if (raw->a->stop.stop_possible()) {
    // Runs inline if already stopped: poll_id is 0 then, nothing to do.
    raw->on_stop.emplace(raw->a->stop, [raw] {
      std::uint64_t id;
      {
        std::lock_guard<std::mutex> lk(raw->mu);
        id = raw->poll_id;
      }
      if (id != 0) LeaseWaitPoller::instance().stop(id);
    });
  }
  run_on_pool(op, step, WaitEnd::kFailed);
}

std::size_t async_lease_waiters() { return LeaseWaitPoller::instance().size(); }

}  // namespace tierlock::internal

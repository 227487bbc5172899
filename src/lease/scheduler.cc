// src/lease/scheduler.cc
//
// The shared timer thread (see lease_state.h). One poll(2) loop: a wake
// pipe, the sockets of connection-bound leases, and a timeout at the nearest
// expiry or renewal time on the real clock. It does no network I/O: each
// renewal runs on a detached worker thread (at most one per lease), so a
// frozen service delays neither the deadlines nor other leases. Leases on a
// manual clock have no timeout; moving the clock pokes the thread.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <utility>

#include "lease/lease_state.h"

namespace tierlock::internal {

namespace {

constexpr auto kBusyRetry = std::chrono::milliseconds(10);

// Calls the session's check_connection() if s.mu is free; nullopt if busy.
std::optional<bool> check_connection(LeaseState& s)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  std::unique_lock<std::mutex> lk(s.mu.native(), std::try_to_lock);
  if (!lk.owns_lock()) return std::nullopt;
  if (s.released || !s.session) return true;
  return s.session->check_connection();
}

}  // namespace

LeaseScheduler& LeaseScheduler::instance() {
  // Never destroyed: a lease may outlive static destruction order.
  static LeaseScheduler* scheduler = new LeaseScheduler;
  return *scheduler;
}

void LeaseScheduler::add(std::shared_ptr<LeaseState> state) {
  UniqueLock lk(mu_);
  entries_.push_back(std::move(state));
  if (!running_) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
      // No wake pipe: the loop still runs on timeouts (1 ms polls would be a
      // busy loop; use 50 ms) -- only reached when out of descriptors.
      fds[0] = fds[1] = -1;
    }
    wake_read_ = fds[0];
    wake_write_ = fds[1];
    running_ = true;
    // Detached: after setting running_ = false under mu_ the thread touches
    // nothing shared and returns, so a new one may start at once; joining it
    // instead would leave the last one unjoined at exit.
    std::thread([this] { run(); }).detach();
    return;
  }
  if (wake_write_ >= 0) {
    const char c = 1;
    (void)!::write(wake_write_, &c, 1);
  }
}

void LeaseScheduler::remove(const LeaseState* state) {
  UniqueLock lk(mu_);
  std::erase_if(entries_, [&](const std::shared_ptr<LeaseState>& e) {
    return e.get() == state;
  });
  if (running_ && wake_write_ >= 0) {
    const char c = 1;
    (void)!::write(wake_write_, &c, 1);
  }
}

void LeaseScheduler::poke() {
  UniqueLock lk(mu_);
  if (running_ && wake_write_ >= 0) {
    const char c = 1;
    (void)!::write(wake_write_, &c, 1);
  }
}

bool LeaseScheduler::tick(const std::shared_ptr<LeaseState>& sp,
                          std::optional<SteadyTime>& deadline) {
  LeaseState& s = *sp;
  if (s.released_flag.load()) return false;
  if (s.is_lost()) {
    s.fire_lost();  // a worker may have marked it: make sure lost() fired
    return false;
  }
  if (!s.has_ttl) return true;
  const SteadyTime now = s.clock->now();
  // The deadline is checked here, on the timer thread, which never waits on
  // a service: a renewal stuck on a frozen connection cannot delay it.
  if (s.expire_if_due(now)) {
    s.fire_lost();
    return false;
  }
  const SteadyTime renew_at(std::chrono::nanoseconds(s.next_renew_ns.load()));
  if (s.auto_renew && now >= renew_at && !s.renewing.exchange(true)) {
    // One worker thread per renewal in flight (at most one per lease): a
    // slow service or lease holds up only its own renewals. Detached: it
    // ends by valid_until() (the session bounds its waits by it) and owns
    // the state through its shared_ptr.
    try {
      std::thread([this, sp] { renew(sp); }).detach();
    } catch (const std::system_error&) {
      // No thread to be had: try again in 10 ms (the deadline is kept
      // either way).
      s.next_renew_ns.store(
          (now + std::chrono::milliseconds(10)).time_since_epoch().count());
      s.renewing.store(false);
    }
  }
  if (s.clock->is_real()) {
    SteadyTime d = s.valid_until();
    if (s.auto_renew && !s.renewing.load()) d = std::min(d, renew_at);
    if (!deadline || d < *deadline) deadline = d;
  }
  return true;
}

void LeaseScheduler::renew(const std::shared_ptr<LeaseState>& sp) {
  LeaseState& s = *sp;
  bool lost = false;
  {
    UniqueLock lk(s.mu);
    if (!s.released && !s.is_lost()) {
      const SteadyTime sent = s.clock->now();
      absl::StatusOr<bool> renewed =
          s.session->extend_before(s.ttl, s.valid_until());
      // A failed renewal is a lost lease: the holder cannot show it still
      // holds it, so it must stop (docs/leases.md). A renewal that
      // succeeds after valid_until() passed does not revive the lease.
      lost = !renewed.ok() || !*renewed || !s.commit_renewal(sent, s.ttl);
    }
  }
  s.renewing.store(false);
  // Without s.mu: lost() callbacks may call into the lease.
  if (lost) s.fire_lost();
  poke();
}

void LeaseScheduler::run() {
  std::vector<const LeaseState*> busy;  // mu held by another thread last round
  int wake_fd;
  {
    UniqueLock lk(mu_);
    wake_fd = wake_read_;
  }
  for (;;) {
    std::vector<std::shared_ptr<LeaseState>> entries;
    {
      UniqueLock lk(mu_);
      if (entries_.empty()) {
        running_ = false;
        if (wake_read_ >= 0) ::close(wake_read_);
        if (wake_write_ >= 0) ::close(wake_write_);
        wake_read_ = wake_write_ = -1;
        return;
      }
      entries = entries_;
    }
    std::optional<SteadyTime> deadline;
    std::vector<const LeaseState*> drop;
    std::vector<pollfd> fds;
    std::vector<LeaseState*> watched;
    std::vector<const LeaseState*> was_busy;
    was_busy.swap(busy);
    if (wake_fd >= 0) fds.push_back({wake_fd, POLLIN, 0});
    for (const std::shared_ptr<LeaseState>& e : entries) {
      if (!tick(e, deadline)) {
        drop.push_back(e.get());
        continue;
      }
      // Fixed for a session's life: read without e->mu, which a caller's
      // release() may hold across I/O.
      const int fd = e->watch_fd;
      if (fd >= 0 && std::find(was_busy.begin(), was_busy.end(), e.get()) !=
                         was_busy.end()) {
        if (!deadline ||
            *deadline > std::chrono::steady_clock::now() + kBusyRetry) {
          deadline = std::chrono::steady_clock::now() + kBusyRetry;
        }
      } else if (fd >= 0) {
        fds.push_back({fd, POLLIN, 0});
        watched.push_back(e.get());
      }
    }
    if (!drop.empty()) {
      UniqueLock lk(mu_);
      std::erase_if(entries_, [&](const std::shared_ptr<LeaseState>& e) {
        return std::find(drop.begin(), drop.end(), e.get()) != drop.end();
      });
      continue;  // re-check emptiness
    }
    int timeout_ms = -1;
    if (deadline) {
      const auto left = *deadline - std::chrono::steady_clock::now();
      timeout_ms = static_cast<int>(std::clamp<std::int64_t>(
          std::chrono::ceil<std::chrono::milliseconds>(left).count(), 0,
          60'000));
    }
    if (wake_fd < 0 && (timeout_ms < 0 || timeout_ms > 50)) timeout_ms = 50;
    const int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n <= 0) continue;  // timeout or EINTR: re-evaluate
    std::size_t first_watch = 0;
    if (wake_fd >= 0) {
      first_watch = 1;
      if (fds[0].revents != 0) {
        char buf[64];
        while (::read(wake_fd, buf, sizeof buf) > 0) {
        }
      }
    }
    for (std::size_t i = first_watch; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      LeaseState* s = watched[i - first_watch];
      // Never waits for s->mu: a release() may hold it across I/O. A busy
      // lease is left out of the next poll (else a readable fd spins) and
      // checked again after a short timeout.
      std::optional<bool> alive = check_connection(*s);
      if (!alive) {
        busy.push_back(s);
        continue;
      }
      if (!*alive) s->fire_lost();
    }
  }
}

}  // namespace tierlock::internal

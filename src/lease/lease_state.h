// src/lease/lease_state.h
//
// Internal state shared by a Lease handle and the renewer (internal):
//   LeaseState     - one granted lease: its session, validity, lost() source.
//   LeaseScheduler - the one shared timer thread: fires lost() at each
//                    lease's valid_until() unless renewed, starts each
//                    renewal (every ttl/3) on a worker thread of its own, and
//                    watches connection-bound leases' sockets. It never does
//                    network I/O itself, so no service can hold up a deadline.
#ifndef TIERLOCK_SRC_LEASE_LEASE_STATE_H_
#define TIERLOCK_SRC_LEASE_LEASE_STATE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"
#include "tierlock/lease.h"
#include "tierlock/lock_context.h"

namespace tierlock::internal {

using SteadyTime = std::chrono::steady_clock::time_point;

using ContextState = LockContext::State;
struct LeaseName;

// A lease's record in a LockContext (tier checks): what forget_hold needs.
struct LeaseTierHold {
  ContextState* context = nullptr;  // null: not recorded
  std::uint64_t hold_id = 0;
  std::shared_ptr<const LeaseName> name;  // the lock's identity in the checks
};

struct LeaseState {
  // Fixed at grant.
  std::shared_ptr<LeaseBackend> backend;  // keeps the clock and service alive
  LeaseClock* clock = nullptr;
  std::string key;
  std::string owner_id;
  std::optional<std::uint64_t> token;
  bool has_ttl = false;
  bool auto_renew = false;
  std::chrono::milliseconds ttl{0};  // changed by extend() under mu
  int watch_fd = -1;                 // the session's watch_fd()

  // The hold recorded in the acquiring LockContext (tier checks), forgotten
  // once, at release.
  LeaseTierHold tier_hold;

  // Serialises the session's calls (user extend/release, renewal worker,
  // watcher). May be held across a network round trip: nothing that must
  // not block (held(), token(), valid_until(), lost(), the timer) takes it.
  Mutex mu;
  std::unique_ptr<LeaseSession> session ABSL_GUARDED_BY(mu);
  bool released ABSL_GUARDED_BY(mu) = false;
  // Mirrors `released` for the readers that must not take mu.
  std::atomic<bool> released_flag{false};
  // A renewal worker is running (at most one per lease).
  std::atomic<bool> renewing{false};

  // Read without mu (valid_until(), held(), the timer's deadlines).
  std::atomic<std::int64_t> valid_until_ns{0};
  std::atomic<std::int64_t> next_renew_ns{0};
  std::stop_source lost_source;

  SteadyTime valid_until() const {
    return SteadyTime(std::chrono::nanoseconds(valid_until_ns.load()));
  }
  // Starts a validity at `sent` (when the grant or renewal was sent): the
  // service's expiry is at least sent + ttl on its clock, so the holder's
  // view ends a drift margin earlier.
  void set_valid_from(SteadyTime sent, std::chrono::milliseconds lease_ttl) {
    valid_until_ns.store(
        (sent + lease_ttl - backend->clock_drift_margin(lease_ttl))
            .time_since_epoch()
            .count());
    next_renew_ns.store((sent + lease_ttl / 3).time_since_epoch().count());
  }
  // Commits a successful renewal sent at `sent`, unless the lease is lost
  // already (lost() fired, or valid_until() passed while the renewal was in
  // flight): a lost lease stays lost. Returns false then (the caller fires
  // lost()). Never blocks on I/O.
  bool commit_renewal(SteadyTime sent, std::chrono::milliseconds lease_ttl) {
    UniqueLock lk(validity_mu_);
    if (lost_flag_.load() || clock->now() >= valid_until()) {
      lost_flag_.store(true);
      return false;
    }
    set_valid_from(sent, lease_ttl);
    return true;
  }
  // Marks the lease lost if valid_until() has passed at `now`. Returns true if
  // it is lost (now or before).
  bool expire_if_due(SteadyTime now) {
    UniqueLock lk(validity_mu_);
    if (!lost_flag_.load() && now >= valid_until()) lost_flag_.store(true);
    return lost_flag_.load();
  }
  // Marks the lease lost and fires lost() (callbacks run on this thread).
  // Must be called without mu held: callbacks may call into the lease.
  void fire_lost() {
    lost_flag_.store(true);
    lost_source.request_stop();
  }
  bool is_lost() const {
    return lost_flag_.load() || lost_source.stop_requested();
  }

 private:
  // Orders commit_renewal against expiry; never held across I/O.
  Mutex validity_mu_;
  std::atomic<bool> lost_flag_{false};
};

// The process's renewer. Its thread starts with the first registered lease
// and exits when none is left (so an idle process has no extra thread).
class LeaseScheduler {
 public:
  static LeaseScheduler& instance();

  // Registers a lease (ttl or connection-bound) and wakes the thread.
  void add(std::shared_ptr<LeaseState> state);
  // Unregisters a lease; returns at once (the thread may be using it: the
  // state is shared).
  void remove(const LeaseState* state);
  // Wakes the thread to re-evaluate deadlines (a manual clock moved, a lease
  // was extended).
  void poke();

 private:
  struct Entry {
    std::shared_ptr<LeaseState> state;
  };
  void run();
  // Expires one lease, or starts its renewal on a worker. Returns false if
  // it should be dropped; otherwise sets `deadline` (real clock) when it has
  // one. Never blocks on I/O.
  bool tick(const std::shared_ptr<LeaseState>& s,
            std::optional<SteadyTime>& deadline);
  // A renewal worker's body: one extend, bounded by the lease's validity.
  void renew(const std::shared_ptr<LeaseState>& s);

  Mutex mu_;
  std::vector<std::shared_ptr<LeaseState>> entries_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  int wake_read_ ABSL_GUARDED_BY(mu_) = -1;
  int wake_write_ ABSL_GUARDED_BY(mu_) = -1;
};

}  // namespace tierlock::internal

namespace tierlock {

// What lease.h declares opaquely.
class Lease::State final : public internal::LeaseState {};
struct LeaseLock::TierHold : internal::LeaseTierHold {};

}  // namespace tierlock

#endif  // TIERLOCK_SRC_LEASE_LEASE_STATE_H_

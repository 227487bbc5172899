// src/lease/lease_state.h
//
// Internal state shared by a Lease handle and the renewer (internal):
//   LeaseState     - one granted lease: its session, validity, lost() source.
//   LeaseScheduler - the one shared thread that renews leases at ttl/3, fires
//                    lost() when a TTL passes without renewal, and watches
//                    connection-bound leases' sockets.
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
#include "mutex.h"
#include "tierlock/lease.h"

namespace tierlock::internal {

using SteadyTime = std::chrono::steady_clock::time_point;

struct LeaseState {
  // Fixed at grant.
  std::shared_ptr<LeaseBackend> backend;  // keeps the clock and service alive
  LeaseClock* clock = nullptr;
  std::string key;
  std::string owner_id;
  std::optional<std::uint64_t> token;
  bool has_ttl = false;
  bool auto_renew = false;
  std::chrono::milliseconds ttl{0};

  // The hold recorded in the acquiring LockContext (tier checks), forgotten
  // once, at release.
  LeaseTierHold tier_hold;

  // Serialises the session's calls (user extend/release, renewer, watcher).
  Mutex mu;
  std::unique_ptr<LeaseSession> session ABSL_GUARDED_BY(mu);
  bool released ABSL_GUARDED_BY(mu) = false;

  // Read without mu (valid_until(), the renewer's deadline computation).
  std::atomic<std::int64_t> valid_until_ns{0};
  std::atomic<std::int64_t> next_renew_ns{0};
  std::stop_source lost_source;

  SteadyTime valid_until() const {
    return SteadyTime(std::chrono::nanoseconds(valid_until_ns.load()));
  }
  void set_valid_from(SteadyTime sent, std::chrono::milliseconds lease_ttl) {
    valid_until_ns.store((sent + lease_ttl).time_since_epoch().count());
    next_renew_ns.store((sent + lease_ttl / 3).time_since_epoch().count());
  }
  void fire_lost() { lost_source.request_stop(); }
  bool is_lost() const { return lost_source.stop_requested(); }
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
  // Renews / expires one lease. Returns false if it should be dropped;
  // otherwise sets `deadline` (real clock) when it has one.
  static bool tick(LeaseState& s, std::optional<SteadyTime>& deadline);

  Mutex mu_;
  std::vector<std::shared_ptr<LeaseState>> entries_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  int wake_read_ ABSL_GUARDED_BY(mu_) = -1;
  int wake_write_ ABSL_GUARDED_BY(mu_) = -1;
};

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_LEASE_LEASE_STATE_H_

// tests/lease/faults.h
//
// Network-fault measurements for the lease backends (one steady clock for
// every time recorded):
//   FaultResult  - what one fault did: fault -> lost(), fault -> another
//                  owner's grant, the lease's deadline, held() latency, tokens.
//   FaultPlan    - the fault: when, what, what heals it during the run (a
//                  server restart), how long to keep watching the lost lease.
//   measure_fault - holds an auto-renewed lease through `holder` (behind the
//                  test proxy), injects a fault, and races a contender on
//                  `other` (straight to the server) for the key.
//   FaultExpect  - which guarantees check_fault holds a run to.
#ifndef TIERLOCK_TESTS_LEASE_FAULTS_H_
#define TIERLOCK_TESTS_LEASE_FAULTS_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "tierlock/lease.h"

namespace tierlock::testing {

struct FaultResult {
  std::string error;  // non-empty: the run itself failed (no figures)
  bool lost = false, granted = false;
  std::chrono::nanoseconds fault_to_lost{0};
  std::chrono::nanoseconds fault_to_grant{0};  // to the send of the winning try
  // lost() minus the lease's last valid_until() (may be negative: a failed
  // renewal fires early).
  std::chrono::nanoseconds lost_after_valid_until{0};
  // Time between lost() and the contender's winning request; positive means
  // the holder knew first (the overlap is then 0).
  std::chrono::nanoseconds lost_before_grant{0};
  // How long the contender's winning try was in flight (send to reply): the
  // service granted it somewhere in that window.
  std::chrono::nanoseconds grant_in_flight{0};
  std::chrono::nanoseconds held_max{0};  // slowest held() call after the fault
  int held_calls = 0, held_slow = 0;     // calls, and calls over 1 ms
  bool held_after_valid_until = false;   // held() said true past valid_until()
  std::uint64_t old_token = 0, new_token = 0;
  bool healed = false;                          // FaultPlan::heal ran
  std::chrono::nanoseconds fault_to_healed{0};  // when it returned
  // Watched after lost() (FaultPlan::watch): held() true again, or
  // valid_until() moved -- a late renewal un-losing the lease.
  bool relived = false;
  std::chrono::nanoseconds watched_after_lost{0};

  // "fault->lost 1.234s fault->grant 1.250s overlap 0 ..." for the log.
  std::string summary() const;
};

struct FaultPlan {
  std::chrono::milliseconds ttl{1500};
  std::chrono::milliseconds fault_after{1000};  // from the grant
  std::function<void()> fault;                  // on the measuring thread
  // Optional: runs on a thread of its own `heal_after` after the fault,
  // while the contender races and held() is polled (a server restart).
  std::function<void()> heal;
  std::chrono::milliseconds heal_after{0};
  std::function<void()> after;  // optional: before the leases are released
  std::chrono::milliseconds limit{20000};  // from the fault
  // Keeps watching the holder until fault + watch, even once lost() fired
  // and the contender got the key: a lost lease must stay lost when held-back
  // replies arrive late.
  std::chrono::milliseconds watch{0};
};

// Holds `key` on `holder` ({ttl, auto_renew}), waits `fault_after`, calls
// `fault`, then polls held() and races try_acquire on `other` (every 2 ms)
// until both lost() fired and the contender got the key, or `limit` passes.
// `after` (optional) heals the fault before the lease is released.
FaultResult measure_fault(
    std::shared_ptr<LeaseBackend> holder, std::shared_ptr<LeaseBackend> other,
    const std::string& key, std::chrono::milliseconds ttl,
    std::chrono::milliseconds fault_after, const std::function<void()>& fault,
    const std::function<void()>& after = {},
    std::chrono::milliseconds limit = std::chrono::seconds(20));
FaultResult measure_fault(std::shared_ptr<LeaseBackend> holder,
                          std::shared_ptr<LeaseBackend> other,
                          const std::string& key, const FaultPlan& plan);

struct FaultExpect {
  bool grant = true;  // the contender gets the key within the limit
  // lost() before the contender's winning request. False only where the
  // service can forget a lease (a Redis restart without persistence): the
  // overlap is then measured, not bounded.
  bool no_overlap = true;
  // The new owner's token is larger than the old one's. False where the
  // service can forget its counter (the same restart).
  bool tokens_increase = true;
};

// Checks the guarantees every fault must keep: lost() fired and by
// valid_until() + 50 ms, before the contender's winning request was sent (no
// overlap), held() never true past valid_until() and within 1 ms for 99% of
// calls, a lost lease never held again, and a larger token for the new owner
// (when `expect_grant`). Returns "" or what broke.
std::string check_fault(const FaultResult& r, bool expect_grant = true);
// The same, with the overlap and token order checked only where `e` says.
std::string check_fault(const FaultResult& r, const FaultExpect& e);

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_LEASE_FAULTS_H_

// tests/lease/history.h
//
// Jepsen-style safety checks on one machine, with real processes
// (tl_lease_helper) against a backend named by a spec (backend_spec.h):
//   check_history     - W workers loop acquire -> fenced write -> release on
//   one
//                       key; no two holds overlap unless the earlier one had
//                       expired, tokens increase in grant order, the fenced
//                       resource accepted every write.
//   check_sigkill     - the holder is SIGKILLed; a waiter gets the key within
//                       a bound (TTL + slack, or at once when
//                       connection-bound).
//   check_sigstop     - the holder is SIGSTOPped past its TTL (auto-renew on);
//                       another owner takes the key and writes; after SIGCONT
//                       the old holder's lost() fires, its fenced write is
//                       rejected, extend and release say lost; lost() fires
//                       within 500 ms of SIGCONT, before it asks the service.
//   check_fault_history - W workers (threads, one backend object each, most
//                       behind a fault hook such as their own proxy) loop
//                       acquire (auto-renew, short ttl) -> fenced writes while
//                       held() -> release, while a schedule freezes, drops the
//                       replies of, or cuts one worker's network at a time;
//                       checks token order at the resource, disjoint unfenced
//                       windows, progress after every heal, no write after
//                       lost().
// Each returns "" on success, or what went wrong.
#ifndef TIERLOCK_TESTS_LEASE_HISTORY_H_
#define TIERLOCK_TESTS_LEASE_HISTORY_H_

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tierlock/lease.h"

namespace tierlock::testing {

std::string lease_helper_path();

std::string check_history(const std::string& spec, const std::string& key,
                          int workers, int iterations,
                          const std::filesystem::path& dir, bool fencing);

std::string check_sigkill(const std::string& spec, const std::string& key,
                          std::chrono::milliseconds ttl,
                          std::chrono::milliseconds bound);

// `figures` (optional) gets the timings: SIGSTOP to the other owner's
// grant, SIGCONT to the resumed holder's lost() (bounded: 500 ms), and the
// overlap (the paused holder cannot know; its fenced write is rejected).
std::string check_sigstop(const std::string& spec, const std::string& key,
                          std::chrono::milliseconds ttl,
                          const std::filesystem::path& dir,
                          std::string* figures = nullptr);

// One worker of check_fault_history: its own backend object (its own
// connections) and the faults that can be injected on its network path.
// Empty hooks: a direct worker, never faulted.
struct FaultHistoryWorker {
  std::shared_ptr<LeaseBackend> backend;
  std::function<void(bool)> freeze;    // freeze(true) ... freeze(false)
  std::function<void()> drop_replies;  // on the connections open now
  std::function<void()> cut;           // closes every open connection
};

struct FaultHistoryOptions {
  std::string key;
  std::chrono::milliseconds ttl{800};
  // How long the fault schedule runs; then every fault is healed and the run
  // ends once each faulted worker was granted the key again (at most
  // `recover` later).
  std::chrono::milliseconds run{8000};
  std::chrono::milliseconds recover{30000};
  // A freeze (and the wait after a drop or cut) lasts `fault_for`, then
  // `gap` of healthy network before the next fault. Zero: 1.5 ttl / 0.5 ttl.
  std::chrono::milliseconds fault_for{0};
  std::chrono::milliseconds gap{0};
  int min_grants = 10;  // progress: the key is granted at least this often
  std::filesystem::path dir;  // the fenced resource lives in dir/fence
};

// What one run saw (all times on this process's steady clock).
struct FaultHistoryResult {
  std::string problems;  // "" when every check passed
  int grants = 0, losses = 0, acquire_errors = 0;
  // Grants whose reply came back after their valid_until() (held up by a
  // fault): lost on arrival, never held, left out of check (b).
  int expired_on_arrival = 0;
  int freezes = 0, drops = 0, cuts = 0;
  int faults_on_holder = 0;  // injected while the faulted worker held the key
  int writes_accepted = 0, writes_rejected = 0;
  // Over every hold that ended in lost(): lost() -> the next owner's winning
  // request was sent (positive: the holder knew first). max() if none.
  std::chrono::nanoseconds min_loss_to_next_grant =
      std::chrono::nanoseconds::max();
  // Grants whose request was sent before the previous window ended and
  // whose reply came after it (see (b)): the service's order cannot be
  // told from here.
  int in_flight_at_end = 0;
  std::chrono::nanoseconds max_held_latency{0};  // slowest held() call
  std::string summary() const;
};

// Runs the workers on `options.key` with the fault schedule (one fault at a
// time, on the faultable worker that holds the key if any, else in turn;
// kinds in turn: freeze, drop replies, cut), then checks:
//  (a) the fenced resource accepted writes in strictly increasing token
//      order (one run of writes per token, never an older token after a
//      newer one);
//  (b) unfenced windows never overlap: a holder's window runs from its
//      winning request's send to lost() or to the start of its release()
//      (none if the grant came back already past its valid_until()); it
//      ends before the next owner's grant came back. The service granted
//      that request somewhere between its send and its reply, and a send
//      is no grant: the request may wait in the contender's own frozen
//      proxy or reconnect first (seen: 600 ms in flight). Grants whose
//      request was in flight across the end are counted (in_flight_at_end);
//      an overlap is reported when the reply came before the end;
//  (c) progress: at least min_grants grants, and every faulted worker is
//      granted the key again after its last heal (no wedged connection);
//  (d) no write starts after its holder's lost() fired.
FaultHistoryResult check_fault_history(std::vector<FaultHistoryWorker> workers,
                                       const FaultHistoryOptions& options);

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_LEASE_HISTORY_H_

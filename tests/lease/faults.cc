// tests/lease/faults.cc
#include "lease/faults.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <thread>

#include "absl/strings/str_format.h"

namespace tierlock::testing {

namespace {

using Clock = std::chrono::steady_clock;

double secs(std::chrono::nanoseconds d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

std::string FaultResult::summary() const {
  if (!error.empty()) return "error: " + error;
  const auto overlap = lost_before_grant.count() > 0
                           ? std::chrono::nanoseconds(0)
                           : -lost_before_grant;
  std::string s = absl::StrFormat(
      "fault->lost %.3fs, fault->grant %.3fs, overlap %.3fs, lost-valid_until "
      "%+.1fms, held() max %.3fms (%d of %d over 1 ms), tokens %d->%d, "
      "winning try in flight %.1fms",
      secs(fault_to_lost), secs(fault_to_grant), secs(overlap),
      secs(lost_after_valid_until) * 1000, secs(held_max) * 1000, held_slow,
      held_calls, old_token, new_token, secs(grant_in_flight) * 1000);
  if (healed)
    absl::StrAppendFormat(&s, ", healed at +%.3fs", secs(fault_to_healed));
  if (watched_after_lost.count() > 0) {
    absl::StrAppendFormat(&s, ", watched %.3fs after lost(): %s",
                          secs(watched_after_lost),
                          relived ? "HELD AGAIN" : "stayed lost");
  }
  return s;
}

FaultResult measure_fault(std::shared_ptr<LeaseBackend> holder,
                          std::shared_ptr<LeaseBackend> other,
                          const std::string& key, std::chrono::milliseconds ttl,
                          std::chrono::milliseconds fault_after,
                          const std::function<void()>& fault,
                          const std::function<void()>& after,
                          std::chrono::milliseconds limit) {
  return measure_fault(std::move(holder), std::move(other), key,
                       {.ttl = ttl,
                        .fault_after = fault_after,
                        .fault = fault,
                        .after = after,
                        .limit = limit});
}

FaultResult measure_fault(std::shared_ptr<LeaseBackend> holder,
                          std::shared_ptr<LeaseBackend> other,
                          const std::string& key, const FaultPlan& plan) {
  const std::chrono::milliseconds ttl = plan.ttl;
  FaultResult out;
  absl::StatusOr<LeaseLock> locks =
      LeaseLock::create(std::move(holder), {.ttl = ttl, .auto_renew = true});
  absl::StatusOr<LeaseLock> others =
      LeaseLock::create(std::move(other), {.ttl = ttl});
  if (!locks.ok() || !others.ok()) {
    out.error = "LeaseLock::create failed";
    return out;
  }
  absl::StatusOr<std::optional<Lease>> got = locks->try_acquire(key);
  if (!got.ok() || !got->has_value()) {
    out.error = got.ok() ? "key already held" : got.status().ToString();
    return out;
  }
  Lease& lease = **got;
  out.old_token = lease.token().value_or(0);
  std::atomic<std::int64_t> lost_at{0};
  std::stop_callback on_lost(lease.lost(), [&] {
    lost_at.store(Clock::now().time_since_epoch().count());
  });
  const Clock::time_point start = Clock::now();
  // Pacing to the fault time (a polled wait, not a sleep that makes
  // anything pass): renewals run meanwhile.
  while (Clock::now() < start + plan.fault_after) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (lease.lost().stop_requested()) {
    out.error = "lost before the fault";
    return out;
  }
  const Clock::time_point fault_at = Clock::now();
  plan.fault();
  std::atomic<std::int64_t> healed_at{0};
  std::thread healer;
  if (plan.heal) {
    healer = std::thread([&] {
      while (Clock::now() < fault_at + plan.heal_after) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));  // pacing
      }
      plan.heal();
      healed_at.store(Clock::now().time_since_epoch().count());
    });
  }

  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> grant_sent{0};
  std::atomic<std::int64_t> grant_received{0};
  std::optional<Lease> theirs;
  std::thread contender([&] {
    while (!stop.load()) {
      const Clock::time_point sent = Clock::now();
      absl::StatusOr<std::optional<Lease>> r = others->try_acquire(key);
      if (r.ok() && r->has_value()) {
        grant_received.store(Clock::now().time_since_epoch().count());
        grant_sent.store(sent.time_since_epoch().count());
        theirs = std::move(*r);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));  // poll pacing
    }
  });
  const Clock::time_point end = fault_at + plan.limit;
  std::optional<Clock::time_point> seen_lost, valid_until_at_loss;
  while (Clock::now() < end && (lost_at.load() == 0 || grant_sent.load() == 0 ||
                                Clock::now() < fault_at + plan.watch)) {
    const bool was_lost = lost_at.load() != 0;
    const Clock::time_point before = Clock::now();
    const bool held = lease.held();
    const Clock::time_point after_call = Clock::now();
    if (was_lost) {
      if (!seen_lost) {
        seen_lost = after_call;
        valid_until_at_loss = lease.valid_until();
      }
      if (held || lease.valid_until() != *valid_until_at_loss)
        out.relived = true;
      out.watched_after_lost = after_call - *seen_lost;
    }
    out.held_max =
        std::max<std::chrono::nanoseconds>(out.held_max, after_call - before);
    ++out.held_calls;
    if (after_call - before > std::chrono::milliseconds(1)) ++out.held_slow;
    if (held && before >= lease.valid_until())
      out.held_after_valid_until = true;
    std::this_thread::sleep_for(std::chrono::microseconds(500));  // poll pacing
  }
  stop.store(true);
  contender.join();
  if (healer.joinable()) healer.join();
  if (plan.after) plan.after();
  out.healed = healed_at.load() != 0;
  if (out.healed) {
    out.fault_to_healed =
        Clock::time_point(Clock::duration(healed_at.load())) - fault_at;
  }
  out.lost = lost_at.load() != 0;
  out.granted = grant_sent.load() != 0;
  const Clock::time_point lost_t{Clock::duration(lost_at.load())};
  const Clock::time_point grant_t{Clock::duration(grant_sent.load())};
  if (out.lost) {
    out.fault_to_lost = lost_t - fault_at;
    out.lost_after_valid_until = lost_t - lease.valid_until();
  }
  if (out.granted) {
    out.fault_to_grant = grant_t - fault_at;
    out.grant_in_flight =
        Clock::time_point(Clock::duration(grant_received.load())) - grant_t;
    out.new_token = theirs->token().value_or(0);
  }
  if (out.lost && out.granted) out.lost_before_grant = grant_t - lost_t;
  (void)lease.release();
  if (theirs) (void)theirs->release();
  return out;
}

std::string check_fault(const FaultResult& r, bool expect_grant) {
  return check_fault(r, FaultExpect{.grant = expect_grant});
}

std::string check_fault(const FaultResult& r, const FaultExpect& e) {
  std::string bad;
  auto fail = [&](const std::string& what) { bad += what + "; "; };
  if (!r.error.empty()) return r.error;
  if (!r.lost) fail("lost() never fired");
  if (r.lost && r.lost_after_valid_until > std::chrono::milliseconds(50)) {
    fail(absl::StrFormat("lost() %.1f ms after valid_until()",
                         secs(r.lost_after_valid_until) * 1000));
  }
  if (e.grant && !r.granted) fail("the contender never got the key");
  // The holder stops believing at valid_until() (held() turns false there,
  // checked below) or at an earlier lost(); lost()'s own lateness is the
  // timer's slack, bounded above. A grant before both is an overlap. The
  // service granted the winning try somewhere between its send and its
  // reply: an overlap is shown when the reply came before both. (Under
  // load a try can wait in the service, e.g. on the row the frozen holder's
  // connection last touched, from before lost() to after it; counting the
  // send alone then reported an overlap the service never made.)
  if (e.no_overlap && r.lost && r.granted) {
    const auto lost_before_reply = r.lost_before_grant + r.grant_in_flight;
    const auto valid_until_before_reply =
        lost_before_reply + r.lost_after_valid_until;
    if (std::max(lost_before_reply, valid_until_before_reply) <=
        std::chrono::nanoseconds(0)) {
      fail(
          "the contender was granted before lost() fired and before "
          "valid_until() (overlap)");
    }
  }
  if (r.held_after_valid_until) fail("held() was true past valid_until()");
  if (r.held_slow * 100 > r.held_calls)
    fail("held() took over 1 ms in more than 1% of calls");
  if (r.relived)
    fail("a lost lease was held again (held() true or valid_until() moved)");
  if (e.tokens_increase && r.granted && r.new_token != 0 &&
      r.new_token <= r.old_token) {
    fail("the new owner's token is not larger");
  }
  return bad.empty() ? "" : bad + r.summary();
}

}  // namespace tierlock::testing

// src/lease/lease.cc
//
// The lease front: LeaseLock (validation, waiting), Lease (extend, release,
// lost), owner ids. Backends live beside it in src/lease/.
#include "tierlock/lease.h"

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "api/wait_hook.h"
#include "base/error_kind.h"
#include "base/string_util.h"
#include "lease/async_acquire.h"
#include "lease/lease_state.h"
#include "tier/lock_id.h"
#include "tier/tier_hold.h"
#include "tier/tier_names.h"
#include "tierlock/text.h"

namespace tierlock {

namespace {

using internal::LeaseState;
using internal::SteadyTime;
using internal::to_absl;
using internal::UniqueLock;

class SteadyLeaseClock final : public LeaseClock {
 public:
  SteadyTime now() const override { return std::chrono::steady_clock::now(); }
  bool is_real() const override { return true; }
};

std::string quote_key(std::string_view key) {
  return absl::StrCat("'", absl::CHexEscape(to_absl(key)), "'");
}

std::string new_owner_id() {
  std::random_device rd;
  std::string out;
  for (int i = 0; i < 4; ++i) {
    absl::StrAppend(&out, absl::StrFormat("%08x", rd()));
  }
  return out;
}

absl::Status check_ttl(std::chrono::milliseconds ttl) {
  if (ttl < kMinLeaseTtl || ttl > kMaxLeaseTtl) {
    return absl::InvalidArgumentError(absl::StrCat(
        "lease ttl ", ttl.count(), " ms: must be between ",
        kMinLeaseTtl.count(), " ms and ", kMaxLeaseTtl.count(), " ms"));
  }
  return absl::OkStatus();
}

// Names the holder of `key` on `backend` for a contention message, or
// "another owner" when the backend cannot say (or fails to: the message
// is about the acquire, not this look-up).
std::string holder_text_of(LeaseBackend& backend, std::string_view key) {
  absl::StatusOr<std::optional<Holder>> h = backend.holder_of(key);
  if (!h.ok() || !h->has_value()) return "another owner";
  return describe_lease_holder(**h);
}

std::string seconds(std::chrono::nanoseconds d) { return format_duration(d); }

// Sleeps until `until` or a stop request, whichever is first. Returns false if
// stopped.
bool sleep_until(SteadyTime until, const std::stop_token& stop) {
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock<std::mutex> lk(m);
  return !cv.wait_until(lk, stop, until, [] { return false; }) &&
         !stop.stop_requested();
}

std::chrono::nanoseconds jittered(std::chrono::nanoseconds step) {
  thread_local std::minstd_rand rng(std::random_device{}());
  std::uniform_int_distribution<std::int64_t> dist(step.count() / 2,
                                                   step.count());
  return std::chrono::nanoseconds(dist(rng));
}

}  // namespace

LeaseClock& steady_lease_clock() {
  static SteadyLeaseClock* clock = new SteadyLeaseClock;
  return *clock;
}

std::chrono::milliseconds lease_drift_margin(std::chrono::milliseconds ttl) {
  return std::chrono::milliseconds((ttl.count() + 99) / 100 + 2);
}

std::chrono::milliseconds LeaseBackend::clock_drift_margin(
    std::chrono::milliseconds ttl) const {
  return lease_drift_margin(ttl);
}

absl::Status LeaseBackend::check_key(std::string_view) const {
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LeaseSession>> LeaseBackend::wait_acquire(
    const LeaseRequest&, SteadyTime, const std::stop_token&) {
  return absl::UnimplementedError("no wait primitive");
}

absl::StatusOr<std::optional<Holder>> LeaseBackend::holder_of(
    std::string_view) {
  return absl::UnimplementedError(absl::StrCat("backend ", to_absl(name()),
                                               " cannot tell who holds a key"));
}

absl::StatusOr<std::vector<Holder>> LeaseBackend::waiters_of(std::string_view) {
  return absl::UnimplementedError(absl::StrCat(
      "backend ", to_absl(name()), " has no queue of waiters it can list"));
}

std::string describe_lease_holder(const Holder& h) {
  std::string out;
  auto sep = [&] {
    if (!out.empty()) out += ' ';
  };
  if (h.pid) absl::StrAppend(&out, "pid ", *h.pid);
  if (h.program) {
    sep();
    absl::StrAppend(&out, "'", escape_text(*h.program), "'");
  }
  if (h.host) {
    sep();
    absl::StrAppend(&out, "on ", escape_text(*h.host));
  }
  if (h.since) {
    sep();
    absl::StrAppend(
        &out, "since ",
        absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromChrono(*h.since),
                         absl::UTCTimeZone()));
  }
  if (out.empty()) {
    out = h.owner_id ? absl::StrCat("owner ", escape_text(*h.owner_id))
                     : std::string("an unknown owner");
  }
  if (h.token) absl::StrAppend(&out, ", token ", *h.token);
  return out;
}

absl::Status validate_lease_key(std::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("lease key '': empty");
  if (key.size() > kMaxLeaseKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "lease key ", quote_key(key.substr(0, 40)), "...: ", key.size(),
        " bytes, more than ", kMaxLeaseKeyBytes));
  }
  for (std::size_t i = 0; i < key.size(); ++i) {
    const auto c = static_cast<unsigned char>(key[i]);
    if (c < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrFormat("lease key %s: control character 0x%02x at byte %d",
                          quote_key(key), c, i));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- Lease

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (state_) (void)release();
    state_ = std::move(other.state_);
  }
  return *this;
}

Lease::~Lease() {
  if (state_) (void)release();
}

const std::string& Lease::key() const { return state_->key; }
std::optional<std::uint64_t> Lease::token() const { return state_->token; }
const std::string& Lease::owner_id() const { return state_->owner_id; }

SteadyTime Lease::valid_until() const {
  if (!state_->has_ttl) return SteadyTime::max();
  return state_->valid_until();
}

std::stop_token Lease::lost() const { return state_->lost_source.get_token(); }

bool Lease::held() const {
  if (!state_ || state_->is_lost() || state_->released_flag.load())
    return false;
  // Past valid_until() the lease is lost even if the timer has not fired
  // lost() yet (it does within its scheduling slack).
  return !state_->has_ttl || state_->clock->now() < state_->valid_until();
}

absl::StatusOr<bool> Lease::extend(std::chrono::milliseconds ttl) {
  if (!state_) return absl::FailedPreconditionError("extend: moved-from lease");
  LeaseState& s = *state_;
  if (!s.has_ttl) {
    return absl::UnimplementedError(absl::StrCat(
        "extend lease ", quote_key(s.key), ": backend ",
        to_absl(s.backend->name()),
        " has no ttl (the lease lasts as long as its connection)"));
  }
  if (absl::Status st = check_ttl(ttl); !st.ok()) return st;
  bool lost = false;
  {
    UniqueLock lk(s.mu);
    if (s.released) {
      return absl::FailedPreconditionError(absl::StrCat(
          "extend lease ", quote_key(s.key), ": already released"));
    }
    if (s.is_lost() || s.clock->now() >= s.valid_until()) {
      lost = true;
    } else {
      const SteadyTime sent = s.clock->now();
      // Bounded by the current validity: past it the lease is lost, and
      // a renewal that lands later must not revive it.
      absl::StatusOr<bool> r = s.session->extend_before(ttl, s.valid_until());
      if (!r.ok()) {
        return absl::Status(r.status().code(),
                            absl::StrCat("extend lease ", quote_key(s.key),
                                         " on ", to_absl(s.backend->name()),
                                         ": ", r.status().message()));
      }
      if (*r && s.commit_renewal(sent, ttl)) {
        s.ttl = ttl;
      } else {
        lost = true;
      }
    }
  }
  // Outside s.mu: lost() callbacks run here and may call into the lease.
  if (lost) {
    s.fire_lost();
    return false;
  }
  internal::LeaseScheduler::instance().poke();
  return true;
}

absl::StatusOr<bool> Lease::release() {
  if (!state_) return false;
  LeaseState& s = *state_;
  internal::LeaseScheduler::instance().remove(&s);
  UniqueLock lk(s.mu);
  if (s.released) return false;
  s.released = true;
  s.released_flag.store(true);
  if (s.tier_hold.context != nullptr) {
    internal::TierHold hold{s.tier_hold.context, s.tier_hold.hold_id};
    internal::forget_tier_hold(hold);
    s.tier_hold.context = nullptr;
  }
  const bool was_lost =
      s.is_lost() || (s.has_ttl && s.clock->now() >= s.valid_until());
  // Compare-and-delete even when lost locally: frees the key early if the
  // service still has it as ours, never touches another owner's.
  absl::StatusOr<bool> r = s.session->release();
  s.session.reset();
  if (!r.ok()) {
    return absl::Status(
        r.status().code(),
        absl::StrCat("release lease ", quote_key(s.key), " on ",
                     to_absl(s.backend->name()), ": ", r.status().message()));
  }
  return *r && !was_lost;
}

// ---------------------------------------------------------------- LeaseLock

absl::StatusOr<LeaseLock> LeaseLock::create(
    std::shared_ptr<LeaseBackend> backend, LeaseOptions options) {
  if (!backend) return absl::InvalidArgumentError("LeaseLock: null backend");
  const LeaseCapabilities caps = backend->capabilities();
  auto lacks = [&](std::string_view what) {
    return absl::UnimplementedError(absl::StrCat("LeaseLock: backend ",
                                                 to_absl(backend->name()),
                                                 " has no ", to_absl(what)));
  };
  std::chrono::milliseconds ttl{0};
  if (options.ttl) {
    if (!caps.ttl) return lacks("ttl (leases last as long as the connection)");
    if (absl::Status s = check_ttl(*options.ttl); !s.ok()) return s;
    ttl = *options.ttl;
  } else if (caps.ttl) {
    ttl = std::chrono::seconds(30);
  }
  if (options.auto_renew && !caps.ttl) return lacks("ttl, so no auto-renew");
  if (options.require_fencing && !caps.fencing) return lacks("fencing tokens");
  if (options.require_failover_safety && !caps.survives_failover) {
    return lacks("failover safety (a failover can grant a key twice)");
  }
  if (!options.metadata.empty() && !caps.metadata) {
    return lacks("metadata storage");
  }
  if (options.metadata.size() > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("LeaseLock: metadata is ",
                                                   options.metadata.size(),
                                                   " bytes, more than 4096"));
  }
  // The name is a view: keep a copy that outlives the caller's string (and
  // every hold recorded under it).
  if (options.tier) {
    options.tier->name = internal::intern_tier_name(options.tier->name);
  }
  LeaseLock lock(std::move(backend), std::move(options));
  lock.ttl_ = ttl;
  return lock;
}

absl::StatusOr<LeaseRequest> LeaseLock::make_request(
    std::string_view key) const {
  if (absl::Status s = validate_lease_key(key); !s.ok()) return s;
  if (absl::Status s = backend_->check_key(key); !s.ok()) return s;
  LeaseRequest r;
  r.key = std::string(key);
  r.owner_id = new_owner_id();
  r.ttl = ttl_;
  r.metadata = options_.metadata;
  return r;
}

Lease LeaseLock::make_lease(const LeaseRequest& request,
                            std::unique_ptr<LeaseSession> session,
                            SteadyTime sent, TierHold tier_hold) const {
  auto state = std::make_shared<Lease::State>();
  state->tier_hold = std::move(tier_hold);
  state->backend = backend_;
  state->clock = &backend_->clock();
  state->key = request.key;
  state->owner_id = request.owner_id;
  state->token = session->token();
  state->has_ttl = backend_->capabilities().ttl;
  state->auto_renew = options_.auto_renew;
  state->ttl = ttl_;
  state->watch_fd = session->watch_fd();
  if (const std::optional<SteadyTime> start = session->validity_start()) {
    sent = std::max(sent, *start);
  }
  const bool watched = state->watch_fd >= 0;
  {
    UniqueLock lk(state->mu);
    state->session = std::move(session);
  }
  if (state->has_ttl) state->set_valid_from(sent, ttl_);
  if (state->has_ttl || watched) {
    internal::LeaseScheduler::instance().add(state);
  }
  return Lease(std::move(state));
}

absl::StatusOr<LeaseLock::TierHold> LeaseLock::check_tier(
    std::string_view key, Mode mode, bool try_only,
    SourceLocation where) const {
  TierHold hold;
  if (!options_.tier || !internal::tier_checks_on()) return hold;
  if (absl::Status s = validate_lease_key(key); !s.ok()) return s;
  hold.name = std::make_shared<const internal::LeaseName>(
      internal::LeaseName{std::string(backend_->name()), std::string(key)});
  absl::StatusOr<internal::TierHold> checked =
      internal::check_tier_hold(internal::LockId::lease(*hold.name),
                                *options_.tier, mode, try_only, where);
  if (!checked.ok()) return checked.status();
  hold.context = checked->context;
  hold.hold_id = checked->hold_id;
  return hold;
}

namespace {

// Forgets a tier hold recorded for an acquire that then held nothing.
void forget_unused(internal::LeaseTierHold& hold) {
  internal::TierHold checked{hold.context, hold.hold_id};
  internal::forget_tier_hold(checked);
  hold.context = nullptr;
}

}  // namespace

absl::StatusOr<std::optional<Lease>> LeaseLock::try_acquire(
    std::string_view key, SourceLocation where) {
  absl::StatusOr<TierHold> hold =
      check_tier(key, Mode::kExclusive, /*try_only=*/true, where);
  if (!hold.ok()) return hold.status();
  absl::StatusOr<std::optional<Lease>> got = try_acquire_checked(key, *hold);
  if (!got.ok() || !got->has_value()) forget_unused(*hold);
  return got;
}

absl::StatusOr<Lease> LeaseLock::acquire(std::string_view key,
                                         AcquireOptions options,
                                         SourceLocation where) {
  // Checked before anything waits, as for directory locks (and before the
  // option checks below: a refused order is the caller's bug either way).
  absl::StatusOr<TierHold> hold =
      check_tier(key, options.mode, /*try_only=*/false, where);
  if (!hold.ok()) return hold.status();
  absl::StatusOr<Lease> got = acquire_checked(key, std::move(options), *hold);
  if (!got.ok()) forget_unused(*hold);
  return got;
}

absl::StatusOr<std::optional<Lease>> LeaseLock::try_acquire_checked(
    std::string_view key, TierHold& tier_hold) {
  absl::StatusOr<LeaseRequest> req = make_request(key);
  if (!req.ok()) return req.status();
  const SteadyTime sent = backend_->clock().now();
  absl::StatusOr<std::unique_ptr<LeaseSession>> s = backend_->try_acquire(*req);
  if (!s.ok()) {
    return absl::Status(
        s.status().code(),
        absl::StrCat("acquire lease ", quote_key(key), " on ",
                     to_absl(backend_->name()), ": ", s.status().message()));
  }
  if (!*s) return std::optional<Lease>();
  return std::optional<Lease>(make_lease(*req, std::move(*s), sent,
                                         std::exchange(tier_hold, TierHold{})));
}

absl::StatusOr<Lease> LeaseLock::acquire_checked(std::string_view key,
                                                 AcquireOptions options,
                                                 TierHold& tier_hold) {
  const SteadyTime start = std::chrono::steady_clock::now();
  if (options.pool != nullptr || options.executor != nullptr) {
    return internal::with_kind(absl::InvalidArgumentError(absl::StrCat(
                                   "acquire lease ", quote_key(key),
                                   ": AcquireOptions::pool/executor are for "
                                   "DirLock's async acquires")),
                               ErrorKind::kInvalidOption);
  }
  if (options.mode == Mode::kShared && !backend_->capabilities().shared) {
    return absl::UnimplementedError(
        absl::StrCat("acquire lease ", quote_key(key), ": backend ",
                     to_absl(backend_->name()), " has no shared leases"));
  }
  absl::StatusOr<LeaseRequest> req = make_request(key);
  if (!req.ok()) return req.status();
  auto fail = [&](const absl::Status& s) {
    return absl::Status(
        s.code(), absl::StrCat("acquire lease ", quote_key(key), " on ",
                               to_absl(backend_->name()), ": ", s.message()));
  };
  auto cancelled = [&] {
    return internal::with_kind(
        absl::CancelledError(
            absl::StrCat("acquire lease ", quote_key(key), " on ",
                         to_absl(backend_->name()), ": cancelled after ",
                         seconds(std::chrono::steady_clock::now() - start))),
        ErrorKind::kCancelled);
  };
  auto holder_text = [&](std::string_view k) {
    return holder_text_of(*backend_, k);
  };
  auto timed_out = [&] {
    return internal::with_kind(
        absl::DeadlineExceededError(
            absl::StrCat("acquire lease ", quote_key(key), " on ",
                         to_absl(backend_->name()), ": timed out after ",
                         seconds(std::chrono::steady_clock::now() - start),
                         " (held by ", holder_text(key), ")")),
        ErrorKind::kTimeout);
  };
  if (options.stop.stop_requested()) return cancelled();
  const bool one_try =
      options.timeout && *options.timeout <= std::chrono::nanoseconds::zero();
  const SteadyTime deadline = options.timeout && !one_try
                                  ? start + *options.timeout
                                  : SteadyTime::max();

  // The wait hook: armed once a first try finds the key held (a lease that
  // is free at once never arms it), finished before this returns.
  std::shared_ptr<internal::WaitHook> hook;
  if (options.on_wait && !one_try) [[unlikely]] {
    hook =
        internal::WaitHook::make(options, WorkerPool::global().state_, start);
  }
  absl::Cleanup finish_hook = [&hook] {
    if (hook != nullptr) hook->finish();
  };
  if (hook != nullptr) {
    const SteadyTime sent = backend_->clock().now();
    absl::StatusOr<std::unique_ptr<LeaseSession>> s =
        backend_->try_acquire(*req);
    if (!s.ok()) return fail(s.status());
    if (*s) {
      return make_lease(*req, std::move(*s), sent,
                        std::exchange(tier_hold, TierHold{}));
    }
    hook->waiting(
        absl::StrCat("lease:", to_absl(backend_->name()), "/", to_absl(key)),
        [backend = backend_,
         k = std::string(key)]() -> absl::StatusOr<std::vector<Holder>> {
          absl::StatusOr<std::optional<Holder>> h = backend->holder_of(k);
          if (!h.ok()) return h.status();
          std::vector<Holder> holders;
          if (h->has_value()) holders.push_back(**std::move(h));
          return holders;
        });
  }
  if (!one_try) {
    const SteadyTime sent = backend_->clock().now();
    absl::StatusOr<std::unique_ptr<LeaseSession>> s =
        backend_->wait_acquire(*req, deadline, options.stop);
    if (s.ok()) {
      if (*s)
        return make_lease(*req, std::move(*s), sent,
                          std::exchange(tier_hold, TierHold{}));
      return timed_out();
    }
    if (s.status().code() == absl::StatusCode::kCancelled) return cancelled();
    if (s.status().code() != absl::StatusCode::kUnimplemented) {
      return fail(s.status());
    }
  }
  std::chrono::nanoseconds step = std::chrono::milliseconds(1);
  for (;;) {
    const SteadyTime sent = backend_->clock().now();
    absl::StatusOr<std::unique_ptr<LeaseSession>> s =
        backend_->try_acquire(*req);
    if (!s.ok()) return fail(s.status());
    if (*s)
      return make_lease(*req, std::move(*s), sent,
                        std::exchange(tier_hold, TierHold{}));
    const SteadyTime now = std::chrono::steady_clock::now();
    if (one_try || now >= deadline) return timed_out();
    const SteadyTime until = std::min(deadline, now + jittered(step));
    if (!sleep_until(until, options.stop)) return cancelled();
    step = std::min<std::chrono::nanoseconds>(step * 2,
                                              std::chrono::milliseconds(100));
  }
}

absl::StatusOr<std::optional<Holder>> LeaseLock::holder(
    std::string_view key) const {
  if (absl::Status s = validate_lease_key(key); !s.ok()) return s;
  if (absl::Status s = backend_->check_key(key); !s.ok()) return s;
  absl::StatusOr<std::optional<Holder>> h = backend_->holder_of(key);
  if (!h.ok()) {
    return absl::Status(
        h.status().code(),
        absl::StrCat("holder of lease ", quote_key(key), " on ",
                     to_absl(backend_->name()), ": ", h.status().message()));
  }
  return h;
}

absl::StatusOr<std::vector<Holder>> LeaseLock::waiters(
    std::string_view key) const {
  if (absl::Status s = validate_lease_key(key); !s.ok()) return s;
  if (absl::Status s = backend_->check_key(key); !s.ok()) return s;
  absl::StatusOr<std::vector<Holder>> w = backend_->waiters_of(key);
  if (!w.ok()) {
    return absl::Status(
        w.status().code(),
        absl::StrCat("waiters of lease ", quote_key(key), " on ",
                     to_absl(backend_->name()), ": ", w.status().message()));
  }
  return w;
}

void LeaseLock::acquire_async(
    std::string_view key, AcquireOptions options,
    absl::AnyInvocable<void(absl::StatusOr<Lease>) &&> done,
    SourceLocation where) {
  WorkerPool& pool =
      options.pool != nullptr ? *options.pool : WorkerPool::global();
  auto a = std::make_unique<internal::AsyncLeaseAcquire>();
  a->start = std::chrono::steady_clock::now();
  a->backend = backend_;
  a->what = absl::StrCat("acquire lease ", quote_key(key), " on ",
                         to_absl(backend_->name()));
  a->pool = &pool;
  a->executor = options.executor;
  a->done = std::move(done);
  // Checked against the caller's context now, as DirLock's async acquires.
  absl::StatusOr<TierHold> hold =
      check_tier(key, options.mode, /*try_only=*/false, where);
  absl::Status refused = hold.status();
  absl::StatusOr<LeaseRequest> req;
  if (refused.ok() && options.mode == Mode::kShared &&
      !backend_->capabilities().shared) {
    refused = absl::UnimplementedError(
        absl::StrCat("acquire lease ", quote_key(key), ": backend ",
                     to_absl(backend_->name()), " has no shared leases"));
  }
  if (refused.ok() && options.on_wait) {
    // Refused rather than ignored: a caller relying on the hook would
    // otherwise wait without being told.
    refused = internal::with_kind(
        absl::UnimplementedError(absl::StrCat(
            "acquire lease ", quote_key(key),
            ": AcquireOptions::on_wait is not supported by async lease "
            "acquires yet (use acquire(), or DirLock's acquire_async)")),
        ErrorKind::kInvalidOption);
  }
  if (refused.ok()) {
    req = make_request(key);
    refused = req.status();
  }
  if (refused.ok() && options.stop.stop_requested()) {
    refused = absl::CancelledError(absl::StrCat(
        a->what, ": cancelled after ", seconds(std::chrono::nanoseconds(0))));
  }
  if (!refused.ok()) {
    if (hold.ok()) forget_unused(*hold);
    // Delivered like every other outcome: on the pool, never inline.
    pool.execute([done = std::move(a->done), st = std::move(refused),
                  executor = options.executor]() mutable {
      if (executor == nullptr) {
        std::move(done)(st);
        return;
      }
      executor->execute(
          [done = std::move(done), st]() mutable { std::move(done)(st); });
    });
    return;
  }
  const bool one_try =
      options.timeout && *options.timeout <= std::chrono::nanoseconds::zero();
  a->one_try = one_try;
  a->deadline = options.timeout && !one_try ? a->start + *options.timeout
                                            : SteadyTime::max();
  a->stop = std::move(options.stop);
  a->request = *req;
  auto tier_hold = std::make_shared<TierHold>(*std::move(hold));
  a->make_lease = [lock = *this, request = *std::move(req), tier_hold](
                      std::unique_ptr<LeaseSession> session, SteadyTime sent) {
    return lock.make_lease(request, std::move(session), sent,
                           std::exchange(*tier_hold, {}));
  };
  a->forget = [tier_hold] { forget_unused(*tier_hold); };
  internal::start_async_acquire(std::move(a));
}

std::future<absl::StatusOr<Lease>> LeaseLock::acquire_async(
    std::string_view key, AcquireOptions options, SourceLocation where) {
  // The promise owns the result once set: if the future is gone, the Lease
  // dies with the shared state and is released.
  auto promise = std::make_shared<std::promise<absl::StatusOr<Lease>>>();
  std::future<absl::StatusOr<Lease>> future = promise->get_future();
  options.executor = nullptr;  // set_value is cheap: complete on the pool
  acquire_async(
      key, std::move(options),
      [promise](absl::StatusOr<Lease> result) mutable {
        promise->set_value(std::move(result));
      },
      where);
  return future;
}

}  // namespace tierlock

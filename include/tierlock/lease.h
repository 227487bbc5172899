// tierlock/lease.h
//
// Defines leases: locks held across machines (or processes) through a shared
// service, valid for a time-to-live unless renewed, with fencing tokens:
//   LeaseCapabilities - what a backend can do (ttl, fencing, shared, failover,
//   metadata). LeaseClock        - the clock leases are timed on (steady_clock,
//   or a manual one in tests). LeaseRequest      - what LeaseLock asks a
//   backend for (key, owner, ttl, metadata). LeaseSession      - a backend's
//   handle on one granted lease (backend SPI). LeaseBackend      - the service:
//   try once, optionally wait, report capabilities (SPI). LeaseOptions      -
//   per-LeaseLock options: ttl, auto-renew, required capabilities, tier. Lease
//   - one held lease: token, owner id, valid_until, lost(), extend, release.
//   LeaseLock         - the front: try_acquire / acquire / with_lease over a
//   backend. redact_url        - a backend URL or connection string without its
//   password.
//
// Backends: lease_memory.h (in-process, injectable clock), lease_postgres.h,
// lease_sqlite.h, lease_redis.h, lease_etcd.h. What each guarantees is in
// docs/leases.md.
#ifndef TIERLOCK_LEASE_H_
#define TIERLOCK_LEASE_H_

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tierlock/acquire_options.h"
#include "tierlock/executor.h"
#include "tierlock/holder.h"
#include "tierlock/mode.h"
#include "tierlock/source_location.h"
#include "tierlock/tier.h"

namespace tierlock {

// LeaseCapabilities
//
// What a backend can do. LeaseLock refuses (kUnimplemented, naming the
// backend and the capability) to use one a backend lacks; nothing is ever
// silently ignored.
struct LeaseCapabilities {
  // Leases expire unless renewed: LeaseOptions::ttl, Lease::extend and
  // auto-renew work. Without it a lease lasts as long as its connection.
  bool ttl = false;
  // Lease::token() has a value: strictly increasing per key across grants.
  bool fencing = false;
  // Several holders at once (Mode::kShared). No backend offers it yet.
  bool shared = false;
  // A grant survives the failover of the service to a replica.
  bool survives_failover = false;
  // LeaseOptions::metadata is stored with the lease (and can be read back).
  bool metadata = false;
};

// LeaseClock
//
// The clock TTLs are measured on, in the steady_clock domain. The default is
// std::chrono::steady_clock itself; tests inject a ManualLeaseClock
// (lease_memory.h) to drive expiry without waiting. Thread-safe.
class LeaseClock {
 public:
  virtual ~LeaseClock() = default;
  // Returns the current time. Never blocks.
  virtual std::chrono::steady_clock::time_point now() const = 0;
  // Returns true if now() follows the real steady_clock (timers then sleep
  // until a deadline); a manual clock returns false and wakes the renewer
  // itself when it is moved.
  virtual bool is_real() const = 0;
};

// Returns the process-wide real clock (std::chrono::steady_clock).
LeaseClock& steady_lease_clock();

// LeaseRequest
//
// One acquire, as LeaseLock passes it to a backend. The key has been
// validated (validate_lease_key), the ttl is within bounds for a ttl backend
// and zero for one without ttl.
struct LeaseRequest {
  std::string key;
  std::string owner_id;  // 32 lowercase hex digits, random per lease
  std::chrono::milliseconds ttl{0};
  std::string metadata;  // empty unless the backend has the capability
};

// LeaseSession
//
// A backend's handle on one granted lease. LeaseLock serialises every call on
// one session (never two at once) and calls release() at most once; the
// session's destructor must not contact the service (release() was called,
// or the process gives the lease up to its TTL / connection close).
class LeaseSession {
 public:
  virtual ~LeaseSession() = default;
  // Returns the fencing token, or nullopt for a backend without fencing.
  virtual std::optional<std::uint64_t> token() const = 0;
  // Extends the lease to `ttl` from now, if this owner still holds it.
  // Returns false if it does not (expired and maybe taken by another owner);
  // an error if the service could not be asked. Blocks on the service.
  virtual absl::StatusOr<bool> extend(std::chrono::milliseconds ttl) = 0;
  // Deletes the lease if (and only if) this owner still holds it (compare and
  // delete). Returns true if it was held, false if it was not any more.
  // Blocks on the service.
  virtual absl::StatusOr<bool> release() = 0;
  // Connection-bound leases: a descriptor that becomes readable when the
  // connection may have dropped, or -1. Watched by the shared renewer thread.
  virtual int watch_fd() const { return -1; }
  // Called (serialised with the other calls) when watch_fd() is readable;
  // returns false if the lease is gone (the connection dropped). Must not
  // block on the service.
  virtual bool check_connection() { return true; }
  // Returns when the validity of the grant starts, if later than when the
  // acquire was sent: a backend that queued and kept its grant alive while
  // it waited (etcd) returns when its last renewal was sent. nullopt (the
  // default): from when the acquire was sent. Never blocks.
  virtual std::optional<std::chrono::steady_clock::time_point> validity_start()
      const {
    return std::nullopt;
  }
  // Like extend(), with every network wait bounded by `deadline` as well as
  // the backend's io_timeout: past it, gives up with kDeadlineExceeded (or
  // kUnavailable) and leaves the connection to be replaced. LeaseLock passes
  // the lease's valid_until(), so a frozen connection cannot keep a renewal
  // (and the session, whose calls are serialised) busy past the point where
  // the lease is lost anyway. Blocks on the service until `deadline` at the
  // latest. The default calls extend() (a backend whose waits are short, or
  // that cannot bound them).
  virtual absl::StatusOr<bool> extend_before(
      std::chrono::milliseconds ttl,
      std::chrono::steady_clock::time_point deadline) {
    (void)deadline;
    return extend(ttl);
  }
};

// LeaseBackend
//
// A lease service. Backends are shared (std::shared_ptr) by LeaseLocks and by
// the sessions they grant, which keep it alive. Thread-safe: all members may
// be called concurrently.
class LeaseBackend {
 public:
  virtual ~LeaseBackend() = default;
  // Returns a short name for messages ("memory", "postgres-advisory", ...).
  virtual std::string_view name() const = 0;
  // Returns what this backend can do.
  virtual LeaseCapabilities capabilities() const = 0;
  // Returns the clock leases of this backend are timed on.
  virtual LeaseClock& clock() const { return steady_lease_clock(); }
  // Returns how much earlier than (request sent) + ttl a lease's
  // valid_until() is placed, to cover the service's clock running faster
  // than this one. lease_drift_margin(ttl) by default (1% of the ttl plus
  // 2 ms, as Redlock clients allow); a backend on this process's own clock
  // (MemoryLeaseBackend) returns zero. Never blocks.
  virtual std::chrono::milliseconds clock_drift_margin(
      std::chrono::milliseconds ttl) const;
  // Checks backend-specific key rules beyond validate_lease_key. OK by default.
  virtual absl::Status check_key(std::string_view key) const;
  // Tries once to acquire. Returns the session, or null if another owner
  // holds the key (contention: an outcome, not an error). An error means the
  // service failed and, as far as the backend can make sure, nothing is held.
  // Blocks on the service only.
  virtual absl::StatusOr<std::unique_ptr<LeaseSession>> try_acquire(
      const LeaseRequest& request) = 0;
  // Waits to acquire with the service's own wait primitive, until granted
  // (the session), `deadline` passes (null) or `stop` is requested
  // (kCancelled); nothing is held after null or an error. A backend without a
  // primitive returns kUnimplemented (the default) and LeaseLock polls
  // try_acquire with jittered exponential backoff instead.
  virtual absl::StatusOr<std::unique_ptr<LeaseSession>> wait_acquire(
      const LeaseRequest& request,
      std::chrono::steady_clock::time_point deadline,
      const std::stop_token& stop);
  // Returns who holds `key` now as the service records it (owner_id, token,
  // and the grant's host, pid, program and since where the backend stores
  // them; what it does not know stays empty), or nullopt if the key is free
  // (or its lease expired). Text fields are the exact bytes the holder
  // stored: escape them (escape_text) before printing. kUnimplemented (the
  // default) when the backend cannot tell; an error when the service
  // failed. Blocks on the service only (one round trip). Reads only: never
  // changes a lease or a queue.
  virtual absl::StatusOr<std::optional<Holder>> holder_of(std::string_view key);
  // Returns the live waiters queued for `key`, first come first: only their
  // owner ids are known (each waiter's LeaseRequest::owner_id, which becomes
  // its Lease::owner_id() when granted). Empty: nobody is queued.
  // kUnimplemented (the default) for a backend without a queue in the
  // service (memory, PostgreSQL advisory mode) or that cannot list it
  // (etcd). Blocks on the service only (one round trip); reads only.
  virtual absl::StatusOr<std::vector<Holder>> waiters_of(std::string_view key);
};

// Checks a lease key: non-empty, at most kMaxLeaseKeyBytes bytes, no control
// characters (bytes below 0x20, and 0x7f). kInvalidArgument naming the key
// (escaped) and the rule otherwise.
inline constexpr std::size_t kMaxLeaseKeyBytes = 256;
absl::Status validate_lease_key(std::string_view key);

// Returns the default clock-drift margin for `ttl`: ttl/100 (rounded up) plus
// 2 ms. See LeaseBackend::clock_drift_margin and docs/leases.md.
std::chrono::milliseconds lease_drift_margin(std::chrono::milliseconds ttl);

// Bounds on a TTL: kInvalidArgument outside them.
inline constexpr std::chrono::milliseconds kMinLeaseTtl{10};
inline constexpr std::chrono::milliseconds kMaxLeaseTtl{
    std::chrono::hours(7 * 24)};

// LeaseOptions
//
// Options for a LeaseLock. Checked against the backend by LeaseLock::create.
struct LeaseOptions {
  // How long a grant (and each renewal) lasts. nullopt: 30 s on a backend with
  // the ttl capability, none otherwise. Setting it on a backend without ttl is
  // kUnimplemented; outside [kMinLeaseTtl, kMaxLeaseTtl] kInvalidArgument.
  std::optional<std::chrono::milliseconds> ttl;
  // Renews each lease every ttl/3, each renewal on a worker thread of its
  // own with its network waits capped by the lease's remaining validity; a
  // failed renewal fires Lease::lost(). Needs the ttl capability.
  bool auto_renew = false;
  // Refuse to build (kUnimplemented) unless the backend gives fencing tokens
  // / survives failover.
  bool require_fencing = false;
  bool require_failover_safety = false;
  // Stored with each lease (backends with the metadata capability only;
  // non-empty elsewhere is kUnimplemented). At most 4096 bytes.
  std::string metadata;
  // The lease's tier: acquires are checked against the calling LockContext
  // like directory locks' (tierlock/tier.h), and a granted lease is held in
  // that context until release() (or destruction), also when lost. Its name
  // in reports is "lease:BACKEND/KEY". Leases take part in declared tiers
  // only, not in the learned nesting order of debug builds.
  std::optional<Tier> tier;
};

// Lease
//
// One held lease. Move-only; destroying (or assigning over) a held lease
// releases it, blocking on the service like release() (errors are ignored
// there: call release() to see them). A Lease is valid until
// valid_until() unless renewed; after that, or when lost() fires, another
// owner may hold the key: guard writes to the protected resource with
// token() (a fenced resource rejects tokens below the highest it has seen).
//
// Thread-safety: members may be called concurrently (extend() and release()
// serialise on the lease); the timer thread and renewal workers use it
// concurrently.
// Blocking: extend() and release() block on the service (extend() at most
// until valid_until(); release() may also wait for a renewal in flight, at
// most until valid_until()); the rest never block and take no lock that is
// held across I/O.
// Deadline: lost() fires at valid_until() plus scheduling slack (a few ms)
// whatever the network does: one timer thread, which never waits on a
// service, keeps every lease's deadline. See docs/leases.md for when the
// holder learns of a loss relative to another owner's grant.
class Lease {
 public:
  Lease(Lease&& other) noexcept = default;
  Lease& operator=(Lease&& other) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease();

  // Returns the key.
  const std::string& key() const;
  // Returns the fencing token: strictly increasing per key across grants, or
  // nullopt if the backend has no fencing capability.
  std::optional<std::uint64_t> token() const;
  // Returns this lease's owner id: 128 random bits as 32 lowercase hex digits.
  const std::string& owner_id() const;
  // Returns when the lease stops being valid unless renewed, on the backend's
  // clock (steady_clock unless a test injected one). Conservative: measured
  // from when the acquire (or the last successful extend) was *sent*, less
  // the backend's clock_drift_margin(ttl), so the service's own expiry is
  // later unless its clock runs more than the margin fast.
  // time_point::max() for a backend without ttl (connection-bound).
  std::chrono::steady_clock::time_point valid_until() const;
  // Returns a token that is stopped once the lease is lost: valid_until()
  // passed without renewal, a renewal failed or said lost, extend() said
  // lost, or (connection-bound backends) the connection dropped. release()
  // does not fire it. Once fired it stays fired (a later renewal does not
  // revive the lease). A std::stop_callback on it runs on the thread that
  // detects the loss (the timer thread, a renewal worker, or a caller of
  // extend()); it may call into this lease but must not block for long: on
  // the timer thread it delays every other lease's deadline.
  std::stop_token lost() const;
  // Returns true if the lease is neither lost nor released and valid_until()
  // has not passed (false from valid_until() on, even before lost() fires).
  // Never blocks: reads atomics only.
  bool held() const;

  // Extends the lease to `ttl` from now (compare-and-set on the owner id).
  // Returns false, firing lost(), if the lease is already lost (then the
  // service is not asked) or the service says another owner holds it; an
  // error if the service failed (the lease may still be held until
  // valid_until()). kFailedPrecondition after release(); kUnimplemented on a
  // backend without ttl; kInvalidArgument for a ttl out of bounds.
  [[nodiscard]] absl::StatusOr<bool> extend(std::chrono::milliseconds ttl);
  // Releases the lease: compare-and-delete, never deleting another owner's
  // lease. Returns true if it was still held, false if it was lost (expired,
  // taken over) or already released. Idempotent; stops auto-renewal. An
  // error means the service could not be asked: the lease then lapses at its
  // TTL (or with its connection). Blocks on the service.
  [[nodiscard]] absl::StatusOr<bool> release();

 private:
  // The grant, shared with the timer and renewal threads (defined in the
  // library).
  class State;
  friend class LeaseLock;
  explicit Lease(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

// LeaseLock
//
// Acquires leases on keys of one backend. Cheap to copy (shares the backend).
//
// How it waits: acquire() uses the backend's own wait primitive where it has
// one (PostgreSQL advisory mode: a blocking pg_advisory_lock cancelled with
// PQcancel; etcd: a queue in create-revision order, each waiter watching the
// one ahead; Redis, the PostgreSQL lease table and SQLite: a queue of
// waiters in the service, the head woken by the release through PUBLISH,
// NOTIFY or a local datagram), otherwise (the in-memory backend) tries again
// after jittered exponential backoff (1 ms doubling to 100 ms, each sleep
// uniformly 50-100% of the step), waking at once on stop. Waiters are served
// first come, first served on etcd, Redis, the lease table and SQLite, where
// a try takes a free key only while no waiter is queued (no barging); a
// waiter that dies leaves the queue within its ttl. docs/leases.md, "How
// waiters wait".
//
// Thread-safety: all members are safe to call concurrently.
//
// Errors: kInvalidArgument for a bad key (the message names it), options
// (AcquireOptions::pool / executor set on a blocking acquire: they are for
// acquire_async; ErrorKind::kInvalidOption, as for DirLock's blocking
// acquires);
// kUnimplemented for a capability the backend lacks (Mode::kShared without
// the shared capability, ...); kDeadlineExceeded / kCancelled for an acquire
// that timed out / was stopped (holding nothing); anything else is the
// backend's failure (kUnavailable: the service cannot be reached, ...).
//
// Example:
//   auto backend = tierlock::MemoryLeaseBackend::create();
//   auto locks = tierlock::LeaseLock::create(backend, {.ttl = 10s, .auto_renew
//   = true}); absl::StatusOr<tierlock::Lease> lease =
//   locks->acquire("job/nightly", {.timeout = 5s}); if (!lease.ok()) return
//   lease.status(); write_fenced(*lease->token());    // stale holders' writes
//   are rejected if (lease->lost().stop_requested()) return
//   absl::AbortedError("lease lost");
class LeaseLock {
 public:
  // Checks `options` against the backend's capabilities.
  static absl::StatusOr<LeaseLock> create(std::shared_ptr<LeaseBackend> backend,
                                          LeaseOptions options = {});

  // Tries once. Returns the lease, an empty optional if another owner holds
  // the key (contention is not an error), or an error if the backend failed.
  // `where` (every acquire's last parameter) is the call site tier-order
  // reports name; leave it to its default.
  [[nodiscard]] absl::StatusOr<std::optional<Lease>> try_acquire(
      std::string_view key, SourceLocation where = SourceLocation::current());
  // Acquires, waiting until granted, options.timeout passes
  // (kDeadlineExceeded; zero or negative: one try) or options.stop is
  // requested (kCancelled; an already-stopped token returns at once without
  // asking the backend). Never busy-waits; holds nothing after an error.
  // options.mode kShared needs the shared capability.
  // kFailedPrecondition (nothing asked of the backend) when the tier check
  // refuses it in TierCheckMode::kFail; see tierlock/tier.h.
  // options.on_wait: a first try that finds the key held arms it (a free key
  // never does); WaitInfo::lock is "lease:BACKEND/KEY", and its holders are
  // holder()'s answer (kUnimplemented where the backend cannot say).
  [[nodiscard]] absl::StatusOr<Lease> acquire(
      std::string_view key, AcquireOptions options = {},
      SourceLocation where = SourceLocation::current());

  // Acquires without blocking the caller; outcomes and errors are those of
  // acquire(). Waiting occupies no thread: on Redis, the PostgreSQL lease
  // table and SQLite the waiter joins the key's queue in the service like
  // acquire() (same arrival order) and its wake signal (a SUBSCRIBEd
  // connection, a LISTEN connection, a datagram socket: one descriptor per
  // waiter) is watched, with every other async waiter's, by one process-wide
  // poller thread; on the other backends (memory, PostgreSQL advisory mode,
  // etcd) the waiter re-tries with acquire()'s backoff from that poller's
  // timers (no queue, no fairness there). The round trips to the service
  // (try, join, re-try on wake, leave) run on `options.pool` (null:
  // WorkerPool::global()), one short task at a time per waiter; `done` runs
  // on `options.executor`, or on that pool thread. A stop or timeout takes
  // the waiter out of the service's queue (one round trip) before
  // kCancelled / kDeadlineExceeded is delivered. The pool and executor must
  // outlive the acquires that use them. If `done` is dropped unrun (the
  // executor drops it), a granted lease is released. options.on_wait is not
  // supported here yet: kUnimplemented (ErrorKind::kInvalidOption). Tier checks
  // use the caller's LockContext at the call.
  void acquire_async(std::string_view key, AcquireOptions options,
                     absl::AnyInvocable<void(absl::StatusOr<Lease>) &&> done,
                     SourceLocation where = SourceLocation::current());
  // As above, delivering the result to the future (completed on the pool;
  // options.executor is ignored). If the future is dropped, a lease granted
  // later is released.
  [[nodiscard]] std::future<absl::StatusOr<Lease>> acquire_async(
      std::string_view key, AcquireOptions options = {},
      SourceLocation where = SourceLocation::current());

  // Returns who holds `key` (LeaseBackend::holder_of): the holder, or
  // nullopt if the key is free. kInvalidArgument for a bad key;
  // kUnimplemented for a backend that cannot tell (etcd; docs/leases.md,
  // "Who holds a lease"); other errors name the key and backend. Blocks on
  // the service (one round trip); takes nothing.
  [[nodiscard]] absl::StatusOr<std::optional<Holder>> holder(
      std::string_view key) const;
  // Returns who waits for `key`, in the order they will be granted
  // (LeaseBackend::waiters_of: owner ids only). Errors as for holder().
  [[nodiscard]] absl::StatusOr<std::vector<Holder>> waiters(
      std::string_view key) const;

  // Returns the backend / options / tier (nullopt: untiered).
  const std::shared_ptr<LeaseBackend>& backend() const { return backend_; }
  const LeaseOptions& options() const { return options_; }
  std::optional<Tier> tier() const { return options_.tier; }

 private:
  LeaseLock(std::shared_ptr<LeaseBackend> backend, LeaseOptions options)
      : backend_(std::move(backend)), options_(std::move(options)) {}
  // The acquire's record in the caller's LockContext (tier checks), defined
  // in the library.
  struct TierHold;
  absl::StatusOr<LeaseRequest> make_request(std::string_view key) const;
  Lease make_lease(const LeaseRequest& request,
                   std::unique_ptr<LeaseSession> session,
                   std::chrono::steady_clock::time_point sent,
                   TierHold tier_hold) const;
  absl::StatusOr<TierHold> check_tier(std::string_view key, Mode mode,
                                      bool try_only,
                                      SourceLocation where) const;
  absl::StatusOr<std::optional<Lease>> try_acquire_checked(std::string_view key,
                                                           TierHold& tier_hold);
  absl::StatusOr<Lease> acquire_checked(std::string_view key,
                                        AcquireOptions options,
                                        TierHold& tier_hold);

  std::shared_ptr<LeaseBackend> backend_;
  LeaseOptions options_;
  std::chrono::milliseconds ttl_{0};
};

// Runs `fn(lease)` (a `Lease&`) while holding the lease on `key`, then
// releases it. Returns the acquire's error, or else fn's result: for fn
// returning void or absl::Status, an absl::Status (fn's error first, then the
// release's error); for fn returning T, absl::StatusOr<T> (the release's
// error replaces the value). fn should watch lease.lost() and check
// lease.token() against its resource.
//
// Example:
//   absl::Status s = tierlock::with_lease(locks, "deploy", {.timeout = 30s},
//       [&](tierlock::Lease& lease) { return deploy(*lease.token()); });
template <typename Fn>
auto with_lease(LeaseLock& lock, std::string_view key, AcquireOptions options,
                Fn&& fn, SourceLocation where = SourceLocation::current()) {
  using R = std::invoke_result_t<Fn&, Lease&>;
  constexpr bool kStatusLike =
      std::is_void_v<R> || std::is_same_v<std::decay_t<R>, absl::Status>;
  using Out = std::conditional_t<kStatusLike, absl::Status,
                                 absl::StatusOr<std::decay_t<R>>>;
  absl::StatusOr<Lease> lease = lock.acquire(key, std::move(options), where);
  if (!lease.ok()) return Out(lease.status());
  if constexpr (std::is_void_v<R>) {
    fn(*lease);
    return Out(lease->release().status());
  } else if constexpr (kStatusLike) {
    absl::Status result = fn(*lease);
    absl::Status released = lease->release().status();
    return Out(result.ok() ? released : result);
  } else {
    Out result(fn(*lease));
    absl::Status released = lease->release().status();
    if (!released.ok()) return Out(released);
    return result;
  }
}

// Returns `text` with every password in it replaced by "***", for messages
// and logs: the password of each URL's userinfo
// ("redis://user:pw@host" -> "redis://user:***@host", "postgresql://:pw@h"
// -> "postgresql://:***@h"), and the value of every key ending in "password"
// written KEY=VALUE (PostgreSQL's "password='a b'" or "password=x" ->
// "password=***", a URL's "?password=x" -> "?password=***"). An unquoted
// value runs on over the following words that hold no '=' (a mistyped
// "password=se cret" hides "cret" too). `text` may be a URL, a libpq
// connection string or a message with URLs in it; user names, hosts and the
// rest are kept. Every message tierlock's lease backends build shows URLs
// and connection strings through it. Thread-safe, never fails.
//
// Example:
//   redact_url("redis://ci:s3cret@127.0.0.1:6379/2")
//       == "redis://ci:***@127.0.0.1:6379/2"
//   redact_url("host=db user=ci password='s3 cret'")
//       == "host=db user=ci password=***"
std::string redact_url(std::string_view text);

// Returns `holder` for a message: "pid 4242 'make -j8' on build1 since
// 2026-12-07T21:09:06Z, token 17" (what is not known is left out; an
// empty holder is "an unknown owner"). Text fields go through escape_text.
std::string describe_lease_holder(const Holder& holder);

}  // namespace tierlock

#endif  // TIERLOCK_LEASE_H_

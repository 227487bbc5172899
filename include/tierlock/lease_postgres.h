// tierlock/lease_postgres.h
//
// The PostgreSQL lease backend (libpq; CMake component TIERLOCK_LEASE_POSTGRES,
// target tierlock::lease_postgres):
//   PostgresLeaseOptions - server, mode (advisory or lease table), timeouts.
//   PostgresLeaseBackend - leases as session advisory locks, or as rows of a
//                          lease table timed by the database's clock.
#ifndef TIERLOCK_LEASE_POSTGRES_H_
#define TIERLOCK_LEASE_POSTGRES_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "tierlock/lease.h"

namespace tierlock {

// PostgresLeaseOptions
struct PostgresLeaseOptions {
  enum class Mode {
    // A session-level pg_advisory_lock on a dedicated connection per lease:
    // the connection is the lease (no ttl, no fencing). Released when the
    // holder releases, or when its connection ends (process death: at once;
    // a silent network partition: when TCP keepalives give up, ~25 s).
    kAdvisory,
    // A row per key in a lease table; the database's clock decides expiry
    // (ttl), a sequence gives fencing tokens. Every statement is one
    // autocommit statement, so it works through pgbouncer in any pool mode.
    kLeaseTable,
  };
  // A libpq connection string or URI ("host=127.0.0.1 port=5432 dbname=x",
  // "postgresql://user@host/db"). tierlock adds keepalives (idle 10 s,
  // interval 5 s, count 3), tcp_user_timeout 10 s, connect_timeout
  // (io_timeout rounded up to whole seconds, at least 2) and
  // application_name=tierlock; values in this string override them.
  std::string conninfo;
  Mode mode = Mode::kAdvisory;
  // kLeaseTable: the table (created with its sequence <table>_token if
  // missing). A plain lowercase identifier: [a-z_][a-z0-9_]{0,47}.
  std::string table = "tierlock_leases";
  // Bound on each statement's round trip (except advisory waits, which are
  // bounded by the acquire's timeout). Past it the connection is closed
  // (which ends the statement) and the call fails with kUnavailable. An
  // advisory wait that times out or is stopped is cancelled with PQcancel
  // first; libpq 15's PQcancel has no timeout of its own, so while the
  // server's host is unreachable the stop returns only once its TCP connect
  // fails.
  std::chrono::milliseconds io_timeout{10'000};
  // Lease-table mode: a waiting acquire is woken by NOTIFY on a connection
  // of its own that LISTENs. Behind a transaction or statement pooler
  // (pgbouncer pool_mode=transaction|statement) LISTEN does not last past
  // its statement and wakes never arrive: set false there, and waiters keep
  // their place in the queue but look again every 100 ms instead (with true,
  // they would look only every ttl/3).
  bool notify_waiters = true;
};

// PostgresLeaseBackend
//
// Advisory mode: key -> bigint by FNV-1a 64 over the key's bytes (see
// advisory_key; two keys that collide exclude each other, never grant twice).
// try_acquire opens a connection and runs pg_try_advisory_lock; acquire runs
// a blocking pg_advisory_lock and, on timeout or stop, cancels it with
// PQcancel and closes the connection, so nothing is held afterwards. The
// shared renewer thread watches each holder's socket: lost() fires when the
// connection drops (server restart, pg_terminate_backend, keepalive
// timeout). Transaction pooling (pgbouncer pool_mode=transaction) would
// silently break session locks: after a grant the backend checks, on the
// same connection, that the next statement runs in the same server session
// and that pg_locks shows the lock held by it, and refuses
// (kFailedPrecondition) otherwise, after freeing the lock the grant left in
// the other server session; a release that lands in another server session
// does the same and returns kFailedPrecondition. The check is best-effort: a
// pooler that happens to reuse the same server connection passes it
// (docs/leases.md). Tested against a real pgbouncer.
// Capabilities: none (no ttl, no fencing).
//
// Lease-table mode: capabilities ttl and fencing. A grant is one INSERT ..
// ON CONFLICT DO UPDATE .. WHERE expires_at <= clock_timestamp(); extend and
// release compare (key, owner, token). The token is nextval of the sequence
// (and always above the key's previous token). The backend's leases share a
// small pool of connections: one that failed or timed out is closed at once
// and replaced in the background (docs/leases.md, "Reconnection"). An acquire
// whose outcome is unknown (the connection failed after sending) is an error,
// and the backend then deletes the row if it was granted (best effort:
// otherwise it lapses at its TTL). Waiting (lease-table mode): a contended
// acquire joins the key's queue (table <table>_waiters, tickets from
// <table>_ticket) and blocks on a connection of its own that LISTENs on
// tlw_<owner id>; the release statement NOTIFYs the queue's head only. Waiters
// are granted in arrival order; a try takes a free key only while nobody is
// queued. Behind a transaction pooler notifications do not arrive: set
// PostgresLeaseOptions::notify_waiters to false there.
//
// Thread-safety: all members may be called concurrently.
class PostgresLeaseBackend final : public LeaseBackend {
 public:
  // Connects once to check the server (and, in lease-table mode, creates the
  // table). kUnavailable if the server cannot be reached, kInvalidArgument
  // for a bad table name or conninfo.
  static absl::StatusOr<std::shared_ptr<PostgresLeaseBackend>> create(
      PostgresLeaseOptions options);
  ~PostgresLeaseBackend() override;

  std::string_view name() const override;
  LeaseCapabilities capabilities() const override;
  absl::StatusOr<std::unique_ptr<LeaseSession>> try_acquire(
      const LeaseRequest& request) override;
  absl::StatusOr<std::unique_ptr<LeaseSession>> wait_acquire(
      const LeaseRequest& request,
      std::chrono::steady_clock::time_point deadline,
      const std::stop_token& stop) override;
  // Lease-table mode: owner id, token, host, pid, program and since of the
  // grant (a lease granted by a tierlock without the holder table: owner id
  // and token). Advisory mode: an empty Holder if the lock is held (pg_locks
  // names only the server session), nullopt if free; one new connection.
  absl::StatusOr<std::optional<Holder>> holder_of(
      std::string_view key) override;
  // Lease-table mode: the key's live queue, in ticket order (owner ids).
  // Advisory mode: kUnimplemented (the server's lock queue is not listed).
  absl::StatusOr<std::vector<Holder>> waiters_of(std::string_view key) override;

  // Returns the advisory lock id of `key`: FNV-1a 64 of its bytes, as a
  // signed bigint. SELECT pg_advisory_lock(<this>) interoperates.
  static std::int64_t advisory_key(std::string_view key);

  struct Shared;

 private:
  explicit PostgresLeaseBackend(std::shared_ptr<Shared> shared)
      : shared_(std::move(shared)) {}
  std::shared_ptr<Shared> shared_;
};

}  // namespace tierlock

#endif  // TIERLOCK_LEASE_POSTGRES_H_

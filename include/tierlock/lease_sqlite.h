// tierlock/lease_sqlite.h
//
// The SQLite lease backend (libsqlite3; CMake component TIERLOCK_LEASE_SQLITE,
// target tierlock::lease_sqlite): same-host leases in a database file.
//   SqliteLeaseOptions - the file, this session's name, the busy timeout.
//   SqliteLeaseRow     - one row, as list() returns it.
//   SqliteLeaseBackend - leases as rows that carry metadata and survive
//                        process restarts; release_all(session), reclaim.
#ifndef TIERLOCK_LEASE_SQLITE_H_
#define TIERLOCK_LEASE_SQLITE_H_

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tierlock/lease.h"

namespace tierlock {

struct SqliteLeaseOptions {
  // The database file (created if missing, with its tables). Every process
  // that shares leases opens the same file; it must be on a local filesystem
  // (SQLite's locking, and WAL's shared memory, do not work over NFS).
  // Refused (kFailedPrecondition) if it, its "-wal" or its "-shm" name is a
  // symbolic link, or if any directory on the path is one: a link planted in
  // a shared directory must not choose where the database is written.
  std::filesystem::path path;
  // The name stored with this backend's leases, for release_all() after a
  // restart (e.g. a runner's name). Empty: "<hostname>:<pid>".
  std::string session;
  // How long a statement waits for another process's write transaction
  // (SQLite busy_timeout) before failing with kUnavailable.
  std::chrono::milliseconds busy_timeout{5000};
};

struct SqliteLeaseRow {
  std::string key;
  std::string owner_id;
  std::string session;
  std::uint64_t token = 0;
  std::string metadata;
  bool held = false;  // unexpired, granted since this boot
};

// SqliteLeaseBackend
//
// Tables: tierlock_leases(key PRIMARY KEY, owner, session, token, metadata,
// boot_id, expires_ns) and tierlock_lease_tokens(key PRIMARY KEY, last). A
// lease is held while its row's boot_id is this boot's
// (/proc/sys/kernel/random/boot_id) and expires_ns is after CLOCK_MONOTONIC
// now: the same clock as steady_clock, shared by every process on the host,
// and immune to wall-clock jumps; a reboot expires every row. A grant is one
// BEGIN IMMEDIATE transaction: check the row, bump the key's counter row (the
// fencing token, kept across restarts and releases), write the row. Extend
// and release compare (key, owner, token). Journal mode WAL.
// Waiting: a contended acquire joins the key's queue (table
// tierlock_lease_waiters) and blocks on a datagram socket bound to the
// abstract address "tierlock-lease-wake:<owner id>"; the release sends the
// queue's head one byte (a head nobody listens for, dead, leaves the queue).
// Waiters are granted in arrival order; a try takes a free key only while
// nobody is queued.
// Capabilities: ttl, fencing, metadata. Thread-safe (one connection per
// backend, guarded by a mutex).
class SqliteLeaseBackend final : public LeaseBackend {
 public:
  // Opens (creating) the database. kUnavailable / kPermissionDenied with
  // the path if it cannot be opened.
  static absl::StatusOr<std::shared_ptr<SqliteLeaseBackend>> create(
      SqliteLeaseOptions options);
  ~SqliteLeaseBackend() override;

  std::string_view name() const override { return "sqlite"; }
  LeaseCapabilities capabilities() const override;
  absl::StatusOr<std::unique_ptr<LeaseSession>> try_acquire(
      const LeaseRequest& request) override;
  absl::StatusOr<std::unique_ptr<LeaseSession>> wait_acquire(
      const LeaseRequest& request,
      std::chrono::steady_clock::time_point deadline,
      const std::stop_token& stop) override;
  // Owner id, token, host, pid, program and since of the grant (a lease
  // granted by a tierlock without the holder table: owner id and token).
  absl::StatusOr<std::optional<Holder>> holder_of(
      std::string_view key) override;
  // The key's live queue, in ticket (arrival) order: owner ids.
  absl::StatusOr<std::vector<Holder>> waiters_of(std::string_view key) override;

  // Returns this backend's session name.
  const std::string& session() const;
  // Deletes every lease row of `session` (held or not), e.g. after that
  // session's process restarted; returns how many. Their owners' leases are
  // gone: extend/release report them lost.
  absl::StatusOr<int> release_all(std::string_view session);
  // Deletes rows that are no longer held (expired, or from an earlier boot);
  // returns how many. Acquires reclaim their own key anyway; this tidies.
  absl::StatusOr<int> reclaim_expired();
  // Returns every lease row, held or not, ordered by key.
  absl::StatusOr<std::vector<SqliteLeaseRow>> list();

  struct Db;

 private:
  explicit SqliteLeaseBackend(std::shared_ptr<Db> db) : db_(std::move(db)) {}
  std::shared_ptr<Db> db_;
};

}  // namespace tierlock

#endif  // TIERLOCK_LEASE_SQLITE_H_

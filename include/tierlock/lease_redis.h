// tierlock/lease_redis.h
//
// The Redis lease backend (hiredis 0.14; CMake component TIERLOCK_LEASE_REDIS,
// target tierlock::lease_redis): single-instance leases, an efficiency lock.
//   RedisLeaseOptions - server, credentials, key prefix, timeouts, optional
//   WAIT
//                       for replicas; from_url parses
//                       redis://[USER:PASSWORD@]HOST….
//   RedisLeaseBackend - SET NX PX + INCR in one script; CAS extend/release
//   scripts.
#ifndef TIERLOCK_LEASE_REDIS_H_
#define TIERLOCK_LEASE_REDIS_H_

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "tierlock/lease.h"

namespace tierlock {

struct RedisLeaseOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  // After connecting, if `password` is not empty: AUTH <password>, or with a
  // `username` (a Redis 6+ ACL user), AUTH <username> <password>. A refused
  // AUTH, or a server that wants one and got none (NOAUTH), is
  // kPermissionDenied; no message ever contains the password.
  std::string username;
  std::string password;
  int database = 0;  // SELECT, if not 0
  // Keys: <prefix>{KEY}:lease (value: the owner id, with the TTL) and
  // <prefix>{KEY}:token (the fencing counter, no TTL). The braces keep both in
  // one cluster slot.
  std::string prefix = "tierlock:";
  // Bound on connecting and on each command's round trip (kUnavailable past
  // it).
  std::chrono::milliseconds io_timeout{5000};
  // If > 0: after a grant or extend, WAIT for this many replicas to
  // acknowledge (at most wait_timeout); fewer is an error, and a grant is
  // then released. This narrows, and does not close, the failover window.
  int wait_replicas = 0;
  std::chrono::milliseconds wait_timeout{1000};

  // Returns the options a URL names, the others left at their defaults:
  //   redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]
  // HOST may be an IPv6 address in brackets; USER and PASSWORD are
  // percent-decoded (write '@' as %40, ':' in a user name as %3A). A user
  // name without a password, a bad port or database, or another scheme
  // (rediss:// is not supported: hiredis 0.14 has no TLS) is
  // kInvalidArgument, naming the URL with its password hidden (redact_url).
  //
  // Example:
  //   auto o =
  //   tierlock::RedisLeaseOptions::from_url("redis://ci:p%40ss@10.0.0.5/2");
  //   // o->username == "ci", o->password == "p@ss", o->port == 6379,
  //   o->database == 2
  static absl::StatusOr<RedisLeaseOptions> from_url(std::string_view url);
};

// RedisLeaseBackend
//
// A grant is one script: SET <lease> <owner> NX PX <ttl>, and if that set it,
// INCR <token> — so the token and the grant are atomic. Extend and release
// are scripts that compare the value with the owner id first (PEXPIRE / DEL
// only if it is ours). Scripts run by EVALSHA; after a NOSCRIPT (a restart or
// SCRIPT FLUSH) by EVAL, which caches them again. Redis's clock decides
// expiry. The backend's leases share a small pool of connections: one that
// failed or timed out is closed at once and replaced in the background
// (docs/leases.md, "Reconnection"). An acquire whose reply is lost is an error;
// the backend then deletes the lease if it was granted (compare-and-delete,
// best effort).
//
// What it does not guarantee (docs/leases.md): with replication, a failover
// can promote a replica that never saw a grant, and grant the key again; a
// restart without persistence forgets every lease and restarts tokens at 1.
// Capabilities: ttl and fencing (tokens increase while the token key
// survives); not survives_failover. No Redlock.
//
// Waiting: a contended acquire joins the key's queue (sorted sets
// <prefix>{KEY}:waiters, :waiters:expiry, :waiters:ticket) and blocks on a
// connection of its own SUBSCRIBEd to <prefix>wake:<owner id>; the release
// script PUBLISHes to the queue's head only. Waiters are granted in arrival
// order; a try takes a free key only while nobody is queued.
//
// Thread-safety: all members may be called concurrently.
class RedisLeaseBackend final : public LeaseBackend {
 public:
  // Connects once and loads the scripts. kUnavailable if the server cannot be
  // reached.
  static absl::StatusOr<std::shared_ptr<RedisLeaseBackend>> create(
      RedisLeaseOptions options);
  ~RedisLeaseBackend() override;

  std::string_view name() const override { return "redis"; }
  LeaseCapabilities capabilities() const override;
  absl::StatusOr<std::unique_ptr<LeaseSession>> try_acquire(
      const LeaseRequest& request) override;
  absl::StatusOr<std::unique_ptr<LeaseSession>> wait_acquire(
      const LeaseRequest& request,
      std::chrono::steady_clock::time_point deadline,
      const std::stop_token& stop) override;
  // Owner id, token, host, pid, program and since of the grant, from the
  // key's holder hash (a lease granted by a tierlock without it: owner id).
  absl::StatusOr<std::optional<Holder>> holder_of(
      std::string_view key) override;
  // The key's live queue, in ticket (arrival) order: owner ids.
  absl::StatusOr<std::vector<Holder>> waiters_of(std::string_view key) override;

  // Returns the Redis key that holds `key`'s lease (for inspection).
  std::string lease_key(std::string_view key) const;

  struct Conn;

 private:
  explicit RedisLeaseBackend(std::shared_ptr<Conn> conn)
      : conn_(std::move(conn)) {}
  std::shared_ptr<Conn> conn_;
};

}  // namespace tierlock

#endif  // TIERLOCK_LEASE_REDIS_H_

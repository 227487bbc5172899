// tierlock/lease_etcd.h
//
// The etcd lease backend (etcd v3 through its JSON gateway, libcurl; CMake
// component TIERLOCK_LEASE_ETCD, target tierlock::lease_etcd): leases kept by
// a consensus cluster, so a grant survives the failure of a member, the
// leader included. etcd's own lock recipe, so `etcdctl lock` and Go programs
// using concurrency.NewMutex exclude tierlock on the same key, both ways.
//   EtcdLeaseOptions - endpoints, key prefix, timeouts; from_url parses
//                      etcd://HOST[:PORT][,HOST[:PORT]...].
//   EtcdLeaseBackend - one etcd lease per Lease, a key PREFIX KEY/<lease id
//                      in hex> on it; the owner is the key with the lowest
//                      create revision; waiters queue in that order.
#ifndef TIERLOCK_LEASE_ETCD_H_
#define TIERLOCK_LEASE_ETCD_H_

#include <chrono>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tierlock/lease.h"

namespace tierlock {

struct EtcdLeaseOptions {
  // Client URLs of the cluster's members ("http://127.0.0.1:2379"). Requests
  // go to one member at a time and move to the next when it fails (refused,
  // timed out, or it answers "no leader").
  std::vector<std::string> endpoints;
  // Prepended to every lease key. Empty by default, so a tierlock lease on
  // KEY and `etcdctl lock KEY` contend for the same lock.
  std::string prefix;
  // Bound on one request to the cluster, failover included (kUnavailable
  // past it). A renewal is bounded by the lease's validity as well.
  std::chrono::milliseconds io_timeout{5000};

  // Returns the options a URL names, the others left at their defaults:
  //   etcd://HOST[:PORT][,HOST[:PORT]...]      (PORT defaults to 2379)
  // Each HOST may be an IPv6 address in brackets. Anything else (a path, a
  // user, an empty host, a bad port) is kInvalidArgument naming the URL.
  //
  // Example:
  //   auto o =
  //   tierlock::EtcdLeaseOptions::from_url("etcd://10.0.0.5,10.0.0.6:2379");
  //   // o->endpoints == {"http://10.0.0.5:2379", "http://10.0.0.6:2379"}
  static absl::StatusOr<EtcdLeaseOptions> from_url(std::string_view url);
};

// EtcdLeaseBackend
//
// How it works (etcd's concurrency.Mutex recipe): an acquire grants an etcd
// lease of the TTL rounded up to whole seconds (etcd's unit), with an id the
// client picks, then in one transaction creates the key
// PREFIX KEY "/" <lease id in lowercase hex> on that lease (only if absent)
// and reads every key under PREFIX KEY "/". The key with the lowest create
// revision owns the lock. A try that does not own revokes its lease (which
// deletes its key) and reports contention. A wait keeps its key, watches
// only the key just ahead of it (no herd: a release wakes one waiter), keeps
// its etcd lease alive every ttl/3 while it waits, and owns the lock when no
// earlier key is left: waiters are granted in create-revision order (FIFO).
// A timed-out or cancelled wait revokes its lease: it leaves no key behind.
// Keys one level deeper (KEY/x/<id>, another lock's) do not count.
//
// Token: the key's create revision: cluster-wide monotonic, so strictly
// increasing per key across grants. For writes to etcd itself, fence them in
// the same transaction: compare create_revision(lease key) == token().
// Renewal: a keepalive of the etcd lease (extend() to a TTL of other whole
// seconds grants a new etcd lease and moves the key to it, keeping its
// create revision, then revokes the old one). Release: revoke.
//
// Ambiguous outcomes: a grant or transaction whose reply is lost may have
// succeeded; the backend revokes the lease (it chose the id, so it can)
// before reporting the error, so nothing is left holding the key; if the
// revoke fails too, the etcd lease lapses at its TTL.
//
// Failover: the cluster keeps a lease's TTL across a change of leader (the
// new leader restarts every lease's countdown), so a holder whose keepalives
// reach any member with a leader keeps its lease; no other owner can be
// granted while its key exists. Capabilities: ttl, fencing,
// survives_failover; waiters are fair (FIFO). Not yet: shared leases, TLS.
//
// Thread-safety: all members may be called concurrently.
class EtcdLeaseBackend final : public LeaseBackend {
 public:
  // Checks the options and asks the cluster once for its status.
  // kInvalidArgument for bad options, kUnavailable if no endpoint answers.
  static absl::StatusOr<std::shared_ptr<EtcdLeaseBackend>> create(
      EtcdLeaseOptions options);
  ~EtcdLeaseBackend() override;

  std::string_view name() const override { return "etcd"; }
  LeaseCapabilities capabilities() const override;
  absl::StatusOr<std::unique_ptr<LeaseSession>> try_acquire(
      const LeaseRequest& request) override;
  // Queues behind the current holder and earlier waiters (see above); never
  // polls. Returns null at `deadline`, kCancelled on `stop`; either way its
  // key is gone. Blocks on the cluster.
  absl::StatusOr<std::unique_ptr<LeaseSession>> wait_acquire(
      const LeaseRequest& request,
      std::chrono::steady_clock::time_point deadline,
      const std::stop_token& stop) override;

  // Returns the etcd key prefix under which `key`'s lock keys live
  // (PREFIX KEY "/"), for inspection.
  std::string lock_prefix(std::string_view key) const;

  struct Client;

 private:
  explicit EtcdLeaseBackend(std::shared_ptr<Client> client)
      : client_(std::move(client)) {}
  absl::StatusOr<std::unique_ptr<LeaseSession>> acquire(
      const LeaseRequest& request, bool wait,
      std::chrono::steady_clock::time_point deadline,
      const std::stop_token& stop);
  std::shared_ptr<Client> client_;
};

}  // namespace tierlock

#endif  // TIERLOCK_LEASE_ETCD_H_

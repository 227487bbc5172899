// tests/lease/etcd_cluster.h
//
// A real etcd cluster for the lease tests: each
// member an `etcd` process on 127.0.0.1 with free client and peer ports and
// its own data directory in a temporary directory, started and stopped by
// the test (never a system service, never a fixed port):
//   EtcdCluster - N members (3 by default) with a short heartbeat (50 ms) and
//                 election timeout (500 ms); kill / restart one member, find
//                 the leader, run etcdctl against it.
//   shared_etcd - the process-wide cluster of a test binary (started on first
//                 use, stopped at exit). Tests use unique keys.
// Members get SIGKILL when the thread that started them exits (setpriv
// --pdeathsig), so a crashed test leaves none behind: start and restart a
// cluster on a thread that outlives it (the test's main thread).
// start() returns an error naming the missing program or the failed step;
// tests treat that as a failure, not a skip (CI installs etcd).
#ifndef TIERLOCK_TESTS_LEASE_ETCD_CLUSTER_H_
#define TIERLOCK_TESTS_LEASE_ETCD_CLUSTER_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"

namespace tierlock::testing {

class EtcdCluster {
 public:
  // Starts `members` members and waits (at most 30 s) until every one
  // reports healthy.
  static absl::StatusOr<std::unique_ptr<EtcdCluster>> start(int members = 3);
  ~EtcdCluster();  // SIGKILLs every member; the data directories go with dir_

  int size() const { return static_cast<int>(members_.size()); }
  // "http://127.0.0.1:PORT" of member i, and of all of them comma-separated.
  std::string client_url(int i) const;
  std::string client_urls() const;
  // "127.0.0.1:PORT[,127.0.0.1:PORT...]": the host list of an etcd:// URL.
  std::string hosts() const;
  int client_port(int i) const { return member(i).client_port; }
  bool running(int i) const { return member(i).process.has_value(); }

  // SIGKILLs member i and waits until it is gone.
  absl::Status kill(int i);
  // SIGSTOPs / SIGCONTs member i (a pause: its sockets stay open).
  absl::Status pause(int i);
  absl::Status resume(int i);
  // Starts member i again on its ports and data directory, and waits (at
  // most 30 s) until it reports healthy.
  absl::Status restart(int i);
  // Returns the index of the member that leads, asking the running members;
  // waits (at most `timeout`) until they agree on one that is running.
  absl::StatusOr<int> leader(std::chrono::milliseconds timeout = kTimeout);
  // Runs `etcdctl --endpoints <running members> ARGS` (ARGS: shell words),
  // at most `timeout`; returns stdout (stderr joined), or an error naming the
  // command and its output.
  absl::StatusOr<std::string> etcdctl(
      const std::string& args, std::chrono::milliseconds timeout = kTimeout);
  // The log of member i, for failure messages.
  std::string log(int i) const;

 private:
  struct Member {
    std::string name;
    int client_port = 0;
    int peer_port = 0;
    std::optional<Process> process;
  };
  EtcdCluster() = default;
  Member& member(int i) { return members_[static_cast<std::size_t>(i)]; }
  const Member& member(int i) const {
    return members_[static_cast<std::size_t>(i)];
  }
  absl::Status launch(int i, bool fresh);
  absl::Status wait_healthy(int i);
  std::string running_urls() const;

  TempDir dir_;
  std::vector<Member> members_;
};

EtcdCluster& shared_etcd();

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_LEASE_ETCD_CLUSTER_H_

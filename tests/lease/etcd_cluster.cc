// tests/lease/etcd_cluster.cc -- see etcd_cluster.h.
#include "lease/etcd_cluster.h"

#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "lease/servers.h"
#include "nlohmann/json.hpp"
#include "support/wait.h"

namespace tierlock::testing {

namespace {

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string tail(const std::string& s, std::size_t n = 3000) {
  return s.size() <= n ? s : s.substr(s.size() - n);
}

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdCluster>> EtcdCluster::start(int members) {
  if (find_program("etcd").empty() || find_program("etcdctl").empty()) {
    return absl::NotFoundError(
        "etcd or etcdctl not installed; run scripts/deps.sh (Debian: "
        "etcd-server etcd-client)");
  }
  absl::Status last;
  // A free port can be taken between free_port() and etcd's bind: try again
  // with new ports.
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::unique_ptr<EtcdCluster> c(new EtcdCluster);
    c->members_.resize(static_cast<std::size_t>(members));
    for (int i = 0; i < members; ++i) {
      c->member(i).name = absl::StrCat("n", i + 1);
      c->member(i).client_port = free_port();
      c->member(i).peer_port = free_port();
    }
    last = absl::OkStatus();
    for (int i = 0; i < members && last.ok(); ++i)
      last = c->launch(i, /*fresh=*/true);
    for (int i = 0; i < members && last.ok(); ++i) last = c->wait_healthy(i);
    if (last.ok()) return c;
  }
  return last;
}

EtcdCluster::~EtcdCluster() {
  for (Member& m : members_) m.process.reset();  // SIGKILL and reap
}

std::string EtcdCluster::client_url(int i) const {
  return absl::StrCat("http://127.0.0.1:", member(i).client_port);
}

std::string EtcdCluster::client_urls() const {
  std::vector<std::string> urls;
  for (int i = 0; i < size(); ++i) urls.push_back(client_url(i));
  return absl::StrJoin(urls, ",");
}

std::string EtcdCluster::hosts() const {
  std::vector<std::string> hosts;
  for (const Member& m : members_)
    hosts.push_back(absl::StrCat("127.0.0.1:", m.client_port));
  return absl::StrJoin(hosts, ",");
}

std::string EtcdCluster::running_urls() const {
  std::vector<std::string> urls;
  for (int i = 0; i < size(); ++i) {
    if (running(i)) urls.push_back(client_url(i));
  }
  return absl::StrJoin(urls, ",");
}

absl::Status EtcdCluster::launch(int i, bool fresh) {
  Member& m = member(i);
  std::vector<std::string> initial;
  for (const Member& o : members_) {
    initial.push_back(absl::StrCat(o.name, "=http://127.0.0.1:", o.peer_port));
  }
  const std::string data = (dir_.path() / m.name).string();
  const std::string client = client_url(i);
  const std::string peer = absl::StrCat("http://127.0.0.1:", m.peer_port);
  // The initial-cluster flags are ignored on a restart (the data directory
  // has the membership).
  // --pdeathsig: a test process that dies without running destructors
  // (abort, SIGKILL) takes its members with it instead of leaving them.
  const std::string cmd = absl::StrCat(
      "exec setpriv --pdeathsig KILL etcd --name ", m.name, " --data-dir ",
      sh_quote(data), " --listen-client-urls ", client,
      " --advertise-client-urls ", client, " --listen-peer-urls ", peer,
      " --initial-advertise-peer-urls ", peer, " --initial-cluster ",
      absl::StrJoin(initial, ","), " --initial-cluster-state ",
      fresh ? "new" : "existing",
      " --initial-cluster-token tierlock --heartbeat-interval 50 "
      "--election-timeout 500",
      " >>", sh_quote((dir_.path() / (m.name + ".log")).string()), " 2>&1");
  try {
    m.process.emplace(Process::spawn({"/bin/sh", "-c", cmd}));
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("start etcd member ", m.name, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status EtcdCluster::wait_healthy(int i) {
  Member& m = member(i);
  bool exited = false;
  const bool ok = wait_until(
      [&] {
        if (m.process->exited_now()) {
          exited = true;
          return true;
        }
        RunResult r =
            run({"/bin/sh", "-c",
                 absl::StrCat("etcdctl --endpoints ", client_url(i),
                              " --command-timeout=1s endpoint health 2>&1")},
                std::chrono::seconds(10));
        return r.status.code == 0;
      },
      std::chrono::seconds(30));
  if (!ok || exited) {
    m.process.reset();
    return absl::InternalError(
        absl::StrCat("etcd member ", m.name, " (client port ", m.client_port,
                     ") ", exited ? "exited" : "not healthy within 30 s",
                     "; its log ends:\n", tail(log(i))));
  }
  return absl::OkStatus();
}

absl::Status EtcdCluster::kill(int i) {
  Member& m = member(i);
  if (!m.process)
    return absl::FailedPreconditionError(
        absl::StrCat(m.name, " is not running"));
  ::kill(m.process->pid(), SIGKILL);
  m.process->wait(std::chrono::seconds(30));
  m.process.reset();
  return absl::OkStatus();
}

absl::Status EtcdCluster::pause(int i) {
  if (!member(i).process || ::kill(member(i).process->pid(), SIGSTOP) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(member(i).name, ": cannot SIGSTOP"));
  }
  return absl::OkStatus();
}

absl::Status EtcdCluster::resume(int i) {
  if (!member(i).process || ::kill(member(i).process->pid(), SIGCONT) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(member(i).name, ": cannot SIGCONT"));
  }
  return absl::OkStatus();
}

absl::Status EtcdCluster::restart(int i) {
  if (running(i))
    return absl::FailedPreconditionError(member(i).name + " is running");
  if (absl::Status s = launch(i, /*fresh=*/false); !s.ok()) return s;
  return wait_healthy(i);
}

absl::StatusOr<int> EtcdCluster::leader(std::chrono::milliseconds timeout) {
  std::string last;
  int found = -1;
  wait_until(
      [&] {
        RunResult r = run(
            {"/bin/sh", "-c",
             absl::StrCat(
                 "etcdctl --endpoints ", running_urls(),
                 " --command-timeout=1s endpoint status -w json 2>/dev/null")},
            std::chrono::seconds(10));
        last = r.out;
        const nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
        if (!j.is_array() || j.empty()) return false;
        // Every member that answers must name the same leader, a running one.
        std::optional<std::uint64_t> leader_id;
        // Fields that are 0 are left out ("leader" before an election).
        for (const nlohmann::json& e : j) {
          const std::uint64_t id = e.value("Status", nlohmann::json::object())
                                       .value("leader", std::uint64_t{0});
          if (id == 0 || (leader_id && *leader_id != id)) return false;
          leader_id = id;
        }
        for (const nlohmann::json& e : j) {
          const nlohmann::json header =
              e.value("Status", nlohmann::json::object())
                  .value("header", nlohmann::json::object());
          if (header.value("member_id", std::uint64_t{0}) != *leader_id)
            continue;
          const std::string ep = e.value("Endpoint", "");
          for (int i = 0; i < size(); ++i) {
            if (ep == client_url(i) && running(i)) found = i;
          }
        }
        return found >= 0;
      },
      timeout);
  if (found < 0) {
    return absl::UnavailableError(
        absl::StrCat("etcd cluster: no leader agreed on within ",
                     timeout.count(), " ms; last status: ", last));
  }
  return found;
}

absl::StatusOr<std::string> EtcdCluster::etcdctl(
    const std::string& args, std::chrono::milliseconds timeout) {
  const std::string cmd = absl::StrCat("ETCDCTL_API=3 etcdctl --endpoints ",
                                       running_urls(), " ", args, " 2>&1");
  RunResult r = run({"/bin/sh", "-c", cmd}, timeout);
  if (r.status.code != 0) {
    return absl::InternalError(absl::StrCat("`", cmd, "` failed (",
                                            r.status.describe(), "): ", r.out));
  }
  return r.out;
}

std::string EtcdCluster::log(int i) const {
  return read_file(dir_.path() / (member(i).name + ".log"));
}

EtcdCluster& shared_etcd() {
  // Destroyed when the test binary exits normally (members killed, data
  // directories removed).
  static std::unique_ptr<EtcdCluster> cluster;
  if (!cluster) {
    absl::StatusOr<std::unique_ptr<EtcdCluster>> c = EtcdCluster::start();
    if (!c.ok()) {
      ADD_FAILURE() << "cannot start etcd: " << c.status();
      std::abort();
    }
    cluster = std::move(*c);
  }
  return *cluster;
}

}  // namespace tierlock::testing

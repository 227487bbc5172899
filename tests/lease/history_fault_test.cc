// tests/lease/history_fault_test.cc
//
// The multi-worker history checker (history.h, check_fault_history) under
// network faults, against real servers (servers.h): workers with auto-renew
// and a short ttl loop acquire -> fenced writes -> release on one key, most
// of them through a loopback proxy of their own (proxy.h), while one
// worker's network at a time is frozen, loses its replies or is cut, then
// healed. Each run prints its figures (docs/leases.md, "Network faults").
//
// The workers are threads of this process, each with its own backend object
// (its own connections): a network fault is on the worker's path to the
// server, which sees independent clients either way, and one process puts
// every event on one steady clock. Pausing a whole holder is check_sigstop's
// job. SQLite has no network between holder and database: no run here.
#include <iostream>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lease/history.h"
#include "lease/proxy.h"
#include "lease/servers.h"
#include "support/temp_dir.h"
#include "tierlock/lease.h"
#ifdef TIERLOCK_HAVE_LEASE_REDIS
#include "tierlock/lease_redis.h"
#endif
#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
#include "tierlock/lease_postgres.h"
#endif

namespace tierlock::testing {
namespace {

using namespace std::chrono_literals;

// Workers 0..proxied-1 reach the server through a proxy of their own, the
// rest straight (always a healthy contender). `make(port)` builds a backend
// object talking to 127.0.0.1:port.
template <typename Make>
std::vector<FaultHistoryWorker> make_workers(
    int server_port, int count, int proxied,
    std::vector<std::unique_ptr<TcpProxy>>& proxies, Make make) {
  std::vector<FaultHistoryWorker> out;
  for (int w = 0; w < count; ++w) {
    FaultHistoryWorker wk;
    if (w < proxied) {
      proxies.push_back(std::make_unique<TcpProxy>(server_port));
      TcpProxy* p = proxies.back().get();
      wk.backend = make(p->port());
      wk.freeze = [p](bool on) { p->freeze(on); };
      wk.drop_replies = [p] { p->drop_replies_on_open_connections(); };
      wk.cut = [p] { p->cut(); };
    } else {
      wk.backend = make(server_port);
    }
    out.push_back(std::move(wk));
  }
  return out;
}

FaultHistoryOptions options(const std::string& key, const TempDir& tmp) {
  FaultHistoryOptions o;
  o.key = key;
  o.ttl = 600ms;  // renewed every 200 ms; a freeze lasts 900 ms
  o.run = 12s;
  o.min_grants = 5;
  o.dir = tmp.path();
  return o;
}

#ifdef TIERLOCK_HAVE_LEASE_REDIS
TEST(RedisHistoryFaultTest,
     FrozenDroppedAndCutNetworksKeepWindowsDisjointAndTheKeyLive) {
  RedisServer& redis = shared_redis();
  TempDir tmp;
  std::vector<std::unique_ptr<TcpProxy>> proxies;
  auto workers = make_workers(redis.port(), 4, 3, proxies, [](int port) {
    RedisLeaseOptions o;
    o.port = port;
    o.io_timeout = 1s;  // a non-holder's call on a frozen connection
    absl::StatusOr<std::shared_ptr<RedisLeaseBackend>> b =
        RedisLeaseBackend::create(o);
    EXPECT_TRUE(b.ok()) << "redis 127.0.0.1:" << port << ": " << b.status();
    return b.ok() ? std::shared_ptr<LeaseBackend>(*b) : nullptr;
  });
  for (const FaultHistoryWorker& w : workers) ASSERT_NE(w.backend, nullptr);
  FaultHistoryResult r =
      check_fault_history(std::move(workers), options("hist-fault", tmp));
  std::cout << "redis history under faults: " << r.summary() << std::endl;
  EXPECT_EQ(r.problems, "") << r.summary();
  EXPECT_GT(r.freezes + r.drops + r.cuts, 3) << r.summary();
  // A held() that waited on I/O would take a frozen call's io_timeout (1 s
  // or more); this bound only leaves room for a loaded machine's scheduling.
  EXPECT_LT(r.max_held_latency, 250ms) << r.summary();
}
#endif

#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
TEST(PostgresHistoryFaultTest,
     TableModeFrozenDroppedAndCutNetworksKeepWindowsDisjointAndTheKeyLive) {
  PostgresServer& pg = shared_postgres();
  TempDir tmp;
  std::vector<std::unique_ptr<TcpProxy>> proxies;
  auto workers = make_workers(pg.port(), 4, 3, proxies, [](int port) {
    PostgresLeaseOptions o;
    o.conninfo =
        absl::StrCat("host=127.0.0.1 port=", port, " user=tl dbname=postgres");
    o.mode = PostgresLeaseOptions::Mode::kLeaseTable;
    o.io_timeout = 2s;  // a non-holder's statement on a frozen connection
    absl::StatusOr<std::shared_ptr<PostgresLeaseBackend>> b =
        PostgresLeaseBackend::create(o);
    EXPECT_TRUE(b.ok()) << "postgres 127.0.0.1:" << port << ": " << b.status();
    return b.ok() ? std::shared_ptr<LeaseBackend>(*b) : nullptr;
  });
  for (const FaultHistoryWorker& w : workers) ASSERT_NE(w.backend, nullptr);
  FaultHistoryResult r =
      check_fault_history(std::move(workers), options("hist-fault-table", tmp));
  std::cout << "postgres lease-table history under faults: " << r.summary()
            << std::endl;
  EXPECT_EQ(r.problems, "") << r.summary();
  EXPECT_GT(r.freezes + r.drops + r.cuts, 3) << r.summary();
  // A held() that waited on I/O would take a frozen call's io_timeout (1 s
  // or more); this bound only leaves room for a loaded machine's scheduling.
  EXPECT_LT(r.max_held_latency, 250ms) << r.summary();
}
#endif

}  // namespace
}  // namespace tierlock::testing

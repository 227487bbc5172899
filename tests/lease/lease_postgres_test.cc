// tests/lease/lease_postgres_test.cc
//
// The PostgreSQL backend against a real PostgreSQL 15 started by the test
// (servers.h): the conformance suite in advisory and lease-table mode, directly
// and behind a real pgbouncer, and what only a real server shows (connection
// loss, cancel, DB clock, restart, transaction pooling).
#include "tierlock/lease_postgres.h"

#include <libpq-fe.h>

#include <atomic>
#include <iostream>
#include <map>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "lease/conformance.h"
#include "lease/faults.h"
#include "lease/history.h"
#include "lease/proxy.h"
#include "lease/servers.h"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "tierlock/lease.h"

namespace tierlock::testing {
namespace {

using namespace std::chrono_literals;
using Mode = PostgresLeaseOptions::Mode;

std::shared_ptr<LeaseBackend> make_backend(
    const std::string& conninfo, Mode mode,
    std::chrono::milliseconds io_timeout = 10s, bool notify_waiters = true) {
  PostgresLeaseOptions o;
  o.io_timeout = io_timeout;
  o.notify_waiters = notify_waiters;
  o.conninfo = conninfo;
  o.mode = mode;
  absl::StatusOr<std::shared_ptr<PostgresLeaseBackend>> b =
      PostgresLeaseBackend::create(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : nullptr;
}

INSTANTIATE_TEST_SUITE_P(
    Postgres, LeaseConformanceTest,
    ::testing::Values(LeaseBackendFactory{"advisory",
                                          [] {
                                            return make_backend(
                                                shared_postgres().conninfo(),
                                                Mode::kAdvisory);
                                          }},
                      LeaseBackendFactory{"table",
                                          [] {
                                            return make_backend(
                                                shared_postgres().conninfo(),
                                                Mode::kLeaseTable);
                                          }}),
    [](const auto& p) { return p.param.name; });

// Runs one statement on a fresh connection; returns the first value ("" if
// none), or the error.
absl::StatusOr<std::string> sql(const std::string& conninfo,
                                const std::string& query) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::string e = PQerrorMessage(c);
    PQfinish(c);
    return absl::UnavailableError(e);
  }
  PGresult* r = PQexec(c, query.c_str());
  const ExecStatusType st = PQresultStatus(r);
  std::string out;
  absl::Status status;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    status = absl::InternalError(PQresultErrorMessage(r));
  } else if (PQntuples(r) > 0) {
    out = PQgetvalue(r, 0, 0);
  }
  PQclear(r);
  PQfinish(c);
  if (!status.ok()) return status;
  return out;
}

std::string advisory_where(std::string_view key) {
  return absl::StrCat(
      "locktype = 'advisory' AND ((classid::bigint << 32) | objid::bigint) = ",
      PostgresLeaseBackend::advisory_key(key));
}

TEST(PostgresLeaseBackendTest, AdvisoryKeyIsFnv1a64OfTheKey) {
  EXPECT_EQ(static_cast<std::uint64_t>(PostgresLeaseBackend::advisory_key("")),
            0xcbf29ce484222325ULL);
  EXPECT_EQ(static_cast<std::uint64_t>(PostgresLeaseBackend::advisory_key("a")),
            0xaf63dc4c8601ec8cULL);
}

TEST(PostgresLeaseBackendTest, AdvisoryLeaseInteroperatesWithPgAdvisoryLock) {
  PostgresServer& pg = shared_postgres();
  auto backend = make_backend(pg.conninfo(), Mode::kAdvisory);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(backend));
  const std::string key = "interop";
  // A plain SQL holder on its own connection.
  PGconn* raw = PQconnectdb(pg.conninfo().c_str());
  ASSERT_EQ(PQstatus(raw), CONNECTION_OK);
  PGresult* r =
      PQexec(raw, absl::StrCat("SELECT pg_advisory_lock(",
                               PostgresLeaseBackend::advisory_key(key), ")")
                      .c_str());
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK);
  PQclear(r);
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key));
  EXPECT_FALSE(a.has_value());
  PQfinish(raw);  // the session ends: its lock goes
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> b, locks.try_acquire(key));
  EXPECT_TRUE(b.has_value());
}

TEST(PostgresLeaseBackendTest, AdvisoryLostFiresWhenTheConnectionIsTerminated) {
  PostgresServer& pg = shared_postgres();
  auto backend = make_backend(pg.conninfo(), Mode::kAdvisory);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(backend));
  const std::string key = "terminated";
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key));
  ASSERT_TRUE(a.has_value());
  ASSERT_OK_AND_ASSIGN(
      std::string n,
      sql(pg.conninfo(),
          "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE " +
              advisory_where(key)));
  EXPECT_EQ(n, "1");
  EXPECT_TRUE(wait_until([&] { return a->lost().stop_requested(); }, 10s));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> b, locks.try_acquire(key));
  EXPECT_TRUE(b.has_value());
  ASSERT_OK_AND_ASSIGN(bool released, a->release());
  EXPECT_FALSE(released) << "a lease whose connection dropped reported held";
  EXPECT_TRUE(b->held());
}

TEST(PostgresLeaseBackendTest, AdvisoryCancelledWaitLeavesNoWaiterOnTheServer) {
  PostgresServer& pg = shared_postgres();
  auto backend = make_backend(pg.conninfo(), Mode::kAdvisory);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(backend));
  const std::string key = "cancelled-wait";
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key));
  ASSERT_TRUE(a.has_value());
  std::stop_source stop;
  absl::StatusOr<Lease> b = absl::UnknownError("not run");
  std::thread waiter(
      [&] { b = locks.acquire(key, {.stop = stop.get_token()}); });
  // The waiter is blocked in pg_advisory_lock on the server.
  const std::string waiting =
      "SELECT count(*) FROM pg_locks WHERE NOT granted AND " +
      advisory_where(key);
  ASSERT_TRUE(wait_until([&] {
    absl::StatusOr<std::string> n = sql(pg.conninfo(), waiting);
    return n.ok() && *n == "1";
  }));
  const auto t0 = std::chrono::steady_clock::now();
  stop.request_stop();
  waiter.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_TRUE(IsError(b.status(), absl::StatusCode::kCancelled, key));
  EXPECT_TRUE(wait_until([&] {
    absl::StatusOr<std::string> n = sql(pg.conninfo(), waiting);
    return n.ok() && *n == "0";
  }));
  ASSERT_OK(a->release());
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> c, locks.try_acquire(key));
  EXPECT_TRUE(c.has_value());
}

TEST(PostgresLeaseBackendTest, TableModeTheDatabaseClockDecidesExpiry) {
  PostgresServer& pg = shared_postgres();
  auto backend = make_backend(pg.conninfo(), Mode::kLeaseTable);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks,
                       LeaseLock::create(backend, {.ttl = 60s}));
  const std::string key = "db-clock";
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key));
  ASSERT_TRUE(a.has_value());
  // As if the server's clock jumped past the expiry.
  ASSERT_OK(sql(pg.conninfo(),
                "UPDATE tierlock_leases SET expires_at = clock_timestamp() - "
                "interval '1 second' WHERE key = '" +
                    key + "'"));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> b, locks.try_acquire(key));
  ASSERT_TRUE(b.has_value());
  EXPECT_GT(*b->token(), *a->token());
  ASSERT_OK_AND_ASSIGN(bool extended, a->extend(60s));
  EXPECT_FALSE(extended);
  EXPECT_TRUE(a->lost().stop_requested());
  ASSERT_OK_AND_ASSIGN(
      std::string owner,
      sql(pg.conninfo(),
          "SELECT owner FROM tierlock_leases WHERE key = '" + key + "'"));
  EXPECT_EQ(owner, b->owner_id());
}

TEST(PostgresLeaseBackendTest, BadTableNameIsRejected) {
  PostgresLeaseOptions o;
  o.conninfo = shared_postgres().conninfo();
  o.mode = Mode::kLeaseTable;
  o.table = "leases; DROP TABLE x";
  EXPECT_TRUE(IsError(PostgresLeaseBackend::create(o).status(),
                      absl::StatusCode::kInvalidArgument, "identifier"));
}

TEST(PostgresLeaseBackendTest, UnreachableServerIsUnavailable) {
  PostgresLeaseOptions o;
  o.conninfo = absl::StrCat("host=127.0.0.1 port=", free_port(),
                            " user=tl dbname=postgres");
  EXPECT_TRUE(IsError(PostgresLeaseBackend::create(o).status(),
                      absl::StatusCode::kUnavailable, "connect"));
}

// A server of its own: it is stopped and started again.
TEST(PostgresLeaseBackendTest,
     ServerRestartLosesAdvisoryLeasesAndTableModeReconnects) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresServer> pg,
                       PostgresServer::start());
  auto advisory = make_backend(pg->conninfo(), Mode::kAdvisory);
  auto table = make_backend(pg->conninfo(), Mode::kLeaseTable);
  ASSERT_OK_AND_ASSIGN(LeaseLock alocks, LeaseLock::create(advisory));
  ASSERT_OK_AND_ASSIGN(LeaseLock tlocks,
                       LeaseLock::create(table, {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, alocks.try_acquire("k"));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> t, tlocks.try_acquire("k"));
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(t.has_value());
  ASSERT_OK(pg->stop());  // a crash (-m immediate)
  EXPECT_TRUE(wait_until([&] { return a->lost().stop_requested(); }, 10s));
  // Down: an error, never "held by someone else".
  EXPECT_TRUE(IsError(tlocks.try_acquire("other").status(),
                      absl::StatusCode::kUnavailable));
  EXPECT_TRUE(IsError(alocks.try_acquire("other").status(),
                      absl::StatusCode::kUnavailable));
  ASSERT_OK(pg->restart_server());
  // The table survived the crash: "k" is still t's until its TTL.
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> t2, tlocks.try_acquire("k"));
  EXPECT_FALSE(t2.has_value());
  ASSERT_OK_AND_ASSIGN(bool extended, t->extend(30s));
  EXPECT_TRUE(extended);
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a2, alocks.try_acquire("k"));
  EXPECT_TRUE(a2.has_value());
  (void)a->release();
}

TEST(PostgresLeaseHistoryTest, AdvisoryHistoryOfFourProcessesHasNoOverlap) {
  TempDir tmp;
  EXPECT_EQ(check_history("postgres-advisory:" + shared_postgres().conninfo(),
                          "hist-adv", 4, 25, tmp.path(), /*fencing=*/false),
            "");
}

TEST(PostgresLeaseHistoryTest,
     TableHistoryOfFourProcessesHasNoOverlapAndFencesEveryWrite) {
  TempDir tmp;
  EXPECT_EQ(check_history("postgres-table:" + shared_postgres().conninfo(),
                          "hist-table", 4, 25, tmp.path(), /*fencing=*/true),
            "");
}

TEST(PostgresLeaseHistoryTest, KilledAdvisoryHolderFreesTheKeyAtOnce) {
  // The kernel closes the dead holder's socket; the server ends its session.
  EXPECT_EQ(check_sigkill("postgres-advisory:" + shared_postgres().conninfo(),
                          "killed-adv", 1000ms, 2000ms),
            "");
}

TEST(PostgresLeaseHistoryTest, KilledTableHolderFreesTheKeyWithinItsTtl) {
  EXPECT_EQ(check_sigkill("postgres-table:" + shared_postgres().conninfo(),
                          "killed-table", 1000ms, 3000ms),
            "");
}

TEST(PostgresLeaseHistoryTest,
     PausedTableHolderLosesTheLeaseAndItsWriteIsFenced) {
  TempDir tmp;
  std::string figures;
  EXPECT_EQ(check_sigstop("postgres-table:" + shared_postgres().conninfo(),
                          "paused-table", 500ms, tmp.path(), &figures),
            "");
  std::cout << "postgres lease-table SIGSTOP: " << figures << std::endl;
}

// Faults between client and server: a loopback proxy (proxy.h).

std::string via(const TcpProxy& proxy) {
  return absl::StrCat("host=127.0.0.1 port=", proxy.port(),
                      " user=tl dbname=postgres");
}

TEST(PostgresLeaseFaultTest,
     CutConnectionFiresLostAndTheServerFreesTheAdvisoryLock) {
  PostgresServer& pg = shared_postgres();
  TcpProxy proxy(pg.port());
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(make_backend(
                                            via(proxy), Mode::kAdvisory)));
  ASSERT_OK_AND_ASSIGN(LeaseLock direct, LeaseLock::create(make_backend(
                                             pg.conninfo(), Mode::kAdvisory)));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire("cut-adv"));
  ASSERT_TRUE(a.has_value());
  proxy.cut();
  EXPECT_TRUE(wait_until([&] { return a->lost().stop_requested(); }, 10s));
  absl::StatusOr<Lease> d = direct.acquire("cut-adv", {.timeout = 10s});
  ASSERT_OK(d.status());
  ASSERT_OK_AND_ASSIGN(bool released, a->release());
  EXPECT_FALSE(released);
}

TEST(PostgresLeaseFaultTest, TableModeLostReplyIsAnErrorAndLeavesNothingHeld) {
  PostgresServer& pg = shared_postgres();
  TcpProxy proxy(pg.port());
  ASSERT_OK_AND_ASSIGN(
      LeaseLock locks,
      LeaseLock::create(make_backend(via(proxy), Mode::kLeaseTable, 500ms),
                        {.ttl = 30s}));
  ASSERT_OK_AND_ASSIGN(
      LeaseLock direct,
      LeaseLock::create(make_backend(pg.conninfo(), Mode::kLeaseTable),
                        {.ttl = 30s}));
  proxy.drop_replies_on_open_connections();
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::optional<Lease>> r = locks.try_acquire("lost-reply");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_TRUE(
      IsError(r.status(), absl::StatusCode::kUnavailable, "lost-reply"));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> d,
                       direct.try_acquire("lost-reply"));
  EXPECT_TRUE(d.has_value()) << "an orphan grant is still held";
}

TEST(PostgresLeaseFaultTest,
     TableModeFrozenConnectionIsAnErrorAndALateGrantLapses) {
  PostgresServer& pg = shared_postgres();
  TcpProxy proxy(pg.port());
  ASSERT_OK_AND_ASSIGN(
      LeaseLock locks,
      LeaseLock::create(make_backend(via(proxy), Mode::kLeaseTable, 500ms),
                        {.ttl = 1s}));
  ASSERT_OK_AND_ASSIGN(
      LeaseLock direct,
      LeaseLock::create(make_backend(pg.conninfo(), Mode::kLeaseTable),
                        {.ttl = 30s}));
  proxy.freeze(true);
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::optional<Lease>> r = locks.try_acquire("frozen");
  // The statement (0.5 s) and the clean-up's reconnect (connect_timeout 2 s).
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 8s);
  EXPECT_TRUE(IsError(r.status(), absl::StatusCode::kUnavailable));
  proxy.freeze(false);
  absl::StatusOr<Lease> d = direct.acquire("frozen", {.timeout = 10s});
  ASSERT_OK(d.status());
}

// Network faults against an auto-renewed lease-table lease (faults.h): the
// holder learns of the loss by valid_until() and before anyone else is
// granted the key. Figures: docs/leases.md ("Network faults").

TEST(PostgresLeaseFaultTest,
     TableModeFrozenConnectionLosesTheLeaseByItsDeadlineBeforeAnyoneElseHasIt) {
  PostgresServer& pg = shared_postgres();
  TcpProxy proxy(pg.port());
  // io_timeout 10 s, five times the ttl: the deadline must not wait for it.
  FaultResult r = measure_fault(
      make_backend(via(proxy), Mode::kLeaseTable),
      make_backend(pg.conninfo(), Mode::kLeaseTable), "fault/freeze", 2000ms,
      1000ms, [&] { proxy.freeze(true); }, [&] { proxy.freeze(false); });
  std::cout << "postgres lease-table freeze: " << r.summary() << std::endl;
  EXPECT_EQ(check_fault(r), "");
}

TEST(PostgresLeaseFaultTest,
     TableModeDroppedRepliesLoseTheLeaseByItsDeadlineBeforeAnyoneElseHasIt) {
  PostgresServer& pg = shared_postgres();
  TcpProxy proxy(pg.port());
  FaultResult r = measure_fault(
      make_backend(via(proxy), Mode::kLeaseTable),
      make_backend(pg.conninfo(), Mode::kLeaseTable), "fault/drop", 2000ms,
      1000ms, [&] { proxy.drop_replies_on_open_connections(); });
  std::cout << "postgres lease-table drop replies: " << r.summary()
            << std::endl;
  EXPECT_EQ(check_fault(r), "");
}

TEST(PostgresLeaseFaultTest,
     TableModeCutConnectionLosesTheLeaseBeforeAnyoneElseHasIt) {
  PostgresServer& pg = shared_postgres();
  TcpProxy proxy(pg.port());
  FaultResult r =
      measure_fault(make_backend(via(proxy), Mode::kLeaseTable),
                    make_backend(pg.conninfo(), Mode::kLeaseTable), "fault/cut",
                    2000ms, 1000ms, [&] { proxy.cut(); });
  std::cout << "postgres lease-table cut: " << r.summary() << std::endl;
  EXPECT_EQ(check_fault(r), "");
}

TEST(PostgresLeaseFaultTest, TableModeKilledServerLosesTheLeaseByItsDeadline) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresServer> pg,
                       PostgresServer::start());
  FaultResult r = measure_fault(
      make_backend(pg->conninfo(), Mode::kLeaseTable),
      make_backend(pg->conninfo(), Mode::kLeaseTable), "fault/kill", 2000ms,
      1000ms, [&] { ASSERT_OK(pg->stop()); },
      [&] { ASSERT_OK(pg->restart_server()); }, 4s);
  std::cout << "postgres lease-table kill: " << r.summary() << std::endl;
  EXPECT_EQ(check_fault(r, /*expect_grant=*/false), "");
}

TEST(
    PostgresLeaseFaultTest,
    TableModeBehindPgbouncerFrozenLosesTheLeaseByItsDeadlineBeforeAnyoneElseHasIt) {
  PostgresServer& pg = shared_postgres();
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<PgbouncerServer> bouncer,
      PgbouncerServer::start(pg, {.pool_mode = "transaction", .pool_size = 2}));
  // Client -> proxy -> pgbouncer (transaction pooling) -> server.
  TcpProxy proxy(bouncer->port());
  const std::string via_bouncer = absl::StrCat(
      "host=127.0.0.1 port=", proxy.port(), " user=tl dbname=postgres");
  FaultResult r = measure_fault(
      make_backend(via_bouncer, Mode::kLeaseTable),
      make_backend(pg.conninfo(), Mode::kLeaseTable), "fault/pgbouncer-freeze",
      2000ms, 1000ms, [&] { proxy.freeze(true); },
      [&] { proxy.freeze(false); });
  std::cout << "postgres lease-table via pgbouncer freeze: " << r.summary()
            << std::endl;
  EXPECT_EQ(check_fault(r), "");
}

TEST(
    PostgresLeaseFaultTest,
    TableModeBehindPgbouncerDroppedRepliesLoseTheLeaseByItsDeadlineBeforeAnyoneElseHasIt) {
  PostgresServer& pg = shared_postgres();
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<PgbouncerServer> bouncer,
      PgbouncerServer::start(pg, {.pool_mode = "transaction", .pool_size = 2}));
  TcpProxy proxy(bouncer->port());
  // pgbouncer runs each renewal on a server connection and commits it; only
  // its reply to the client is lost.
  FaultResult r = measure_fault(
      make_backend(via(proxy), Mode::kLeaseTable),
      make_backend(pg.conninfo(), Mode::kLeaseTable), "fault/pgbouncer-drop",
      2000ms, 1000ms, [&] { proxy.drop_replies_on_open_connections(); });
  std::cout << "postgres lease-table via pgbouncer drop replies: "
            << r.summary() << std::endl;
  EXPECT_EQ(check_fault(r), "");
}

TEST(PostgresLeaseFaultTest,
     TableModeBehindPgbouncerCutLosesTheLeaseBeforeAnyoneElseHasIt) {
  PostgresServer& pg = shared_postgres();
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<PgbouncerServer> bouncer,
      PgbouncerServer::start(pg, {.pool_mode = "transaction", .pool_size = 2}));
  TcpProxy proxy(bouncer->port());
  // The client's connection to pgbouncer is closed; pgbouncer's server
  // connections live on (the lease is a row, not a session).
  FaultResult r = measure_fault(make_backend(via(proxy), Mode::kLeaseTable),
                                make_backend(pg.conninfo(), Mode::kLeaseTable),
                                "fault/pgbouncer-cut", 2000ms, 1000ms,
                                [&] { proxy.cut(); });
  std::cout << "postgres lease-table via pgbouncer cut: " << r.summary()
            << std::endl;
  EXPECT_EQ(check_fault(r), "");
}

// Replies held back longer than the ttl, then delivered in order: the
// renewal's statement budget ends at valid_until() and it drops its
// connection, so the holder loses the lease on time and the late reply
// reaches nobody; the lease stays lost (watched until every byte held back
// before lost() was due: lost() + delay, lost() <= fault + ttl).
constexpr auto kPgDelay = 2500ms;  // > ttl 2 s

FaultResult delayed_table(TcpProxy& proxy, const std::string& key,
                          TcpProxy::Direction which) {
  return measure_fault(
      make_backend(via(proxy), Mode::kLeaseTable),
      make_backend(shared_postgres().conninfo(), Mode::kLeaseTable), key,
      {.ttl = 2000ms,
       .fault = [&] { proxy.delay(kPgDelay, which); },
       .after = [&] { proxy.delay(0ms); },
       .watch = 2000ms + kPgDelay + 500ms});
}

TEST(
    PostgresLeaseFaultTest,
    TableModeDelayedRepliesLoseTheLeaseByItsDeadlineAndLateRepliesDoNotReviveIt) {
  TcpProxy proxy(shared_postgres().port());
  FaultResult r =
      delayed_table(proxy, "fault/delay", TcpProxy::Direction::kBoth);
  std::cout << "postgres lease-table delay 2.5 s both ways: " << r.summary()
            << std::endl;
  EXPECT_EQ(check_fault(r), "");
  EXPECT_GE(r.watched_after_lost, kPgDelay)
      << "the late replies were not waited for";
}

TEST(
    PostgresLeaseFaultTest,
    TableModeDelayedRepliesOnlyLoseTheLeaseByItsDeadlineAndLateRepliesDoNotReviveIt) {
  TcpProxy proxy(shared_postgres().port());
  // The renewal commits on time (the row's expiry moves on), its reply comes
  // late: the other owner waits for the row's expiry, the holder stops at
  // its own deadline.
  FaultResult r = delayed_table(proxy, "fault/delay-replies",
                                TcpProxy::Direction::kRepliesOnly);
  std::cout << "postgres lease-table delay 2.5 s replies only: " << r.summary()
            << std::endl;
  EXPECT_EQ(check_fault(r), "");
  EXPECT_GE(r.watched_after_lost, kPgDelay)
      << "the late replies were not waited for";
}

TEST(PostgresLeaseFaultTest,
     TableModeServerRestartLosesTheLeaseBeforeAnyoneElseHasIt) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresServer> pg,
                       PostgresServer::start());
  // A crash (-m immediate) and a start while the contender races: the table
  // is durable, so the row keeps the key until its expiry; the holder's next
  // renewal fails (server down, or the crash broke its connection).
  FaultResult r = measure_fault(
      make_backend(pg->conninfo(), Mode::kLeaseTable),
      make_backend(pg->conninfo(), Mode::kLeaseTable), "fault/restart",
      {.ttl = 2000ms,
       .fault = [&] { ASSERT_OK(pg->stop()); },
       .heal = [&] { ASSERT_OK(pg->restart_server()); },
       .limit = 20s});
  std::cout << "postgres lease-table restart: " << r.summary() << std::endl;
  EXPECT_EQ(check_fault(r), "");
  EXPECT_TRUE(r.healed);
}

// Advisory mode is connection-bound (no ttl): a frozen connection -- both TCP
// legs up, nothing forwarded, as behind a hung middlebox -- is invisible to
// holder and server alike. Keepalive probes are answered by the proxy's
// kernel on each leg, and an idle holder has nothing unacknowledged for
// tcp_user_timeout to time out. So nobody else is granted (the server
// session lives) and the holder keeps believing it holds the key: no
// overlap, no liveness. lost() fires only when the connection closes.
TEST(PostgresLeaseFaultTest,
     AdvisoryFrozenConnectionKeepsTheKeyFromEveryoneUntilTheConnectionCloses) {
  PostgresServer& pg = shared_postgres();
  TcpProxy proxy(pg.port());
  const std::string key = "fault/advisory-freeze";
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(make_backend(
                                            via(proxy), Mode::kAdvisory)));
  ASSERT_OK_AND_ASSIGN(LeaseLock direct, LeaseLock::create(make_backend(
                                             pg.conninfo(), Mode::kAdvisory)));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> a, locks.try_acquire(key));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->valid_until(), std::chrono::steady_clock::time_point::max());
  using Clock = std::chrono::steady_clock;
  proxy.freeze(true);
  const Clock::time_point frozen_at = Clock::now();
  Clock::duration held_max{0};
  int refused = 0;
  Clock::time_point next_try = frozen_at;
  while (Clock::now() < frozen_at + 3s) {
    const Clock::time_point t = Clock::now();
    const bool held = a->held();
    held_max = std::max(held_max, Clock::now() - t);
    ASSERT_TRUE(held) << key << ": held() false during the freeze";
    ASSERT_FALSE(a->lost().stop_requested())
        << key << ": lost() fired during the freeze";
    if (t >= next_try) {
      ASSERT_OK_AND_ASSIGN(std::optional<Lease> other, direct.try_acquire(key));
      ASSERT_FALSE(other.has_value())
          << key << ": granted to another owner during the freeze";
      ++refused;
      next_try = t + 50ms;
    }
    std::this_thread::sleep_for(1ms);  // poll pacing
  }
  EXPECT_LT(held_max, 1ms) << "held() blocked during the freeze";
  EXPECT_GE(refused, 10);
  // The connection closes (cut, still frozen): the server ends the session
  // and frees the lock; the holder's timer thread sees the socket close.
  std::atomic<std::int64_t> lost_at{0};
  std::stop_callback on_lost(a->lost(), [&] {
    lost_at.store(Clock::now().time_since_epoch().count());
  });
  const Clock::time_point cut_at = Clock::now();
  proxy.cut();
  Clock::time_point grant_sent{};
  std::optional<Lease> theirs;
  ASSERT_TRUE(wait_until(
      [&] {
        const Clock::time_point sent = Clock::now();
        absl::StatusOr<std::optional<Lease>> r = direct.try_acquire(key);
        if (!r.ok() || !r->has_value()) return false;
        grant_sent = sent;
        theirs = std::move(*r);
        return true;
      },
      10s))
      << key << ": nobody got the key after the cut";
  ASSERT_TRUE(wait_until([&] { return lost_at.load() != 0; }, 10s))
      << key << ": lost() never fired after the cut";
  const Clock::time_point lost_t{Clock::duration(lost_at.load())};
  auto ms = [](Clock::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
  };
  std::cout << absl::StrFormat(
                   "postgres advisory freeze: %d tries refused in 3 s frozen, "
                   "held() max "
                   "%.3f ms; then cut: cut->lost %.1f ms, cut->grant %.1f ms, "
                   "lost %s the grant",
                   refused, ms(held_max), ms(lost_t - cut_at),
                   ms(grant_sent - cut_at),
                   lost_t < grant_sent ? "before" : "after")
            << std::endl;
  EXPECT_LT(lost_t - cut_at, 2s)
      << key << ": lost() late after the connection closed";
  ASSERT_OK_AND_ASSIGN(bool released, a->release());
  EXPECT_FALSE(released);
  (void)theirs->release();
}

TEST(PostgresLeaseCliTest, RunPassesTheTokenFromTheLeaseTable) {
  ASSERT_NE(std::string(TIERLOCK_CLI_PATH), "") << "tierlock_cli not built";
  PostgresServer& pg = shared_postgres();
  const std::string url =
      absl::StrCat("postgres://tl@127.0.0.1:", pg.port(), "/postgres");
  RunResult a = run({TIERLOCK_CLI_PATH, "run", "--backend", url, "--key", "cli",
                     "--", "sh", "-c", "echo \"$TIERLOCK_TOKEN\""});
  RunResult b = run({TIERLOCK_CLI_PATH, "run", "--backend", url, "--key", "cli",
                     "--", "sh", "-c", "echo \"$TIERLOCK_TOKEN\""});
  ASSERT_EQ(a.status.code, 0);
  ASSERT_EQ(b.status.code, 0);
  std::uint64_t ta = 0, tb = 0;
  ASSERT_TRUE(absl::SimpleAtoi(a.out, &ta)) << a.out;
  ASSERT_TRUE(absl::SimpleAtoi(b.out, &tb)) << b.out;
  EXPECT_GT(tb, ta);
  // Advisory mode has no token: the variable is not set.
  RunResult c = run(
      {TIERLOCK_CLI_PATH, "run", "--backend",
       absl::StrCat("postgres+advisory://tl@127.0.0.1:", pg.port(),
                    "/postgres"),
       "--key", "cli", "--", "sh", "-c", "echo \"${TIERLOCK_TOKEN-unset}\""});
  EXPECT_EQ(c.status.code, 0);
  EXPECT_EQ(c.out, "unset\n");
}

// ------------------------------------------------------------ behind pgbouncer

// One pgbouncer per pool mode for the conformance suites, started on first
// use and killed at exit. Session pooling gets room for every connection the
// suite opens at once (an advisory lease is a connection).
PgbouncerServer& shared_pgbouncer(const std::string& pool_mode) {
  static std::map<std::string, std::unique_ptr<PgbouncerServer>> bouncers;
  std::unique_ptr<PgbouncerServer>& b = bouncers[pool_mode];
  if (!b) {
    absl::StatusOr<std::unique_ptr<PgbouncerServer>> s = PgbouncerServer::start(
        shared_postgres(),
        {.pool_mode = pool_mode, .pool_size = pool_mode == "session" ? 40 : 2});
    if (!s.ok()) {
      ADD_FAILURE() << "cannot start pgbouncer: " << s.status();
      std::abort();
    }
    b = std::move(*s);
  }
  return *b;
}

// Advisory mode through session pooling (a client keeps its server
// connection); lease-table mode through transaction and statement pooling
// (every statement stands alone), as docs/leases.md says they work.
INSTANTIATE_TEST_SUITE_P(
    Pgbouncer, LeaseConformanceTest,
    ::testing::Values(
        LeaseBackendFactory{"advisory_session_pool",
                            [] {
                              return make_backend(
                                  shared_pgbouncer("session").conninfo(),
                                  Mode::kAdvisory);
                            }},
        LeaseBackendFactory{"table_transaction_pool",
                            [] {
                              return make_backend(
                                  shared_pgbouncer("transaction").conninfo(),
                                  Mode::kLeaseTable, 10s,
                                  /*notify_waiters=*/false);
                            }},
        LeaseBackendFactory{"table_statement_pool",
                            [] {
                              return make_backend(
                                  shared_pgbouncer("statement").conninfo(),
                                  Mode::kLeaseTable, 10s,
                                  /*notify_waiters=*/false);
                            }}),
    [](const auto& p) { return p.param.name; });

// A client connection through a pooler inside an open transaction: the
// pooler keeps one server connection for it until commit().
class PinnedServerSession {
 public:
  explicit PinnedServerSession(const std::string& conninfo)
      : c_(PQconnectdb(conninfo.c_str())) {
    if (PQstatus(c_) != CONNECTION_OK) {
      ADD_FAILURE() << "connect " << conninfo << ": " << PQerrorMessage(c_);
      return;
    }
    exec("BEGIN");
    PGresult* r = PQexec(c_, "SELECT pg_backend_pid()");
    if (PQresultStatus(r) == PGRES_TUPLES_OK) pid_ = PQgetvalue(r, 0, 0);
    PQclear(r);
  }
  ~PinnedServerSession() {
    commit();
    PQfinish(c_);
  }
  // The server session (backend pid) it holds.
  const std::string& pid() const { return pid_; }
  void commit() {
    if (!committed_) exec("COMMIT");
    committed_ = true;
  }

 private:
  void exec(const char* q) {
    PGresult* r = PQexec(c_, q);
    EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK)
        << q << ": " << PQresultErrorMessage(r);
    PQclear(r);
  }
  PGconn* c_;
  std::string pid_;
  bool committed_ = false;
};

std::string advisory_holders(const std::string& conninfo,
                             std::string_view key) {
  absl::StatusOr<std::string> n =
      sql(conninfo, "SELECT count(*) FROM pg_locks WHERE granted AND " +
                        advisory_where(key));
  return n.ok() ? *n : n.status().ToString();
}

TEST(PostgresPgbouncerTest,
     AdvisoryBehindTransactionPoolingIsRefusedAndLeavesNothingHeld) {
  PostgresServer& pg = shared_postgres();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PgbouncerServer> bouncer,
                       PgbouncerServer::start(pg, {.pool_mode = "transaction",
                                                   .pool_size = 2,
                                                   .round_robin = true}));
  {
    // Two transactions at once open both server connections; from now on
    // they are handed out in turn, so the statement after a grant runs in
    // the other one.
    PinnedServerSession a(bouncer->conninfo());
    PinnedServerSession b(bouncer->conninfo());
    ASSERT_NE(a.pid(), b.pid());
  }
  auto backend = make_backend(bouncer->conninfo(), Mode::kAdvisory);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(backend));
  const std::string key = "pgbouncer-transaction-pool";

  absl::StatusOr<std::optional<Lease>> tried = locks.try_acquire(key);
  EXPECT_TRUE(IsError(tried.status(), absl::StatusCode::kFailedPrecondition,
                      "transaction pooling", "was released there"));
  // The lock the grant took in the other server session did not stay there.
  EXPECT_EQ(advisory_holders(pg.conninfo(), key), "0");

  absl::StatusOr<Lease> waited = locks.acquire(key, {.timeout = 10s});
  EXPECT_TRUE(IsError(waited.status(), absl::StatusCode::kFailedPrecondition,
                      "transaction pooling", "was released there"));
  EXPECT_EQ(advisory_holders(pg.conninfo(), key), "0");

  // So the key is free for a direct client.
  auto direct = make_backend(pg.conninfo(), Mode::kAdvisory);
  ASSERT_OK_AND_ASSIGN(LeaseLock direct_locks, LeaseLock::create(direct));
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> d, direct_locks.try_acquire(key));
  EXPECT_TRUE(d.has_value());
}

TEST(PostgresPgbouncerTest,
     AdvisoryReleaseInAnotherServerSessionStillFreesTheLock) {
  // pgbouncer's default hands out the most recently used server connection:
  // the statement after the grant runs in the grant's session, so the acquire
  // passes the check; the release may not.
  PostgresServer& pg = shared_postgres();
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<PgbouncerServer> bouncer,
      PgbouncerServer::start(pg, {.pool_mode = "transaction", .pool_size = 2}));
  auto backend = make_backend(bouncer->conninfo(), Mode::kAdvisory);
  ASSERT_OK_AND_ASSIGN(LeaseLock locks, LeaseLock::create(backend));
  const std::string key = "pgbouncer-release";
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> lease, locks.try_acquire(key));
  ASSERT_TRUE(lease.has_value());
  ASSERT_OK_AND_ASSIGN(
      std::string holder,
      sql(pg.conninfo(),
          "SELECT pid FROM pg_locks WHERE granted AND " + advisory_where(key)));
  {
    // Other clients use the grant's server connection and a second one; the
    // second is returned last, so our release runs in it.
    PinnedServerSession p(bouncer->conninfo());
    ASSERT_EQ(p.pid(), holder);
    PinnedServerSession q(bouncer->conninfo());
    ASSERT_NE(q.pid(), holder);
    p.commit();
    q.commit();
  }
  absl::StatusOr<bool> released = lease->release();
  EXPECT_TRUE(IsError(released.status(), absl::StatusCode::kFailedPrecondition,
                      "transaction pooling", "was terminated to free it"));
  EXPECT_EQ(advisory_holders(pg.conninfo(), key), "0");
}

// libpq quotes parts of a connection string it cannot parse, the password
// among them; connection errors must never show it (nor a URL's userinfo).
TEST(PostgresRedactionTest, ConnectErrorsNeverShowThePassword) {
  const std::string port = std::to_string(free_port());  // nobody listens
  for (const std::string& conninfo : std::vector<std::string>{
           "postgresql://ci:s3cr%zzet@127.0.0.1:" + port + "/db",
           "host=127.0.0.1 port=" + port + " password=s3 cret",
           "postgresql://ci:s3cret@127.0.0.1:" + port + "/db?bogus=1",
           "postgresql://ci:s3cret@[::1/db",
           "host=127.0.0.1 port=" + port + " user=ci password=s3cret",
           "postgresql://ci:s3cret@127.0.0.1:" + port + "/db"}) {
    for (Mode mode : {Mode::kAdvisory, Mode::kLeaseTable}) {
      PostgresLeaseOptions o;
      o.conninfo = conninfo;
      o.mode = mode;
      o.io_timeout = 2s;
      absl::Status s = PostgresLeaseBackend::create(o).status();
      EXPECT_FALSE(s.ok()) << conninfo;
      EXPECT_EQ(s.message().find("s3"), std::string::npos)
          << conninfo << ": " << s;
      EXPECT_EQ(s.message().find("cret"), std::string::npos)
          << conninfo << ": " << s;
    }
  }
}

}  // namespace
}  // namespace tierlock::testing

// bench/lease_bench.cc
//
// Leases on real servers on loopback (started as the lease tests start them:
// tests/lease/servers.h), each row beside its baseline in the same run:
//   BM_Uncontended/<backend>/{lease,raw} - try_acquire + release through
//     LeaseLock, and the raw protocol doing the same work with the same client
//     library: hiredis SET NX PX + a compare-and-delete script; libpq upsert +
//     delete; SQLite statements in a write transaction.
//   BM_HandOff/<backend>/{woken,polled} - the holder's release() called ->
//     the waiter's acquire() returned (the waiter queued before), p50/p99 as
//     counters; `polled` hides the backend's wait primitive, so LeaseLock
//     falls back to its try_acquire backoff (the figure before woken waits).
// Not here: etcd (its cluster harness lives in the etcd test only), redis-py's
// Lock, `etcdctl lock` and flock(1) (docs/perf.md, lease section).
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "lease/servers.h"
#include "support/temp_dir.h"
#include "tierlock/lease.h"
#include "tierlock/lease_postgres.h"
#include "tierlock/lease_redis.h"
#include "tierlock/lease_sqlite.h"

namespace tierlock::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Servers for the whole run, stopped at exit (their destructors).
struct Servers {
  std::unique_ptr<RedisServer> redis;
  std::unique_ptr<PostgresServer> postgres;
  TempDir dir;
  std::string sqlite_path;
};

void start_servers(Servers& out) {
  absl::StatusOr<std::unique_ptr<RedisServer>> r = RedisServer::start();
  absl::StatusOr<std::unique_ptr<PostgresServer>> p = PostgresServer::start();
  if (!r.ok() || !p.ok()) {
    std::fprintf(stderr, "lease_bench: servers: %s / %s\n",
                 r.status().ToString().c_str(), p.status().ToString().c_str());
    std::abort();
  }
  out.redis = *std::move(r);
  out.postgres = *std::move(p);
  out.sqlite_path = (out.dir.path() / "leases.db").string();
}

// Destroyed at exit: stops the servers, removes the directories.
Servers& servers() {
  static Servers s;
  static const bool started = (start_servers(s), true);
  (void)started;
  return s;
}

// A backend of each kind, made once.
std::shared_ptr<LeaseBackend> backend(const std::string& name) {
  Servers& s = servers();
  if (name == "redis") {
    RedisLeaseOptions o;
    o.port = s.redis->port();
    return *RedisLeaseBackend::create(o);
  }
  if (name == "postgres_table") {
    PostgresLeaseOptions o;
    o.conninfo = s.postgres->conninfo();
    o.mode = PostgresLeaseOptions::Mode::kLeaseTable;
    return *PostgresLeaseBackend::create(o);
  }
  SqliteLeaseOptions o;
  o.path = s.sqlite_path;
  return *SqliteLeaseBackend::create(o);
}

LeaseLock locks(std::shared_ptr<LeaseBackend> b) {
  return *LeaseLock::create(std::move(b), {.ttl = 30s});
}

// ----------------------------------------------------------- uncontended

void BM_UncontendedLease(benchmark::State& state, const char* name) {
  LeaseLock l = locks(backend(name));
  const std::string key = absl::StrCat("bench-unc-", name);
  for (auto _ : state) {
    absl::StatusOr<std::optional<Lease>> lease = l.try_acquire(key);
    if (!lease.ok() || !lease->has_value() || !*(*lease)->release()) {
      state.SkipWithError("lease try_acquire/release failed");
      return;
    }
  }
}

constexpr const char* kRedisRelease =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('DEL', KEYS[1]) else return 0 end";

void BM_UncontendedRawRedis(benchmark::State& state) {
  redisContext* c = redisConnect("127.0.0.1", servers().redis->port());
  auto* loaded = static_cast<redisReply*>(
      redisCommand(c, "SCRIPT LOAD %s", kRedisRelease));
  const std::string sha = loaded->str;
  freeReplyObject(loaded);
  for (auto _ : state) {
    auto* set = static_cast<redisReply*>(
        redisCommand(c, "SET bench-raw owner-0123456789 NX PX 30000"));
    const bool got = set != nullptr && set->type == REDIS_REPLY_STATUS;
    freeReplyObject(set);
    auto* del = static_cast<redisReply*>(redisCommand(
        c, "EVALSHA %s 1 bench-raw owner-0123456789", sha.c_str()));
    freeReplyObject(del);
    if (!got) {
      state.SkipWithError("raw SET NX failed");
      break;
    }
  }
  redisFree(c);
}

void BM_UncontendedRawPostgres(benchmark::State& state) {
  PGconn* c = PQconnectdb(servers().postgres->conninfo().c_str());
  PQclear(PQexec(c, "SET client_min_messages = warning"));
  PQclear(PQexec(c,
                 "CREATE TABLE IF NOT EXISTS bench_raw (key text PRIMARY KEY, "
                 "owner text NOT NULL, expires_at timestamptz NOT NULL)"));
  const char* params[] = {"bench-raw", "owner-0123456789"};
  for (auto _ : state) {
    PGresult* up = PQexecParams(
        c,
        "INSERT INTO bench_raw VALUES ($1, $2, clock_timestamp() + "
        "interval '30 s') ON CONFLICT (key) DO UPDATE SET owner = "
        "EXCLUDED.owner, expires_at = EXCLUDED.expires_at WHERE "
        "bench_raw.expires_at <= clock_timestamp() RETURNING 1",
        2, nullptr, params, nullptr, nullptr, 0);
    const bool got = PQresultStatus(up) == PGRES_TUPLES_OK && PQntuples(up);
    PQclear(up);
    PQclear(PQexecParams(c,
                         "DELETE FROM bench_raw WHERE key = $1 AND owner = $2",
                         2, nullptr, params, nullptr, nullptr, 0));
    if (!got) {
      state.SkipWithError("raw upsert failed");
      break;
    }
  }
  PQfinish(c);
}

void BM_UncontendedRawSqlite(benchmark::State& state) {
  sqlite3* db = nullptr;
  sqlite3_open((servers().dir.path() / "raw.db").c_str(), &db);
  sqlite3_exec(db,
               "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE "
               "TABLE IF NOT EXISTS l (key TEXT PRIMARY KEY, owner TEXT, "
               "expires_ns INTEGER)",
               nullptr, nullptr, nullptr);
  sqlite3_stmt *begin, *ins, *commit, *del;
  sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin, nullptr);
  sqlite3_prepare_v2(
      db,
      "INSERT INTO l VALUES ('bench-raw', 'owner', ?1) ON "
      "CONFLICT(key) DO UPDATE SET owner = excluded.owner, "
      "expires_ns = excluded.expires_ns WHERE l.expires_ns <= ?2",
      -1, &ins, nullptr);
  sqlite3_prepare_v2(db, "COMMIT", -1, &commit, nullptr);
  sqlite3_prepare_v2(db,
                     "DELETE FROM l WHERE key = 'bench-raw' AND owner = "
                     "'owner'",
                     -1, &del, nullptr);
  for (auto _ : state) {
    const auto now = Clock::now().time_since_epoch().count();
    sqlite3_step(begin);
    sqlite3_reset(begin);
    sqlite3_bind_int64(ins, 1, now + 30'000'000'000);
    sqlite3_bind_int64(ins, 2, now);
    sqlite3_step(ins);
    sqlite3_reset(ins);
    sqlite3_step(commit);
    sqlite3_reset(commit);
    sqlite3_step(del);  // autocommit: its own write transaction
    sqlite3_reset(del);
  }
  for (sqlite3_stmt* s : {begin, ins, commit, del}) sqlite3_finalize(s);
  sqlite3_close(db);
}

// -------------------------------------------------------------- hand-off

// The backend with its wait primitive hidden: LeaseLock polls try_acquire.
class PollingOnly final : public LeaseBackend {
 public:
  explicit PollingOnly(std::shared_ptr<LeaseBackend> b) : b_(std::move(b)) {}
  std::string_view name() const override { return b_->name(); }
  LeaseCapabilities capabilities() const override { return b_->capabilities(); }
  absl::StatusOr<std::unique_ptr<LeaseSession>> try_acquire(
      const LeaseRequest& r) override {
    return b_->try_acquire(r);
  }

 private:
  std::shared_ptr<LeaseBackend> b_;
};

// Hand-offs measured one at a time: the holder takes the key, a waiter
// thread calls acquire(), the holder releases `settle` later (time for the
// waiter to queue, and for a poller's backoff to grow), and the time from
// release() called to acquire() returned is one sample.
void BM_HandOff(benchmark::State& state, const char* name, bool polled) {
  std::shared_ptr<LeaseBackend> b = backend(name);
  LeaseLock holder = locks(b);
  LeaseLock waiter = locks(polled ? std::make_shared<PollingOnly>(b) : b);
  const std::string key = absl::StrCat("bench-hand-", name, polled ? "-p" : "");
  const auto settle = std::chrono::milliseconds(state.range(0));
  std::vector<double> samples;
  for (auto _ : state) {
    absl::StatusOr<std::optional<Lease>> h = holder.try_acquire(key);
    if (!h.ok() || !h->has_value()) {
      state.SkipWithError("holder could not take the key");
      return;
    }
    std::atomic<Clock::rep> granted{0};
    std::thread t([&] {
      absl::StatusOr<Lease> l = waiter.acquire(key, {.timeout = 30s});
      granted = Clock::now().time_since_epoch().count();
      if (l.ok()) (void)l->release();
    });
    std::this_thread::sleep_for(settle);
    const Clock::time_point released = Clock::now();
    (void)(*h)->release();
    t.join();
    const double us =
        std::chrono::duration<double, std::micro>(
            Clock::time_point(Clock::duration(granted.load())) - released)
            .count();
    samples.push_back(us);
    state.SetIterationTime(us / 1e6);
  }
  std::sort(samples.begin(), samples.end());
  if (samples.empty()) return;
  auto at = [&](double q) {
    return samples[std::min(
        samples.size() - 1,
        static_cast<std::size_t>(q * static_cast<double>(samples.size())))];
  };
  state.counters["p50_us"] = at(0.50);
  state.counters["p99_us"] = at(0.99);
}

void register_all() {
  for (const char* name : {"redis", "postgres_table", "sqlite"}) {
    benchmark::RegisterBenchmark(
        absl::StrCat("BM_Uncontended/", name, "/lease").c_str(),
        BM_UncontendedLease, name);
    for (bool polled : {false, true}) {
      benchmark::RegisterBenchmark(
          absl::StrCat("BM_HandOff/", name, polled ? "/polled" : "/woken")
              .c_str(),
          BM_HandOff, name, polled)
          ->Arg(50)
          ->Iterations(40)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
  benchmark::RegisterBenchmark("BM_Uncontended/redis/raw",
                               BM_UncontendedRawRedis);
  benchmark::RegisterBenchmark("BM_Uncontended/postgres_table/raw",
                               BM_UncontendedRawPostgres);
  benchmark::RegisterBenchmark("BM_Uncontended/sqlite/raw",
                               BM_UncontendedRawSqlite);
}

}  // namespace
}  // namespace tierlock::testing

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  tierlock::testing::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

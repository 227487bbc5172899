// tests/lease/lease_wait_test.cc
//
// How waiters wait on the Redis, PostgreSQL lease-table and SQLite backends
// (docs/leases.md, "How waiters wait"), against real servers: woken by the
// release (hand-off latency measured beside the front's polling on the same
// backend), served in arrival order, a SIGKILLed waiter leaves the queue and
// the next gets the key, no wake-up lost when the release races the
// subscription, a cancelled or timed-out waiter leaves the queue at once, and
// a try does not barge past a queued waiter.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <random>
#include <stop_token>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "lease/history.h"
#include "lease/servers.h"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "tierlock/lease.h"

#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
#include <libpq-fe.h>

#include "tierlock/lease_postgres.h"
#endif
#ifdef TIERLOCK_HAVE_LEASE_SQLITE
#include <sqlite3.h>

#include "tierlock/lease_sqlite.h"
#endif
#ifdef TIERLOCK_HAVE_LEASE_REDIS
#include "tierlock/lease_redis.h"
#endif

namespace tierlock::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct WaitBackend {
  std::string name;
  std::function<std::shared_ptr<LeaseBackend>()> make;
  std::function<std::string()> spec;  // for tl_lease_helper (backend_spec.h)
  // Entries in `key`'s queue of waiters, live or not yet purged; -1 if the
  // service could not be asked.
  std::function<int(const std::string& key)> queued;
};
std::string PrintToString(const WaitBackend& b) { return b.name; }

template <typename T>
std::shared_ptr<LeaseBackend> checked(absl::StatusOr<std::shared_ptr<T>> b) {
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : nullptr;
}

std::vector<WaitBackend> backends() {
  std::vector<WaitBackend> out;
#ifdef TIERLOCK_HAVE_LEASE_REDIS
  out.push_back(
      {"redis",
       [] {
         RedisLeaseOptions o;
         o.port = shared_redis().port();
         return checked(RedisLeaseBackend::create(o));
       },
       [] { return absl::StrCat("redis:127.0.0.1:", shared_redis().port()); },
       [](const std::string& key) {
         absl::StatusOr<std::string> n = shared_redis().cli(
             absl::StrCat("ZCARD 'tierlock:{", key, "}:waiters'"));
         int v = -1;
         return n.ok() && absl::SimpleAtoi(*n, &v) ? v : -1;
       }});
#endif
#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
  out.push_back(
      {"postgres_table",
       [] {
         PostgresLeaseOptions o;
         o.conninfo = shared_postgres().conninfo();
         o.mode = PostgresLeaseOptions::Mode::kLeaseTable;
         return checked(PostgresLeaseBackend::create(o));
       },
       [] { return "postgres-table:" + shared_postgres().conninfo(); },
       [](const std::string& key) {
         PGconn* c = PQconnectdb(shared_postgres().conninfo().c_str());
         int v = -1;
         const char* params[] = {key.c_str()};
         PGresult* r = PQexecParams(
             c, "SELECT count(*) FROM tierlock_leases_waiters WHERE key = $1",
             1, nullptr, params, nullptr, nullptr, 0);
         if (PQresultStatus(r) == PGRES_TUPLES_OK)
           (void)absl::SimpleAtoi(PQgetvalue(r, 0, 0), &v);
         PQclear(r);
         PQfinish(c);
         return v;
       }});
#endif
#ifdef TIERLOCK_HAVE_LEASE_SQLITE
  static TempDir* dir =
      new TempDir;  // lives until exit, like the shared servers
  static const std::string path = (dir->path() / "leases.db").string();
  out.push_back(
      {"sqlite",
       [] {
         SqliteLeaseOptions o;
         o.path = path;
         return checked(SqliteLeaseBackend::create(o));
       },
       [] { return "sqlite:" + path; },
       [](const std::string& key) {
         sqlite3* db = nullptr;
         int v = -1;
         if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY,
                             nullptr) == SQLITE_OK) {
           sqlite3_stmt* s = nullptr;
           if (sqlite3_prepare_v2(
                   db,
                   "SELECT count(*) FROM tierlock_lease_waiters WHERE key = ?1",
                   -1, &s, nullptr) == SQLITE_OK) {
             sqlite3_bind_text(s, 1, key.data(), static_cast<int>(key.size()),
                               SQLITE_TRANSIENT);
             if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int(s, 0);
           }
           sqlite3_finalize(s);
         }
         sqlite3_close_v2(db);
         return v;
       }});
#endif
  return out;
}

// The backend with its wait primitive hidden: LeaseLock then polls
// try_acquire with its backoff (the figure the woken wait is measured
// against).
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

class LeaseWaitTest : public ::testing::TestWithParam<WaitBackend> {
 protected:
  void SetUp() override {
    backend_ = GetParam().make();
    ASSERT_NE(backend_, nullptr);
    const ::testing::TestInfo* t =
        ::testing::UnitTest::GetInstance()->current_test_info();
    key_ = absl::StrCat("wait/", t->name(), "/", ::getpid());
    std::replace(key_.begin(), key_.end(), '/', '-');
  }
  int queued() { return GetParam().queued(key_); }
  // Waits until `n` entries are in the key's queue.
  bool wait_queued(int n) {
    return wait_until([&] { return queued() == n; }, 20s);
  }
  LeaseLock locks(std::chrono::milliseconds ttl,
                  std::shared_ptr<LeaseBackend> b = nullptr) {
    absl::StatusOr<LeaseLock> l =
        LeaseLock::create(b ? b : backend_, {.ttl = ttl});
    EXPECT_TRUE(l.ok()) << l.status();
    return *std::move(l);
  }

  std::shared_ptr<LeaseBackend> backend_;
  std::string key_;
};

double ms_of(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// Hand-off latency, release() called by the holder -> acquire() returned in
// the waiter, over `rounds` hand-offs, each after the waiter has waited
// `held_for` (long enough for a poller's backoff to reach its 100 ms steps).
// `queued` tells when the waiter is waiting (null: no queue to look at).
std::vector<double> hand_offs(LeaseLock& holder_locks, LeaseLock& waiter_locks,
                              const std::string& key, int rounds,
                              std::chrono::milliseconds held_for,
                              const std::function<bool()>& queued) {
  std::vector<double> out;
  for (int i = 0; i < rounds; ++i) {
    absl::StatusOr<std::optional<Lease>> holder = holder_locks.try_acquire(key);
    EXPECT_TRUE(holder.ok() && holder->has_value())
        << key << ": " << holder.status();
    if (!holder.ok() || !holder->has_value()) return out;
    std::atomic<std::int64_t> granted{0};
    std::thread waiter([&] {
      absl::StatusOr<Lease> l = waiter_locks.acquire(key, {.timeout = 30s});
      granted = Clock::now().time_since_epoch().count();
      EXPECT_TRUE(l.ok()) << key << ": " << l.status();
      if (l.ok()) {
        EXPECT_OK(l->release());
      }
    });
    if (queued) {
      EXPECT_TRUE(queued()) << key << ": the waiter never queued";
    }
    // The waiter's time in the wait: what makes a poller slow.
    std::this_thread::sleep_for(held_for);
    const Clock::time_point released = Clock::now();
    EXPECT_OK((*holder)->release());
    waiter.join();
    out.push_back(
        ms_of(Clock::time_point(Clock::duration(granted.load())) - released));
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST_P(LeaseWaitTest, HandOffWakesTheWaiterAtOnceUnlikePolling) {
  LeaseLock l = locks(30s);
  constexpr int kRounds = 7;
  const std::vector<double> woken =
      hand_offs(l, l, key_, kRounds, 300ms, [&] { return wait_queued(1); });
  LeaseLock polling = locks(30s, std::make_shared<PollingOnly>(backend_));
  const std::vector<double> polled =
      hand_offs(l, polling, key_, kRounds, 300ms, nullptr);
  ASSERT_EQ(woken.size(), static_cast<std::size_t>(kRounds));
  ASSERT_EQ(polled.size(), static_cast<std::size_t>(kRounds));
  std::printf(
      "[ figures  ] %s hand-off after 300 ms queued, %d rounds: woken median "
      "%.2f ms "
      "(min %.2f, max %.2f); polled median %.2f ms (min %.2f, max %.2f)\n",
      GetParam().name.c_str(), kRounds, woken[kRounds / 2], woken.front(),
      woken.back(), polled[kRounds / 2], polled.front(), polled.back());
  // Expected 1-3 ms on loopback; a poller's step is 50-100 ms by then.
  EXPECT_LT(woken[kRounds / 2], 25.0);
  EXPECT_EQ(queued(), 0);
}

TEST_P(LeaseWaitTest, ThreeWaitersAreGrantedInArrivalOrder) {
  LeaseLock l = locks(30s);
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> holder, l.try_acquire(key_));
  ASSERT_TRUE(holder.has_value());
  std::mutex mu;
  std::vector<int> order;
  std::vector<std::uint64_t> tokens;
  std::vector<std::thread> waiters;
  constexpr int kWaiters = 4;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&, i] {
      absl::StatusOr<Lease> lease = l.acquire(key_, {.timeout = 30s});
      {
        std::lock_guard<std::mutex> lk(mu);
        order.push_back(lease.ok() ? i : -1);
        if (lease.ok()) tokens.push_back(*lease->token());
      }
      if (lease.ok()) {
        EXPECT_OK(lease->release());
      }
    });
    // Arrival order: the next waiter starts once this one is queued.
    ASSERT_TRUE(wait_queued(i + 1))
        << key_ << ": waiter " << i << " never queued";
  }
  ASSERT_OK(holder->release());
  for (std::thread& t : waiters) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
  ASSERT_EQ(tokens.size(), static_cast<std::size_t>(kWaiters));
  EXPECT_TRUE(std::is_sorted(tokens.begin(), tokens.end()));
  EXPECT_LT(*holder->token(), tokens[0]);
  EXPECT_EQ(queued(), 0);
}

TEST_P(LeaseWaitTest,
       KilledWaiterLeavesTheQueueWithinItsTtlAndTheNextGetsTheKey) {
  constexpr auto kTtl = 1000ms;
  LeaseLock l = locks(30s);
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> holder, l.try_acquire(key_));
  ASSERT_TRUE(holder.has_value());
  Process first =
      Process::spawn({lease_helper_path(), "hold", GetParam().spec(), key_,
                      std::to_string(kTtl.count())});
  ASSERT_TRUE(wait_queued(1)) << key_ << ": the helper never queued";
  LeaseLock next_locks = locks(kTtl);
  std::atomic<std::int64_t> granted{0};
  std::thread next([&] {
    absl::StatusOr<Lease> lease = next_locks.acquire(key_, {.timeout = 30s});
    granted = Clock::now().time_since_epoch().count();
    EXPECT_TRUE(lease.ok()) << key_ << ": " << lease.status();
  });
  ASSERT_TRUE(wait_queued(2)) << key_ << ": the second waiter never queued";
  ::kill(first.pid(), SIGKILL);
  EXPECT_EQ(first.wait().code, 128 + SIGKILL);
  const Clock::time_point released = Clock::now();
  ASSERT_OK(holder->release());
  next.join();
  const double ms =
      ms_of(Clock::time_point(Clock::duration(granted.load())) - released);
  std::printf(
      "[ figures  ] %s: the waiter behind a SIGKILLed one (ttl %lld ms) got "
      "the key "
      "%.1f ms after the release\n",
      GetParam().name.c_str(), static_cast<long long>(kTtl.count()), ms);
  EXPECT_LT(ms, kTtl.count() + 1000.0);
  EXPECT_EQ(queued(), 0);
}

TEST_P(LeaseWaitTest, NoWakeUpIsMissedWhenTheReleaseRacesTheSubscription) {
  // A missed wake-up would leave the waiter to its refresh period (10 s).
  LeaseLock l = locks(30s);
  std::minstd_rand rng(42);
  double worst = 0;
  constexpr int kRounds = 40;
  for (int i = 0; i < kRounds; ++i) {
    ASSERT_OK_AND_ASSIGN(std::optional<Lease> holder, l.try_acquire(key_));
    ASSERT_TRUE(holder.has_value()) << key_ << ": round " << i;
    std::atomic<std::int64_t> waited{-1};
    std::thread waiter([&] {
      const Clock::time_point start = Clock::now();
      absl::StatusOr<Lease> lease = l.acquire(key_, {.timeout = 8s});
      waited = (Clock::now() - start).count();
      EXPECT_TRUE(lease.ok())
          << key_ << ": round " << i << ": " << lease.status();
    });
    // Releases at a varying point of the waiter's try, subscribe, join.
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 4000));
    ASSERT_OK(holder->release());
    waiter.join();
    worst = std::max(worst, ms_of(Clock::duration(waited.load())));
  }
  std::printf(
      "[ figures  ] %s: %d racing releases, slowest grant %.1f ms after the "
      "acquire\n",
      GetParam().name.c_str(), kRounds, worst);
  EXPECT_LT(worst, 2000.0);
  EXPECT_EQ(queued(), 0);
}

TEST_P(LeaseWaitTest, CancelledOrTimedOutWaiterLeavesTheQueueAtOnce) {
  LeaseLock l = locks(30s);
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> holder, l.try_acquire(key_));
  ASSERT_TRUE(holder.has_value());
  std::stop_source stop;
  std::thread waiter([&] {
    absl::StatusOr<Lease> lease = l.acquire(key_, {.stop = stop.get_token()});
    EXPECT_EQ(lease.status().code(), absl::StatusCode::kCancelled)
        << lease.status();
  });
  ASSERT_TRUE(wait_queued(1));
  stop.request_stop();
  waiter.join();
  EXPECT_EQ(queued(), 0) << key_ << ": the cancelled waiter is still queued";
  absl::StatusOr<Lease> timed_out = l.acquire(key_, {.timeout = 200ms});
  EXPECT_EQ(timed_out.status().code(), absl::StatusCode::kDeadlineExceeded)
      << timed_out.status();
  EXPECT_EQ(queued(), 0) << key_ << ": the timed-out waiter is still queued";
  // With nobody queued, a try takes the released key.
  ASSERT_OK(holder->release());
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> again, l.try_acquire(key_));
  EXPECT_TRUE(again.has_value());
}

TEST_P(LeaseWaitTest, TryDoesNotBargePastAQueuedWaiter) {
  LeaseLock l = locks(30s);
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> holder, l.try_acquire(key_));
  ASSERT_TRUE(holder.has_value());
  Process waiter = Process::spawn(
      {lease_helper_path(), "hold", GetParam().spec(), key_, "10000"});
  ASSERT_TRUE(wait_queued(1));
  // Stopped, it cannot take the key at its wake: the key stays free while
  // its place (ttl 10 s) is live, and a try must not take it.
  ASSERT_EQ(::kill(waiter.pid(), SIGSTOP), 0);
  ASSERT_OK(holder->release());
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> barged, l.try_acquire(key_));
  EXPECT_FALSE(barged.has_value())
      << key_ << ": a try took the key past a queued waiter";
  ASSERT_EQ(::kill(waiter.pid(), SIGCONT), 0);
  std::optional<std::string> line = waiter.read_line(20s);
  ASSERT_TRUE(line.has_value());
  EXPECT_TRUE(line->starts_with("held ")) << *line;
  waiter.close_stdin();
  EXPECT_EQ(waiter.wait().code, 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, LeaseWaitTest,
                         ::testing::ValuesIn(backends()),
                         [](const auto& p) { return p.param.name; });

}  // namespace
}  // namespace tierlock::testing

// tests/lease/lease_async_test.cc
//
// LeaseLock::acquire_async against the in-memory backend and real Redis,
// PostgreSQL lease-table and SQLite services: many concurrent waiters on one
// key are all granted, one at a time, while the process's thread count stays
// bounded; queued waiters are granted in arrival order; a cancelled or
// timed-out waiter completes at once and leaves the service's queue; the
// future and callback forms; the executor is honoured.
#include <dirent.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <set>
#include <stop_token>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lease/servers.h"
#include "support/status.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "tierlock/executor.h"
#include "tierlock/lease.h"
#include "tierlock/lease_memory.h"

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

struct AsyncBackend {
  std::string name;
  std::function<std::shared_ptr<LeaseBackend>()> make;
  // Entries in `key`'s queue of waiters; null: the backend has no queue.
  std::function<int(const std::string& key)> queued;
  // Concurrent waiters for the many-waiters test: each queued waiter holds
  // one wake descriptor (on PostgreSQL a LISTEN connection, and the test
  // server allows 100).
  int many = 200;
};
std::string PrintToString(const AsyncBackend& b) { return b.name; }

template <typename T>
std::shared_ptr<LeaseBackend> checked(absl::StatusOr<std::shared_ptr<T>> b) {
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : nullptr;
}

std::vector<AsyncBackend> backends() {
  std::vector<AsyncBackend> out;
  out.push_back(
      {"memory", [] { return MemoryLeaseBackend::create(); }, nullptr, 200});
#ifdef TIERLOCK_HAVE_LEASE_REDIS
  out.push_back({"redis",
                 [] {
                   RedisLeaseOptions o;
                   o.port = shared_redis().port();
                   return checked(RedisLeaseBackend::create(o));
                 },
                 [](const std::string& key) {
                   absl::StatusOr<std::string> n = shared_redis().cli(
                       absl::StrCat("ZCARD 'tierlock:{", key, "}:waiters'"));
                   int v = -1;
                   return n.ok() && absl::SimpleAtoi(*n, &v) ? v : -1;
                 },
                 200});
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
       },
       60});
#endif
#ifdef TIERLOCK_HAVE_LEASE_SQLITE
  static TempDir* dir = new TempDir;  // lives until exit, like the servers
  static const std::string path = (dir->path() / "leases.db").string();
  out.push_back(
      {"sqlite",
       [] {
         SqliteLeaseOptions o;
         o.path = path;
         return checked(SqliteLeaseBackend::create(o));
       },
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
       },
       200});
#endif
  return out;
}

// Threads of this process now.
int thread_count() {
  DIR* d = ::opendir("/proc/self/task");
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

// Runs tasks on one thread of its own, to check completions land there.
class OneThreadExecutor final : public Executor {
 public:
  OneThreadExecutor() : thread_([this] { run(); }) {}
  ~OneThreadExecutor() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      closed_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void execute(absl::AnyInvocable<void() &&> task) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_all();
  }
  std::thread::id id() const { return thread_.get_id(); }

 private:
  void run() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [&] { return closed_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      auto t = std::move(tasks_.front());
      tasks_.pop_front();
      lk.unlock();
      std::move(t)();
      lk.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<absl::AnyInvocable<void() &&>> tasks_;
  bool closed_ = false;
  std::thread thread_;
};

class LeaseAsyncTest : public ::testing::TestWithParam<AsyncBackend> {
 protected:
  void SetUp() override {
    backend_ = GetParam().make();
    ASSERT_NE(backend_, nullptr);
    const ::testing::TestInfo* t =
        ::testing::UnitTest::GetInstance()->current_test_info();
    key_ = absl::StrCat("async-", t->name(), "-", ::getpid());
  }
  bool has_queue() const { return GetParam().queued != nullptr; }
  int queued() { return has_queue() ? GetParam().queued(key_) : 0; }
  bool wait_queued(int n) {
    if (!has_queue()) return true;
    return wait_until([&] { return queued() == n; }, 60s);
  }
  LeaseLock locks(std::chrono::milliseconds ttl = 30s) {
    absl::StatusOr<LeaseLock> l = LeaseLock::create(backend_, {.ttl = ttl});
    EXPECT_TRUE(l.ok()) << l.status();
    return *std::move(l);
  }

  std::shared_ptr<LeaseBackend> backend_;
  std::string key_;
};

TEST_P(LeaseAsyncTest, UncontendedFutureIsGrantedAtOnce) {
  LeaseLock l = locks();
  std::future<absl::StatusOr<Lease>> f = l.acquire_async(key_);
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready) << key_;
  absl::StatusOr<Lease> lease = f.get();
  ASSERT_OK(lease.status());
  EXPECT_TRUE(lease->held());
  EXPECT_EQ(lease->key(), key_);
  EXPECT_TRUE(*lease->release());
}

TEST_P(LeaseAsyncTest, ManyWaitersAreAllGrantedInTurnWithBoundedThreads) {
  LeaseLock l = locks();
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> holder, l.try_acquire(key_));
  ASSERT_TRUE(holder.has_value());
  const int n = GetParam().many;
  const int threads_before = thread_count();
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  int failed = 0;
  std::atomic<int> holding{0};
  std::atomic<int> overlaps{0};
  std::set<std::uint64_t> tokens;
  for (int i = 0; i < n; ++i) {
    l.acquire_async(key_, {.timeout = 120s}, [&](absl::StatusOr<Lease> lease) {
      if (lease.ok()) {
        if (holding.fetch_add(1) != 0) overlaps.fetch_add(1);
        const std::optional<std::uint64_t> token = lease->token();
        holding.fetch_sub(1);
        // Released here, on the pool: the next waiter is woken by it.
        (void)lease->release();
        std::lock_guard<std::mutex> lk(mu);
        if (token) tokens.insert(*token);
      } else {
        ADD_FAILURE() << key_ << ": " << lease.status();
      }
      std::lock_guard<std::mutex> lk(mu);
      ++done;
      if (!lease.ok()) ++failed;
      cv.notify_all();
    });
  }
  ASSERT_TRUE(wait_queued(n))
      << key_ << ": " << queued() << " of " << n << " waiters queued";
  const int threads_waiting = thread_count();
  // One poller thread, the global pool's two workers and the backend's
  // connector and renewal threads, whatever n is.
  EXPECT_LE(threads_waiting, threads_before + 8)
      << key_ << ": " << n << " async waiters took "
      << threads_waiting - threads_before << " threads";
  std::printf("[ figures  ] %s: %d async waiters, threads %d -> %d\n",
              GetParam().name.c_str(), n, threads_before, threads_waiting);
  const Clock::time_point released = Clock::now();
  ASSERT_OK(holder->release());
  {
    std::unique_lock<std::mutex> lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, 180s, [&] { return done == n; }))
        << key_ << ": " << done << " of " << n << " completed";
  }
  std::printf("[ figures  ] %s: %d hand-offs in %.1f ms\n",
              GetParam().name.c_str(), n,
              std::chrono::duration<double, std::milli>(Clock::now() - released)
                  .count());
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(overlaps.load(), 0) << key_ << ": two waiters held it at once";
  if (backend_->capabilities().fencing) {
    EXPECT_EQ(static_cast<int>(tokens.size()), n) << key_;
  }
  EXPECT_EQ(queued(), 0);
}

TEST_P(LeaseAsyncTest, QueuedWaitersAreGrantedInArrivalOrder) {
  if (!has_queue()) GTEST_SKIP() << "no queue: polled, unordered";
  LeaseLock l = locks();
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> holder, l.try_acquire(key_));
  ASSERT_TRUE(holder.has_value());
  std::mutex mu;
  std::vector<int> order;
  std::vector<std::future<void>> ends;
  for (int i = 0; i < 4; ++i) {
    auto p = std::make_shared<std::promise<void>>();
    ends.push_back(p->get_future());
    l.acquire_async(key_, {.timeout = 60s},
                    [&, i, p](absl::StatusOr<Lease> lease) {
                      {
                        std::lock_guard<std::mutex> lk(mu);
                        order.push_back(i);
                      }
                      EXPECT_OK(lease.status());
                      if (lease.ok()) (void)lease->release();
                      p->set_value();
                    });
    ASSERT_TRUE(wait_queued(i + 1)) << key_;
  }
  ASSERT_OK(holder->release());
  for (auto& e : ends) ASSERT_EQ(e.wait_for(60s), std::future_status::ready);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
}

TEST_P(LeaseAsyncTest, CancelMidWaitCompletesAtOnceAndLeavesTheQueue) {
  LeaseLock l = locks();
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> holder, l.try_acquire(key_));
  ASSERT_TRUE(holder.has_value());
  std::stop_source stop;
  std::future<absl::StatusOr<Lease>> f =
      l.acquire_async(key_, {.stop = stop.get_token()});
  ASSERT_TRUE(wait_queued(1)) << key_;
  ASSERT_EQ(f.wait_for(100ms), std::future_status::timeout);
  const Clock::time_point t0 = Clock::now();
  stop.request_stop();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready)
      << key_ << ": cancel did not complete";
  const double ms =
      std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  absl::StatusOr<Lease> lease = f.get();
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kCancelled)
      << lease.status();
  // Expected a round trip (the leave); ten times a slow one.
  EXPECT_LT(ms, 1000.0) << key_;
  EXPECT_EQ(queued(), 0) << key_ << ": the cancelled waiter is still queued";
  // Nothing held: with the holder gone, a try takes the key.
  ASSERT_OK(holder->release());
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> again, l.try_acquire(key_));
  EXPECT_TRUE(again.has_value()) << key_;
}

TEST_P(LeaseAsyncTest, AlreadyStoppedTokenIsCancelledWithoutWaiting) {
  LeaseLock l = locks();
  std::stop_source stop;
  stop.request_stop();
  std::future<absl::StatusOr<Lease>> f =
      l.acquire_async(key_, {.stop = stop.get_token()});
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get().status().code(), absl::StatusCode::kCancelled);
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> free, l.try_acquire(key_));
  EXPECT_TRUE(free.has_value()) << key_ << ": the cancelled acquire took it";
}

TEST_P(LeaseAsyncTest, TimeoutCompletesWithDeadlineExceededAndLeavesTheQueue) {
  LeaseLock l = locks();
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> holder, l.try_acquire(key_));
  ASSERT_TRUE(holder.has_value());
  const Clock::time_point t0 = Clock::now();
  std::future<absl::StatusOr<Lease>> f =
      l.acquire_async(key_, {.timeout = 300ms});
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready) << key_;
  const auto waited = Clock::now() - t0;
  absl::StatusOr<Lease> lease = f.get();
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kDeadlineExceeded)
      << lease.status();
  EXPECT_NE(lease.status().message().find(key_), std::string::npos)
      << lease.status();
  EXPECT_GE(waited, 300ms);
  EXPECT_EQ(queued(), 0) << key_ << ": the timed-out waiter is still queued";
  // A zero timeout is one try.
  std::future<absl::StatusOr<Lease>> once =
      l.acquire_async(key_, {.timeout = 0s});
  ASSERT_EQ(once.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(once.get().status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_P(LeaseAsyncTest, CallbackRunsOnTheGivenExecutorAndPool) {
  LeaseLock l = locks();
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> holder, l.try_acquire(key_));
  ASSERT_TRUE(holder.has_value());
  OneThreadExecutor executor;
  WorkerPool pool(1);
  std::promise<std::thread::id> ran_on;
  std::promise<absl::StatusOr<Lease>> result;
  l.acquire_async(key_, {.timeout = 60s, .pool = &pool, .executor = &executor},
                  [&](absl::StatusOr<Lease> lease) {
                    ran_on.set_value(std::this_thread::get_id());
                    result.set_value(std::move(lease));
                  });
  ASSERT_TRUE(wait_queued(1)) << key_;
  ASSERT_OK(holder->release());
  std::future<absl::StatusOr<Lease>> f = result.get_future();
  ASSERT_EQ(f.wait_for(30s), std::future_status::ready) << key_;
  EXPECT_EQ(ran_on.get_future().get(), executor.id());
  absl::StatusOr<Lease> lease = f.get();
  ASSERT_OK(lease.status());
  EXPECT_TRUE(*lease->release());
}

TEST_P(LeaseAsyncTest, DroppedFutureReleasesALaterGrant) {
  LeaseLock l = locks();
  ASSERT_OK_AND_ASSIGN(std::optional<Lease> holder, l.try_acquire(key_));
  ASSERT_TRUE(holder.has_value());
  { (void)l.acquire_async(key_, {.timeout = 60s}); }
  ASSERT_TRUE(wait_queued(1)) << key_;
  ASSERT_OK(holder->release());
  // The grant dies with the future's shared state: the key comes free.
  EXPECT_TRUE(wait_until(
      [&] {
        absl::StatusOr<std::optional<Lease>> t = l.try_acquire(key_);
        return t.ok() && t->has_value();
      },
      30s))
      << key_ << ": the dropped future's lease was never released";
}

TEST(LeaseAsyncOptionsTest, BlockingAcquireStillRefusesPoolAndExecutor) {
  auto b = MemoryLeaseBackend::create();
  ASSERT_OK_AND_ASSIGN(LeaseLock l, LeaseLock::create(b, {.ttl = 1s}));
  WorkerPool pool(1);
  absl::StatusOr<Lease> lease = l.acquire("k", {.pool = &pool});
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Backends, LeaseAsyncTest,
                         ::testing::ValuesIn(backends()),
                         [](const auto& p) { return p.param.name; });

}  // namespace
}  // namespace tierlock::testing

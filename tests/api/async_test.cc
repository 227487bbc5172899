// tests/api/async_test.cc
//
// Asynchronous acquires (DirLock::acquire_async, callback and future forms) and
// the WorkerPool they wait on: FIFO completion under the lock, in one process
// and across three; user executors; dropped futures and dropped completions
// releasing their lock; cancellation and timeouts; one kernel-waiting thread
// however many async waiters queue; and a pool destroyed with waits in flight.
// Pool-dependent behaviour is swept over pool sizes 0, 1, 2, 4 and 8.
//
// Every test passes its own WorkerPool (AcquireOptions::pool) except
// AsyncGlobalPoolTest, so the fixture's thread count stays meaningful.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "gtest/gtest.h"
#include "support/acquire_checks.h"
#include "support/counter.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/internal.h"
#include "support/proc_locks.h"
#include "support/rendezvous.h"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/sys_counter.h"
#include "support/threads.h"
#include "support/wait.h"
#include "tierlock/acquire_options.h"
#include "tierlock/dir_lock.h"
#include "tierlock/executor.h"
#include "tierlock/guard.h"
#include "tierlock/registry.h"

namespace {

using tierlock::AcquireOptions;
using tierlock::DirLock;
using tierlock::Executor;
using tierlock::Guard;
using tierlock::LockOptions;
using tierlock::Mode;
using tierlock::WorkerPool;
using tierlock::internal::LockEntry;
using namespace tierlock::testing;  // NOLINT: test support vocabulary
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class AsyncAcquireTest : public TierlockTest {};
class AsyncCrossProcessTest : public TierlockTest {};
class AsyncWorkerPoolTest : public TierlockTest {};
class AsyncCancelRaceTest : public TierlockTest {};
class AsyncPoolSizeTest : public TierlockTest,
                          public ::testing::WithParamInterface<std::size_t> {};

// Uses WorkerPool::global(), which is started once and never destroyed: start
// it before the fixture counts this process's threads.
class AsyncGlobalPoolTest : public TierlockTest {
 protected:
  void SetUp() override {
    (void)WorkerPool::global();
    TierlockTest::SetUp();
  }
};

// How long a thread may take to get from an acquire call into flock(2).
constexpr std::chrono::milliseconds kIntoKernel{5'000};

// Collects async completions. For an exclusive grant the callback checks that
// no other callback is inside the lock, increments a counter and appends its
// id to the grant order -- both plain variables ordered only by the DirLock,
// so ThreadSanitizer reports a race if the lock does not order them -- and
// then releases the Guard (or keeps it, if asked).
class Completions {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<Guard>) &&>;
  struct Outcome {
    int id = 0;
    absl::Status status;
    std::thread::id thread;
    Clock::time_point at;
  };

  explicit Completions(bool keep_guards = false) : keep_(keep_guards) {}

  Done callback(int id) {
    return [this, id](absl::StatusOr<Guard> g) {
      if (g.ok() && g->mode() == Mode::kExclusive) {
        if (inside_.fetch_add(1) != 0) overlaps_.fetch_add(1);
        ++counter_;
        grant_order_.push_back(id);
        inside_.fetch_sub(1);
      }
      std::optional<Guard> kept;
      absl::Status released;
      if (g.ok()) {
        if (keep_) {
          kept = std::move(*g);
        } else {
          released = g->release();
        }
      }
      std::lock_guard<std::mutex> l(mu_);
      outcomes_.push_back(
          Outcome{id, g.status(), std::this_thread::get_id(), Clock::now()});
      if (kept) kept_.push_back(std::move(*kept));
      if (!released.ok()) errors_.push_back(released.ToString());
      cv_.notify_all();
    };
  }

  // Waits until at least `n` completions have run.
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout = kTimeout) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, timeout, [&] { return outcomes_.size() >= n; });
  }
  std::size_t count() {
    std::lock_guard<std::mutex> l(mu_);
    return outcomes_.size();
  }
  std::vector<Outcome> outcomes() {
    std::lock_guard<std::mutex> l(mu_);
    return outcomes_;
  }
  // The outcome of waiter `id` (an Unknown status if it has not run).
  Outcome outcome(int id) {
    std::lock_guard<std::mutex> l(mu_);
    for (const Outcome& o : outcomes_) {
      if (o.id == id) return o;
    }
    return Outcome{id, absl::UnknownError("did not run"), {}, {}};
  }
  std::vector<std::string> errors() {
    std::lock_guard<std::mutex> l(mu_);
    return errors_;
  }
  // Read only once the exclusive callbacks are done (wait_for).
  std::vector<int> grant_order() {
    std::lock_guard<std::mutex> l(mu_);
    return grant_order_;
  }
  int counter() {
    std::lock_guard<std::mutex> l(mu_);
    return counter_;
  }
  int overlaps() const { return overlaps_.load(); }
  void release_kept() {
    std::vector<Guard> kept;
    {
      std::lock_guard<std::mutex> l(mu_);
      kept.swap(kept_);
    }
  }

 private:
  const bool keep_;
  std::atomic<int> inside_{0};
  std::atomic<int> overlaps_{0};
  int counter_ = 0;               // ordered by the DirLock
  std::vector<int> grant_order_;  // ordered by the DirLock
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Outcome> outcomes_;
  std::vector<Guard> kept_;
  std::vector<std::string> errors_;
};

std::vector<int> iota(int first, int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

std::string pid_text(pid_t pid) { return "pid " + std::to_string(pid); }

AcquireOptions on(WorkerPool& pool, Mode mode = Mode::kExclusive) {
  AcquireOptions o;
  o.mode = mode;
  o.pool = &pool;
  return o;
}

::testing::AssertionResult OurKernelWaiters(const DirLock& lock, int n) {
  std::string table;
  if (wait_for_locks(
          lock.lock_file(),
          [n](const auto& e) { return count_waiters_by(e, ::getpid()) == n; },
          kIntoKernel, &table)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "expected " << n
         << " thread(s) of this process blocked in flock on "
         << lock.lock_file() << "; /proc/locks:\n"
         << table << "threads of this process (a waiter that is \"running\" or "
         << "in futex/nanosleep is polling, not blocked in flock):\n"
         << describe_threads(read_threads());
}

// Runs tasks on one thread of its own, in order; drains and joins on
// destruction.
class ThreadExecutor final : public Executor {
 public:
  ThreadExecutor() : thread_([this] { run(); }) {}
  ~ThreadExecutor() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      closed_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void execute(absl::AnyInvocable<void() &&> task) override {
    std::lock_guard<std::mutex> l(mu_);
    tasks_.push_back(std::move(task));
    cv_.notify_one();
  }
  std::thread::id id() const { return thread_.get_id(); }

 private:
  void run() {
    for (;;) {
      absl::AnyInvocable<void() &&> task;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return closed_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      std::move(task)();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<absl::AnyInvocable<void() &&>> tasks_;
  bool closed_ = false;
  std::thread thread_;  // last: starts once the rest is constructed
};

// An executor that is shutting down: destroys every task without running it.
class DroppingExecutor final : public Executor {
 public:
  void execute(absl::AnyInvocable<void() &&> task) override {
    { auto dropped = std::move(task); }
    dropped_.fetch_add(1);
  }
  int dropped() const { return dropped_.load(); }

 private:
  std::atomic<int> dropped_{0};
};

// ------------------------------------------------------------ FIFO, counting

TEST_F(AsyncAcquireTest, ThousandCallbacksCompleteInFifoOrderUnderTheLock) {
  constexpr int kWaiters = 1'000;
  Completions done;
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  ASSERT_OK_AND_ASSIGN(Guard held, lock.acquire());

  for (int i = 0; i < kWaiters; ++i)
    lock.acquire_async(on(pool), done.callback(i));
  // All of them queue (the lock is held), in submission order.
  EXPECT_EQ(entry->waiting(), static_cast<std::size_t>(kWaiters));
  EXPECT_EQ(done.count(), 0u);
  // Waiting in-process costs no kernel wait.
  EXPECT_EQ(count_waiters_by(locks_on(lock.lock_file()), ::getpid()), 0);

  ASSERT_OK(held.release());
  ASSERT_TRUE(done.wait_for(kWaiters)) << done.count() << " completions ran";
  EXPECT_EQ(done.counter(), kWaiters);
  EXPECT_EQ(done.grant_order(), iota(0, kWaiters));
  EXPECT_EQ(done.overlaps(), 0);
  EXPECT_TRUE(done.errors().empty());
  for (const auto& o : done.outcomes()) {
    EXPECT_OK(o.status);
    EXPECT_NE(o.thread, std::this_thread::get_id())
        << "a completion ran inline";
  }
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AsyncCrossProcessTest,
       ThreeProcessesOfThousandAsyncIncrementsCountExactly) {
  constexpr int kProcesses = 3;
  constexpr int kEach = 1'000;
  std::vector<Process> workers;
  for (int i = 0; i < kProcesses; ++i) {
    workers.push_back(
        Process::spawn({helper_path(), "async-count", dir().string(),
                        std::to_string(kEach), "2"}));
  }
  for (Process& w : workers) ASSERT_EQ(w.read_line(), "ready");
  for (Process& w : workers) ASSERT_TRUE(w.write_line("go"));
  for (Process& w : workers) {
    EXPECT_EQ(w.read_line(std::chrono::seconds(120)),
              "done " + std::to_string(kEach));
    ExitStatus st = w.wait(std::chrono::seconds(120));
    EXPECT_EQ(st.code, 0) << "worker " << w.pid() << ": " << st.describe();
  }
  EXPECT_EQ(read_counter(dir() / "counter"), kProcesses * kEach);
  EXPECT_TRUE(locks_on(dir() / ".lock").empty())
      << describe(locks_on(dir() / ".lock"));
}

// ------------------------------------------------------ cancel vs. grant race

// Rounds of: an async acquire with a stop token queues on `lock`; then, at
// about the same time, `release` runs here and a canceller thread requests
// the stop. The completion must carry either a held Guard or kCancelled with
// nothing held: `inspect` checks which, before the Guard is released.
template <typename Hold, typename InPosition, typename Release,
          typename Inspect>
void race_async_cancel_against_release(DirLock& lock, WorkerPool& pool,
                                       int rounds, Hold hold,
                                       InPosition in_position, Release release,
                                       Inspect inspect) {
  Rendezvous start(2);
  Rendezvous fire(2);
  Rendezvous done(2);
  std::optional<std::stop_source> stop;  // replaced only between rounds
  std::mutex mu;
  std::condition_variable cv;
  std::optional<absl::StatusOr<Guard>> result;  // guarded by mu
  int round = 0;
  bool quit = false;
  int granted = 0;
  int cancelled = 0;
  std::thread canceller([&] {
    for (;;) {
      start.arrive_and_wait("start");
      if (quit) return;
      const int r = round;
      fire.arrive_and_wait("fire");
      if (r % 2 == 0) spin((r / 2) % 40);
      stop->request_stop();
      done.arrive_and_wait("done");
    }
  });
  std::string failure;
  for (round = 0; round < rounds && failure.empty(); ++round) {
    failure = hold(round);
    if (!failure.empty()) break;
    stop.emplace();
    {
      std::lock_guard<std::mutex> l(mu);
      result.reset();
    }
    AcquireOptions options = on(pool);
    options.stop = stop->get_token();
    lock.acquire_async(std::move(options), [&](absl::StatusOr<Guard> g) {
      std::lock_guard<std::mutex> l(mu);
      result = std::move(g);
      cv.notify_all();
    });
    start.arrive_and_wait("start");
    if (!in_position(round)) failure = "the waiter never got into position";
    fire.arrive_and_wait("fire");
    if (round % 2 == 1) spin((round / 2) % 40);
    std::string released = release(round);
    if (failure.empty()) failure = released;
    done.arrive_and_wait("done");
    std::optional<absl::StatusOr<Guard>> got;
    {
      std::unique_lock<std::mutex> l(mu);
      if (!cv.wait_for(l, kTimeout, [&] { return result.has_value(); })) {
        std::cerr << "FATAL: round " << round << ": the completion never ran"
                  << std::endl;
        std::abort();
      }
      got = std::move(result);
      result.reset();
    }
    if (got->ok()) {
      ++granted;
      if (failure.empty()) failure = inspect(round, true, **got);
      absl::Status r = (*got)->release();
      if (failure.empty() && !r.ok()) failure = "release: " + r.ToString();
    } else if (got->status().code() == absl::StatusCode::kCancelled) {
      ++cancelled;
      Guard none;
      if (failure.empty()) failure = inspect(round, false, none);
    } else {
      failure = "neither a Guard nor kCancelled: " + got->status().ToString();
    }
    if (!failure.empty())
      failure = "round " + std::to_string(round) + ": " + failure;
  }
  quit = true;
  start.arrive_and_wait("start");
  canceller.join();
  EXPECT_EQ(failure, "");
  std::cout << "[ outcome  ] " << granted << " granted, " << cancelled
            << " cancelled of " << round << " rounds\n";
}

TEST_F(AsyncCancelRaceTest,
       CancelRacingWithInProcessGrantHasExactlyOneOutcome) {
  const int kRounds = scaled(2'000, 500);
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  std::optional<Guard> held;
  race_async_cancel_against_release(
      lock, pool, kRounds,
      [&](int) -> std::string {
        absl::StatusOr<std::optional<Guard>> g = lock.try_acquire();
        if (!g.ok()) return "try_acquire: " + g.status().ToString();
        if (!g->has_value()) {
          return "try_acquire found the lock held after the previous round";
        }
        held = std::move(**g);
        return "";
      },
      [&](int) { return entry->waiting() == 1; },
      [&](int) -> std::string {
        absl::Status r = held->release();
        return r.ok() ? "" : "release: " + r.ToString();
      },
      [&](int, bool granted, const Guard& g) {
        return RaceOutcomeProblem(*entry, granted, g);
      });
  held.reset();
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AsyncCancelRaceTest, CancelRacingWithKernelGrantHasExactlyOneOutcome) {
  // The holder is another open file description of the lock file: the async
  // leader blocks in flock on a pool thread exactly as behind another
  // process. Odd rounds fire once it is in the kernel, even ones at once.
  const int kRounds = scaled(1'000, 300);
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  const int foreign = ::open(lock.lock_file().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(foreign, 0) << std::strerror(errno);
  const int probe = ::open(lock.lock_file().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(probe, 0) << std::strerror(errno);
  race_async_cancel_against_release(
      lock, pool, kRounds,
      [&](int) -> std::string {
        if (::flock(foreign, LOCK_EX | LOCK_NB) != 0) {
          return std::string("the lock is not free at the start of a round: ") +
                 std::strerror(errno) + "\n" +
                 describe(locks_on(lock.lock_file())) +
                 describe_threads(read_threads());
        }
        return "";
      },
      [&](int round) {
        if (round % 2 == 1) {
          return wait_for_locks(
              lock.lock_file(),
              [](const auto& e) { return count_waiters(e) == 1; }, kIntoKernel);
        }
        return true;
      },
      [&](int) -> std::string {
        return ::flock(foreign, LOCK_UN) == 0
                   ? ""
                   : std::string("LOCK_UN: ") + std::strerror(errno);
      },
      [&](int, bool granted, const Guard& g) {
        return RaceOutcomeProblem(*entry, granted, g, probe);
      });
  ::close(probe);
  ::close(foreign);
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AsyncCancelRaceTest, LeaderStoppedAsItStartsCompletesExactlyOnce) {
  // An async leader stopped just as its pool thread starts the kernel wait
  // (before it is inside flock): by a stop token (even rounds, 0-400 us after
  // the submit) or by its own short timeout (odd rounds, 50-540 us). Each
  // completion must run exactly once.
  const int kRounds = scaled(2'000, 500);
  Completions done;
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  const int foreign = ::open(lock.lock_file().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(foreign, 0) << std::strerror(errno);
  ASSERT_EQ(::flock(foreign, LOCK_EX | LOCK_NB), 0) << std::strerror(errno);
  for (int i = 0; i < kRounds; ++i) {
    std::stop_source stop;
    AcquireOptions o = on(pool);
    if (i % 2 == 0) {
      o.stop = stop.get_token();
    } else {
      o.timeout = std::chrono::microseconds(50 + 10 * (i % 50));
    }
    lock.acquire_async(std::move(o), done.callback(i));
    if (i % 2 == 0) {
      // Sweep the stop across the leader's start (0-400 us after the post).
      spin_for(std::chrono::microseconds(2 * ((i / 2) % 200)));
      stop.request_stop();
    }
    ASSERT_TRUE(done.wait_for(static_cast<std::size_t>(i) + 1))
        << "round " << i << ": no completion";
  }
  std::vector<int> seen(static_cast<std::size_t>(kRounds), 0);
  for (const auto& o : done.outcomes()) {
    ++seen[static_cast<std::size_t>(o.id)];
    EXPECT_FALSE(o.status.ok()) << "round " << o.id;
  }
  EXPECT_EQ(seen, std::vector<int>(static_cast<std::size_t>(kRounds), 1));
  ::close(foreign);
  EXPECT_TRUE(HoldsNothing(lock));
}

// ---------------------------------------------------------------- pool sizes

TEST_P(AsyncPoolSizeTest, CompletesInFifoOrderBehindAnotherProcess) {
  constexpr int kWaiters = 200;
  Completions done;
  WorkerPool pool(GetParam());
  EXPECT_EQ(pool.size(), GetParam());
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");

  for (int i = 0; i < kWaiters; ++i)
    lock.acquire_async(on(pool), done.callback(i));
  EXPECT_EQ(entry->waiting(), static_cast<std::size_t>(kWaiters));
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  EXPECT_LE(threads_in_flock().size(), 1u) << describe_threads(read_threads());
  EXPECT_EQ(done.count(), 0u);

  EXPECT_EQ(stop_holder(holder).code, 0);
  ASSERT_TRUE(done.wait_for(kWaiters)) << done.count() << " completions ran";
  EXPECT_EQ(done.counter(), kWaiters);
  EXPECT_EQ(done.grant_order(), iota(0, kWaiters));
  EXPECT_EQ(done.overlaps(), 0);
  EXPECT_TRUE(done.errors().empty());
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_P(AsyncPoolSizeTest, OneKernelWaitingThreadForFiftyWaiters) {
  constexpr int kWaiters = 50;
  std::promise<void> marker;  // before the pool: it may run until the pool goes
  Completions done;
  WorkerPool pool(GetParam());
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  const int threads_before = count_threads();

  for (int i = 0; i < kWaiters; ++i)
    lock.acquire_async(on(pool), done.callback(i));
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  if (GetParam() >= 2) {
    // Tasks run in submission order: once a task posted after the waiters
    // runs, every task they posted has started. If each waiter had taken a
    // pool thread into flock, none would be left to run it.
    pool.execute([&marker] { marker.set_value(); });
    EXPECT_EQ(marker.get_future().wait_for(kIntoKernel),
              std::future_status::ready)
        << "no pool thread is free: async waiters are occupying pool threads";
  }
  const std::vector<ThreadState> in_flock = threads_in_flock();
  EXPECT_LE(in_flock.size(), 1u) << describe_threads(in_flock);
  EXPECT_LE(count_waiters_by(locks_on(lock.lock_file()), ::getpid()), 1);
  EXPECT_LE(count_threads(), threads_before + 1)
      << "async waiters cost threads:\n"
      << describe_threads(read_threads());
  EXPECT_EQ(entry->waiting(), static_cast<std::size_t>(kWaiters));

  EXPECT_EQ(stop_holder(holder).code, 0);
  ASSERT_TRUE(done.wait_for(kWaiters)) << done.count() << " completions ran";
  EXPECT_EQ(done.grant_order(), iota(0, kWaiters));
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_P(AsyncPoolSizeTest, TimesOutWhileAnotherProcessHolds) {
  Completions done;
  WorkerPool pool(GetParam());
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");

  AcquireOptions options = on(pool);
  options.timeout = 50ms;
  const auto start = Clock::now();
  lock.acquire_async(std::move(options), done.callback(1));
  ASSERT_TRUE(done.wait_for(1));
  Completions::Outcome o = done.outcome(1);
  EXPECT_TRUE(IsError(o.status, absl::StatusCode::kDeadlineExceeded,
                      lock.lock_file().string(), pid_text(holder.pid())));
  EXPECT_GE(o.at - start, 50ms);
  EXPECT_LT(o.at - start, 5s);
  EXPECT_TRUE(HoldsNothing(lock));
  ReleaseAndOthersGetIt(lock, holder);
}

TEST_P(AsyncPoolSizeTest, CancelWhileAnotherProcessHolds) {
  Completions done;
  WorkerPool pool(GetParam());
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");

  std::stop_source stop;
  AcquireOptions options = on(pool);
  options.stop = stop.get_token();
  lock.acquire_async(std::move(options), done.callback(1));
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  stop.request_stop();
  ASSERT_TRUE(done.wait_for(1, 5'000ms)) << "cancel did not end the async wait";
  EXPECT_TRUE(IsError(done.outcome(1).status, absl::StatusCode::kCancelled,
                      lock.lock_file().string(), "held by another process"));
  EXPECT_TRUE(HoldsNothing(lock));
  ReleaseAndOthersGetIt(lock, holder);
}

TEST_P(AsyncPoolSizeTest,
       DestructorWithWaitsInFlightIsPromptAndLeavesNothingHeld) {
  constexpr int kEach = 5;
  Completions done;  // outlives the pool: completions may run until it goes
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  LockOptions other_options;
  other_options.lock_file_name = "other.lock";
  ASSERT_OK_AND_ASSIGN(DirLock other, DirLock::open(dir(), other_options));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  std::shared_ptr<LockEntry> other_entry = entry_of(other);
  ASSERT_NE(entry, nullptr);
  ASSERT_NE(other_entry, nullptr);
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  ASSERT_OK_AND_ASSIGN(Guard other_held, other.acquire());

  auto pool = std::make_unique<WorkerPool>(GetParam());
  // On `lock`: one leads, blocked in the kernel; the rest queue in-process.
  for (int i = 0; i < kEach; ++i)
    lock.acquire_async(on(*pool), done.callback(i));
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  // On `other`: all queue in-process behind this thread's hold.
  for (int i = 0; i < kEach; ++i) {
    other.acquire_async(on(*pool), done.callback(100 + i));
  }
  EXPECT_EQ(entry->waiting(), static_cast<std::size_t>(kEach));
  EXPECT_EQ(other_entry->waiting(), static_cast<std::size_t>(kEach));

  const auto start = Clock::now();
  pool.reset();
  EXPECT_LT(Clock::now() - start, 5s) << "the pool's destructor hung";

  // Callbacks either ran (cancelled: both locks stayed held by others) or not.
  const std::size_t ran = done.count();
  EXPECT_LE(ran, 2u * kEach);
  for (const auto& o : done.outcomes()) {
    EXPECT_EQ(o.status.code(), absl::StatusCode::kCancelled)
        << "waiter " << o.id << ": " << o.status;
  }
  EXPECT_EQ(entry->waiting(), 0u);
  EXPECT_EQ(other_entry->waiting(), 0u);
  EXPECT_TRUE(HoldsNothing(lock));
  // `other` is held by this thread only.
  EXPECT_EQ(other_entry->holders(), 1u);
  std::vector<ProcLock> entries = locks_on(other.lock_file());
  EXPECT_EQ(count_holders_by(entries, ::getpid()), 1) << describe(entries);
  EXPECT_EQ(count_waiters(entries), 0) << describe(entries);
  ASSERT_OK(other_held.release());
  EXPECT_TRUE(HoldsNothing(other));
  EXPECT_EQ(try_in_other_process(dir(), Mode::kExclusive, "other.lock"),
            kAcquired);

  ReleaseAndOthersGetIt(lock, holder);
  EXPECT_EQ(done.count(), ran)
      << "a completion ran after the pool was destroyed";
}

INSTANTIATE_TEST_SUITE_P(Sizes, AsyncPoolSizeTest,
                         ::testing::Values(std::size_t{0}, std::size_t{1},
                                           std::size_t{2}, std::size_t{4},
                                           std::size_t{8}),
                         [](const ::testing::TestParamInfo<std::size_t>& p) {
                           return "Threads" + std::to_string(p.param);
                         });

// ---------------------------------------------------------- pool lifetime

TEST_F(AsyncWorkerPoolTest,
       DestroyedPoolReleasesAGrantWhoseCompletionNeverRan) {
  // One pool thread, busy in the kernel for `lock`; `free_lock` is granted
  // at once but its completion queues behind that wait. Destroying the pool
  // drops the completion: the grant it carried must be released.
  Completions done;
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  LockOptions free_options;
  free_options.lock_file_name = "free.lock";
  ASSERT_OK_AND_ASSIGN(DirLock free_lock, DirLock::open(dir(), free_options));
  std::shared_ptr<LockEntry> free_entry = entry_of(free_lock);
  ASSERT_NE(free_entry, nullptr);
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");

  auto pool = std::make_unique<WorkerPool>(1);
  lock.acquire_async(on(*pool), done.callback(1));
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  free_lock.acquire_async(on(*pool), done.callback(2));
  EXPECT_EQ(free_entry->holders(), 1u) << "granted, its completion pending";
  EXPECT_EQ(try_in_other_process(dir(), Mode::kExclusive, "free.lock"), kBusy);
  EXPECT_EQ(done.count(), 0u);

  const auto start = Clock::now();
  pool.reset();
  EXPECT_LT(Clock::now() - start, 5s) << "the pool's destructor hung";
  EXPECT_TRUE(HoldsNothing(free_lock));
  EXPECT_EQ(try_in_other_process(dir(), Mode::kExclusive, "free.lock"),
            kAcquired);
  EXPECT_TRUE(HoldsNothing(lock));
  ReleaseAndOthersGetIt(lock, holder);
  for (const auto& o : done.outcomes()) {
    if (o.id == 1) {
      EXPECT_EQ(o.status.code(), absl::StatusCode::kCancelled) << o.status;
    }
  }
}

TEST_F(AsyncWorkerPoolTest, PoolDestroyedRightAfterSubmitCompletesAtMostOnce) {
  // The pool goes while its first task -- the leader's kernel wait -- may be
  // starting. No completion may run twice, nothing may hang or stay held.
  const int kRounds = scaled(200, 100);
  Completions done;
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  const int foreign = ::open(lock.lock_file().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(foreign, 0) << std::strerror(errno);
  ASSERT_EQ(::flock(foreign, LOCK_EX | LOCK_NB), 0) << std::strerror(errno);
  for (int i = 0; i < kRounds; ++i) {
    WorkerPool pool(static_cast<std::size_t>(i % 3));
    lock.acquire_async(on(pool), done.callback(i));
    if (i % 4 == 0) {
      ASSERT_TRUE(
          wait_until([&] { return !threads_in_flock().empty(); }, kIntoKernel))
          << "round " << i << ": the leader never blocked in flock";
    }
  }
  std::vector<int> seen(static_cast<std::size_t>(kRounds), 0);
  for (const auto& o : done.outcomes()) {
    ++seen[static_cast<std::size_t>(o.id)];
    EXPECT_EQ(o.status.code(), absl::StatusCode::kCancelled)
        << "round " << o.id;
  }
  for (int i = 0; i < kRounds; ++i) {
    EXPECT_LE(seen[static_cast<std::size_t>(i)], 1) << "round " << i;
  }
  ::close(foreign);
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

// ------------------------------------------------------- futures, executors

TEST_F(AsyncAcquireTest, FutureFormReturnsTheGuard) {
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  {
    std::future<absl::StatusOr<Guard>> f = lock.acquire_async(on(pool));
    ASSERT_EQ(f.wait_for(kTimeout), std::future_status::ready);
    absl::StatusOr<Guard> g = f.get();
    ASSERT_OK(g);
    EXPECT_TRUE(g->held());
    EXPECT_EQ(g->mode(), Mode::kExclusive);
    EXPECT_EQ(try_in_other_process(dir()), kBusy);
  }
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);

  std::future<absl::StatusOr<Guard>> queued;  // before the hold
  ASSERT_OK_AND_ASSIGN(Guard held, lock.acquire());
  queued = lock.acquire_async(on(pool, Mode::kShared));
  EXPECT_EQ(queued.wait_for(0s), std::future_status::timeout);
  ASSERT_OK(held.release());
  ASSERT_EQ(queued.wait_for(kTimeout), std::future_status::ready);
  absl::StatusOr<Guard> g = queued.get();
  ASSERT_OK(g);
  EXPECT_EQ(g->mode(), Mode::kShared);
  EXPECT_EQ(try_in_other_process(dir(), Mode::kShared), kAcquired);
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
}

TEST_F(AsyncGlobalPoolTest, DefaultOptionsWaitOnTheGlobalPool) {
  const std::size_t entries_before = tierlock::Registry::global().size();
  {
    ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
    {
      absl::StatusOr<Guard> g = lock.acquire_async().get();
      ASSERT_OK(g);
      EXPECT_EQ(try_in_other_process(dir()), kBusy);
    }
    Completions done;
    std::optional<Guard> held;
    {
      ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
      held = std::move(g);
    }
    lock.acquire_async({}, done.callback(1));
    EXPECT_EQ(done.count(), 0u);
    ASSERT_OK(held->release());
    ASSERT_TRUE(done.wait_for(1));
    EXPECT_OK(done.outcome(1).status);
    EXPECT_NE(done.outcome(1).thread, std::this_thread::get_id());
    EXPECT_TRUE(HoldsNothing(lock));
  }
  // The global pool outlives the test: after a callback has signalled, its
  // thread may still be finishing the completion task, which owns a
  // reference to the registry entry. Wait for it to let go.
  EXPECT_TRUE(wait_until(
      [&] { return tierlock::Registry::global().size() == entries_before; },
      5'000ms));
}

TEST_F(AsyncAcquireTest, DroppedFutureReleasesTheLockGrantedLater) {
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  ASSERT_OK_AND_ASSIGN(Guard held, lock.acquire());
  { (void)lock.acquire_async(on(pool)); }  // dropped before the grant
  EXPECT_EQ(entry->waiting(), 1u);
  ASSERT_OK(held.release());
  EXPECT_TRUE(wait_until([&] { return try_in_other_thread(lock) == kAcquired; },
                         5'000ms))
      << "the grant of a dropped future was never released";
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AsyncAcquireTest, DroppedFutureReleasesTheLockAfterAKernelWait) {
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  { (void)lock.acquire_async(on(pool)); }  // dropped before the grant
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  EXPECT_EQ(stop_holder(holder).code, 0);
  // The pool takes the lock for the dropped future, then releases it.
  EXPECT_TRUE(wait_until(
      [&] {
        return entry->waiting() == 0 && entry->holders() == 0 &&
               !entry->kernel_held();
      },
      5'000ms))
      << "waiting " << entry->waiting() << ", holders " << entry->holders();
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
  EXPECT_TRUE(HoldsNothing(lock));
}

TEST_F(AsyncAcquireTest, UserExecutorRunsTheCompletions) {
  constexpr int kQueued = 20;
  Completions done;
  ThreadExecutor executor;
  WorkerPool pool(1);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  auto with_executor = [&] {
    AcquireOptions o = on(pool);
    o.executor = &executor;
    return o;
  };
  // Granted at once.
  lock.acquire_async(with_executor(), done.callback(0));
  ASSERT_TRUE(done.wait_for(1));
  EXPECT_OK(done.outcome(0).status);
  EXPECT_EQ(done.outcome(0).thread, executor.id());

  // Queued, then granted one by one in order.
  std::optional<Guard> held;
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    held = std::move(g);
  }
  for (int i = 1; i <= kQueued; ++i) {
    lock.acquire_async(with_executor(), done.callback(i));
  }
  ASSERT_OK(held->release());
  ASSERT_TRUE(done.wait_for(kQueued + 1));
  EXPECT_EQ(done.grant_order(), iota(0, kQueued + 1));
  for (const auto& o : done.outcomes()) {
    EXPECT_OK(o.status);
    EXPECT_EQ(o.thread, executor.id()) << "completion " << o.id;
  }
  EXPECT_TRUE(HoldsNothing(lock));
}

TEST_F(AsyncAcquireTest, ExecutorThatDropsTheCompletionReleasesTheLock) {
  DroppingExecutor executor;
  WorkerPool pool(1);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::atomic<int> ran{0};
  auto with_executor = [&] {
    AcquireOptions o = on(pool);
    o.executor = &executor;
    return o;
  };
  // Granted at once; the completion carrying the Guard is dropped.
  lock.acquire_async(with_executor(), [&](absl::StatusOr<Guard>) { ++ran; });
  ASSERT_TRUE(wait_until([&] { return executor.dropped() == 1; }));
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);

  // Queued first, granted on release, dropped.
  std::optional<Guard> held;
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    held = std::move(g);
  }
  lock.acquire_async(with_executor(), [&](absl::StatusOr<Guard>) { ++ran; });
  ASSERT_OK(held->release());
  ASSERT_TRUE(wait_until([&] { return executor.dropped() == 2; }));
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_thread(lock), kAcquired);
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
  EXPECT_EQ(ran.load(), 0);
}

// ------------------------------------------------- cancellation, timeouts

TEST_F(AsyncAcquireTest, CancelWhileQueuedInProcess) {
  Completions done;
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  std::optional<Guard> held;
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    held = std::move(g);
  }
  std::stop_source stop;
  AcquireOptions cancellable = on(pool);
  cancellable.stop = stop.get_token();
  lock.acquire_async(std::move(cancellable), done.callback(1));
  lock.acquire_async(on(pool), done.callback(2));
  EXPECT_EQ(entry->waiting(), 2u);

  stop.request_stop();
  ASSERT_TRUE(done.wait_for(1, 5'000ms));
  EXPECT_TRUE(IsError(done.outcome(1).status, absl::StatusCode::kCancelled,
                      lock.lock_file().string(), "this process"));
  EXPECT_EQ(entry->waiting(), 1u);
  EXPECT_EQ(entry->holders(), 1u);

  ASSERT_OK(held->release());
  ASSERT_TRUE(done.wait_for(2));
  EXPECT_OK(done.outcome(2).status);
  EXPECT_EQ(done.grant_order(), std::vector<int>{2});
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AsyncAcquireTest, CancelledKernelLeaderHandsTheKernelWaitToTheNext) {
  Completions done;
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");

  std::stop_source stop;
  AcquireOptions cancellable = on(pool);
  cancellable.stop = stop.get_token();
  lock.acquire_async(std::move(cancellable), done.callback(1));
  EXPECT_TRUE(OurKernelWaiters(lock, 1));  // 1 leads, in flock
  lock.acquire_async(on(pool), done.callback(2));
  lock.acquire_async(on(pool), done.callback(3));
  EXPECT_EQ(entry->waiting(), 3u);

  stop.request_stop();
  ASSERT_TRUE(done.wait_for(1, 5'000ms));
  EXPECT_TRUE(IsError(done.outcome(1).status, absl::StatusCode::kCancelled,
                      lock.lock_file().string(), "held by another process"));
  EXPECT_EQ(entry->waiting(), 2u);
  // 2 took over the kernel wait: still exactly one thread of ours in flock.
  EXPECT_TRUE(OurKernelWaiters(lock, 1));
  EXPECT_LE(threads_in_flock().size(), 1u) << describe_threads(read_threads());
  EXPECT_EQ(done.count(), 1u);

  EXPECT_EQ(stop_holder(holder).code, 0);
  ASSERT_TRUE(done.wait_for(3));
  EXPECT_EQ(done.grant_order(), (std::vector<int>{2, 3}));
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AsyncAcquireTest, StopAlreadyRequestedIsCancelledWithoutSyscall) {
  Completions done;
  WorkerPool pool(1);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::stop_source stop;
  stop.request_stop();
  std::future<absl::StatusOr<Guard>> f;
  int syscalls = -1;
  {
    SyscallCounter sys;
    AcquireOptions a = on(pool);
    a.stop = stop.get_token();
    lock.acquire_async(std::move(a), done.callback(1));
    AcquireOptions b = on(pool, Mode::kShared);
    b.stop = stop.get_token();
    f = lock.acquire_async(std::move(b));
    EXPECT_TRUE(done.wait_for(1));
    EXPECT_EQ(f.wait_for(kTimeout), std::future_status::ready);
    syscalls = sys.total();
  }
  EXPECT_EQ(syscalls, 0);
  EXPECT_TRUE(IsError(done.outcome(1).status, absl::StatusCode::kCancelled,
                      lock.lock_file().string()));
  EXPECT_TRUE(IsError(f.get().status(), absl::StatusCode::kCancelled,
                      lock.lock_file().string()));
  EXPECT_TRUE(locks_on(lock.lock_file()).empty());
  EXPECT_TRUE(HoldsNothing(lock));
}

TEST_F(AsyncAcquireTest, TimesOutWhileQueuedInProcess) {
  Completions done;
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  std::optional<Guard> held;
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    held = std::move(g);
  }
  AcquireOptions timed = on(pool);
  timed.timeout = 50ms;
  const auto start = Clock::now();
  lock.acquire_async(std::move(timed), done.callback(1));
  ASSERT_TRUE(done.wait_for(1));
  Completions::Outcome o = done.outcome(1);
  EXPECT_TRUE(IsError(o.status, absl::StatusCode::kDeadlineExceeded,
                      lock.lock_file().string(), "this process"));
  EXPECT_GE(o.at - start, 50ms);
  EXPECT_LT(o.at - start, 5s);
  EXPECT_EQ(entry->waiting(), 0u);
  EXPECT_EQ(entry->holders(), 1u);
  ASSERT_OK(held->release());
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(AsyncAcquireTest, SharedWaitersBehindATimedOutAsyncWriterAreGranted) {
  Completions readers(/*keep_guards=*/true);
  Completions writer;
  WorkerPool pool(2);
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  ASSERT_OK_AND_ASSIGN(Guard reader, lock.acquire(Mode::kShared));

  AcquireOptions w = on(pool);
  w.timeout = 300ms;
  lock.acquire_async(std::move(w), writer.callback(1));
  for (int i = 0; i < 2; ++i) {
    AcquireOptions r = on(pool, Mode::kShared);
    r.timeout = kTimeout;
    lock.acquire_async(std::move(r), readers.callback(i));
  }
  EXPECT_EQ(entry->waiting(), 3u);
  ASSERT_EQ(writer.count(), 0u)
      << "the writer left before the readers queued; the test proves nothing";
  ASSERT_TRUE(writer.wait_for(1));
  EXPECT_TRUE(IsError(writer.outcome(1).status,
                      absl::StatusCode::kDeadlineExceeded,
                      lock.lock_file().string()));
  ASSERT_TRUE(readers.wait_for(2));
  for (const auto& o : readers.outcomes()) EXPECT_OK(o.status);
  EXPECT_EQ(entry->holders(), 3u);
  EXPECT_TRUE(reader.held());
  readers.release_kept();
  ASSERT_OK(reader.release());
  EXPECT_TRUE(HoldsNothing(lock));
}

}  // namespace

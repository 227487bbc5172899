// tests/unit/queue_test.cc
//
// The in-process queue behind a DirLock: threads of one process are granted in
// arrival order, consecutive shared waiters together, and a shared request
// never overtakes a queued exclusive one. Arrival is made deterministic by
// starting each waiter only once the previous one is queued
// (LockEntry::waiting(), read through the registry).
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/internal.h"
#include "support/proc_locks.h"
#include "support/status.h"
#include "support/wait.h"
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"

namespace {

using tierlock::DirLock;
using tierlock::Guard;
using tierlock::Mode;
using tierlock::internal::LockEntry;
using namespace tierlock::testing;  // NOLINT: test support vocabulary

class DirLockQueueTest : public TierlockTest {};

// A one-shot signal with a bounded wait.
class Gate {
 public:
  void open() {
    std::lock_guard<std::mutex> l(mu_);
    open_ = true;
    cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds timeout = kTimeout) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, timeout, [this] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Records grants and checks the exclusion invariant as threads come and go.
class Recorder {
 public:
  // Called by a thread right after its acquire returned.
  void granted(int id, Mode mode) {
    std::lock_guard<std::mutex> l(mu_);
    order_.push_back(id);
    if (mode == Mode::kExclusive) {
      if (exclusive_ != 0 || shared_ != 0) overlap_ = true;
      ++exclusive_;
    } else {
      if (exclusive_ != 0) overlap_ = true;
      ++shared_;
      ++shared_grants_;
      max_shared_ = std::max(max_shared_, shared_);
    }
    cv_.notify_all();
  }
  // Called right before the thread releases.
  void releasing(Mode mode) {
    std::lock_guard<std::mutex> l(mu_);
    if (mode == Mode::kExclusive) {
      --exclusive_;
    } else {
      --shared_;
    }
  }
  // Waits until `n` shared holds have been granted in all (a holder calls
  // this to stay until its batch-mates arrive: if they are not granted while
  // it holds, this times out and max_shared() shows it).
  bool wait_shared_grants(int n, std::chrono::milliseconds timeout = kTimeout) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, timeout, [&] { return shared_grants_ >= n; });
  }
  std::vector<int> order() {
    std::lock_guard<std::mutex> l(mu_);
    return order_;
  }
  bool overlap() {
    std::lock_guard<std::mutex> l(mu_);
    return overlap_;
  }
  int max_shared() {
    std::lock_guard<std::mutex> l(mu_);
    return max_shared_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> order_;
  int exclusive_ = 0;
  int shared_ = 0;
  int shared_grants_ = 0;
  int max_shared_ = 0;
  bool overlap_ = false;
};

// Waiter threads, each acquiring once in a given mode. Joined on destruction.
class Waiters {
 public:
  Waiters(DirLock lock, Recorder& rec) : lock_(std::move(lock)), rec_(rec) {}
  ~Waiters() { join(); }

  // Starts waiter `id`; once granted it records, runs `while_held`, releases.
  void start(int id, Mode mode, std::function<void()> while_held = {}) {
    threads_.emplace_back([this, id, mode, hold = std::move(while_held)] {
      absl::StatusOr<Guard> g = lock_.acquire(mode);
      if (!g.ok()) {
        std::lock_guard<std::mutex> l(mu_);
        errors_.push_back(std::to_string(id) + ": " + g.status().ToString());
        return;
      }
      rec_.granted(id, mode);
      if (hold) hold();
      rec_.releasing(mode);
      absl::Status r = g->release();
      if (!r.ok()) {
        std::lock_guard<std::mutex> l(mu_);
        errors_.push_back(std::to_string(id) + ": release: " + r.ToString());
      }
    });
  }
  void join() {
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  std::vector<std::string> errors() {
    std::lock_guard<std::mutex> l(mu_);
    return errors_;
  }

 private:
  DirLock lock_;
  Recorder& rec_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::vector<std::string> errors_;
};

TEST_F(DirLockQueueTest, WaitersAreGrantedInArrivalOrder) {
  constexpr int kWaiters = 8;
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard holder, lock.acquire());
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  Recorder rec;
  bool queued = true;
  {
    Waiters waiters(lock, rec);
    for (int i = 0; i < kWaiters && queued; ++i) {
      waiters.start(i, Mode::kExclusive);
      queued = wait_for_waiting(*entry, static_cast<std::size_t>(i + 1));
      EXPECT_TRUE(queued) << "waiter " << i
                          << " did not queue; waiting()=" << entry->waiting();
    }
    // Waiters wait in-process: only the holder is in the kernel's table.
    EXPECT_TRUE(LocksBecome(lock.lock_file(), held_by(::getpid())));
    ASSERT_OK(holder.release());
    waiters.join();
    for (const auto& e : waiters.errors()) ADD_FAILURE() << e;
  }
  ASSERT_TRUE(queued);
  EXPECT_EQ(rec.order(), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_FALSE(rec.overlap());
  EXPECT_EQ(entry->waiting(), 0u);
}

TEST_F(DirLockQueueTest, WaitersBehindAnotherProcessAreGrantedInArrivalOrder) {
  constexpr int kWaiters = 4;
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  Recorder rec;
  bool queued = true;
  {
    Waiters waiters(lock, rec);
    for (int i = 0; i < kWaiters && queued; ++i) {
      waiters.start(i, i == 2 ? Mode::kShared : Mode::kExclusive);
      queued = wait_for_waiting(*entry, static_cast<std::size_t>(i + 1));
      EXPECT_TRUE(queued) << "waiter " << i
                          << " did not queue; waiting()=" << entry->waiting();
    }
    // One thread waits in the kernel for the whole process.
    EXPECT_TRUE(LocksBecome(lock.lock_file(), [](const auto& e) {
      return count_waiters_by(e, ::getpid()) == 1;
    }));
    EXPECT_EQ(stop_holder(holder).code, 0);
    waiters.join();
    for (const auto& e : waiters.errors()) ADD_FAILURE() << e;
  }
  ASSERT_TRUE(queued);
  EXPECT_EQ(rec.order(), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_FALSE(rec.overlap());
}

TEST_F(DirLockQueueTest, SharedWaitersBehindExclusiveWaiterWaitForIt) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard holder, lock.acquire(Mode::kShared));
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  Recorder rec;
  bool queued = true;
  {
    Waiters waiters(lock, rec);
    auto both_shared = [&rec] { rec.wait_shared_grants(2); };
    waiters.start(1, Mode::kExclusive);
    queued = wait_for_waiting(*entry, 1);
    EXPECT_TRUE(queued);
    // A shared request arriving now is compatible with the shared holder but
    // must queue behind the exclusive waiter, not be granted.
    if (queued) {
      waiters.start(2, Mode::kShared, both_shared);
      queued = wait_for_waiting(*entry, 2);
      EXPECT_TRUE(queued)
          << "shared waiter overtook the exclusive one? waiting()="
          << entry->waiting();
    }
    if (queued) {
      EXPECT_EQ(try_in_other_thread(lock, Mode::kShared), kBusy)
          << "a shared try overtook a queued exclusive waiter";
      waiters.start(3, Mode::kShared, both_shared);
      queued = wait_for_waiting(*entry, 3);
      EXPECT_TRUE(queued);
    }
    EXPECT_TRUE(rec.order().empty());
    ASSERT_OK(holder.release());
    waiters.join();
    for (const auto& e : waiters.errors()) ADD_FAILURE() << e;
  }
  ASSERT_TRUE(queued);
  std::vector<int> order = rec.order();
  ASSERT_EQ(order.size(), 3u);
  EXPECT_EQ(order[0], 1) << "the exclusive waiter was not granted first";
  EXPECT_EQ(std::set<int>(order.begin() + 1, order.end()),
            (std::set<int>{2, 3}));
  EXPECT_EQ(rec.max_shared(), 2) << "shared waiters were not granted together";
  EXPECT_FALSE(rec.overlap());
}

TEST_F(DirLockQueueTest, ConsecutiveSharedWaitersAreGrantedTogether) {
  // Queue: S1 S2 S3 X4 S5 behind an exclusive holder. S1-S3 are granted as one
  // batch; X4 waits for all of them; S5 is not batched with S1-S3 because X4
  // is ahead of it.
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard holder, lock.acquire());
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  Recorder rec;
  bool queued = true;
  {
    Waiters waiters(lock, rec);
    auto three_shared = [&rec] { rec.wait_shared_grants(3); };
    const Mode modes[] = {Mode::kShared, Mode::kShared, Mode::kShared,
                          Mode::kExclusive, Mode::kShared};
    for (int i = 0; i < 5 && queued; ++i) {
      waiters.start(i + 1, modes[i],
                    i < 3 ? std::function<void()>(three_shared)
                          : std::function<void()>());
      queued = wait_for_waiting(*entry, static_cast<std::size_t>(i + 1));
      EXPECT_TRUE(queued) << "waiter " << i + 1 << " did not queue";
    }
    ASSERT_OK(holder.release());
    waiters.join();
    for (const auto& e : waiters.errors()) ADD_FAILURE() << e;
  }
  ASSERT_TRUE(queued);
  std::vector<int> order = rec.order();
  ASSERT_EQ(order.size(), 5u);
  EXPECT_EQ(std::set<int>(order.begin(), order.begin() + 3),
            (std::set<int>{1, 2, 3}));
  EXPECT_EQ(order[3], 4);
  EXPECT_EQ(order[4], 5);
  EXPECT_EQ(rec.max_shared(), 3) << "S1-S3 were not granted together";
  EXPECT_FALSE(rec.overlap());
}

TEST_F(DirLockQueueTest, ReleaseHandsOffToInProcessWaiterBeforeOtherProcesses) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard holder, lock.acquire());
  std::shared_ptr<LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  Recorder rec;
  Gate granted;
  Gate let_go;
  // Another process waits in the kernel for an exclusive lock.
  Process other = start_holder(dir());
  std::string table;
  ASSERT_TRUE(wait_for_locks(
      lock.lock_file(),
      [&](const auto& e) { return count_waiters_by(e, other.pid()) == 1; },
      kTimeout, &table))
      << table;
  bool queued = false;
  {
    Waiters waiters(lock, rec);
    waiters.start(1, Mode::kShared, [&] {
      granted.open();
      let_go.wait();
    });
    queued = wait_for_waiting(*entry, 1);
    EXPECT_TRUE(queued);
    ASSERT_OK(holder.release());  // exclusive -> in-process shared waiter
    EXPECT_TRUE(granted.wait());
    // The other process is still waiting: the lock never went free. (The mode
    // change wakes the kernel waiter, which blocks again at once; hence a
    // bounded wait rather than a single look.)
    EXPECT_TRUE(wait_for_locks(
        lock.lock_file(),
        [&](const auto& e) {
          return count_waiters_by(e, other.pid()) == 1 &&
                 count_holders_by(e, other.pid()) == 0 &&
                 count_holders_by(e, ::getpid()) == 1;
        },
        kTimeout, &table))
        << table;
    EXPECT_FALSE(other.io().readable_now()) << "the other process got in";
    let_go.open();
    waiters.join();
    for (const auto& e : waiters.errors()) ADD_FAILURE() << e;
  }
  EXPECT_TRUE(queued);
  // Queue drained: the kernel lock is released and the other process gets it.
  EXPECT_EQ(other.read_line(), "locked");
  EXPECT_EQ(stop_holder(other).code, 0);
}

TEST_F(DirLockQueueTest, MixedModesNeverOverlap) {
  constexpr int kThreads = 6;
  constexpr int kRounds = 300;
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Recorder rec;
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        const Mode mode = ((t + i) % 3 == 0) ? Mode::kExclusive : Mode::kShared;
        absl::StatusOr<std::optional<Guard>> g;
        if (i % 5 == 0) {
          g = lock.try_acquire(mode);
        } else {
          absl::StatusOr<Guard> b = lock.acquire(mode);
          if (b.ok()) {
            g = std::optional<Guard>(std::move(*b));
          } else {
            g = b.status();
          }
        }
        if (!g.ok()) {
          errors[static_cast<std::size_t>(t)] = g.status().ToString();
          return;
        }
        if (!g->has_value()) continue;  // a try that found it busy
        rec.granted(t, mode);
        rec.releasing(mode);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  EXPECT_FALSE(rec.overlap());
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

}  // namespace

// tests/api/cancel_storm_test.cc
//
// Cancel storms: thousands of acquires that are cancelled or time out while
// the lock is contended by other threads and by another process (tl_helper
// churn, which takes and releases it in a loop). Every acquire must end as
// exactly one of "granted" (and then exclusive) or "cancelled / timed out
// holding nothing"; afterwards this process must have leaked nothing: no
// descriptor, no thread, no queue entry, no kernel lock or kernel wait, and
// the other process must get the lock at once.
//
// acquire_cancel_test.cc and async_cancel_test.cc race one waiter's cancel
// against one grant, round by round (support/cancel_race.h); this file is the
// many-waiters, everything-at-once counterpart.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "support/acquire_checks.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/internal.h"
#include "support/proc_locks.h"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/wait.h"
#include "tierlock/acquire_options.h"
#include "tierlock/dir_lock.h"
#include "tierlock/executor.h"
#include "tierlock/guard.h"

namespace {

using tierlock::AcquireOptions;
using tierlock::DirLock;
using tierlock::Guard;
using tierlock::WorkerPool;
using namespace tierlock::testing;  // NOLINT: test support vocabulary
using namespace std::chrono_literals;

class CancelStormTest : public TierlockTest {};

struct StormCounts {
  std::atomic<int> granted{0};
  std::atomic<int> cancelled{0};
  std::atomic<int> timed_out{0};
};

// The stop source of the acquire a worker is in, for the canceller thread.
struct Slot {
  std::mutex mu;
  std::optional<std::stop_source> stop;
};

// Busy-waits about `n` short steps: varies where in a wait a cancel lands.
void spin(unsigned n) {
  for (unsigned i = 0; i < n; ++i) std::this_thread::yield();
}

TEST_F(CancelStormTest,
       TenThousandCancelledAcquiresUnderContentionLeakNothing) {
  constexpr int kWorkers = 4;
  const int kCycles = scaled(10'000, 2'000);
  const int per_worker = kCycles / kWorkers;
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process churn =
      Process::spawn({helper_path(), "churn", dir().string(), "200"});
  ASSERT_EQ(churn.read_line(), "ready");
  // Counted with the churn process's pipes open: they are the test's, not
  // the storm's.
  const int fds_before = count_open_fds();
  const int threads_before = count_threads();

  const auto start = std::chrono::steady_clock::now();
  StormCounts counts;
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::mutex error_mu;
  std::string error;
  auto report = [&](const std::string& e) {
    std::lock_guard<std::mutex> l(error_mu);
    if (error.empty()) error = e;
  };
  // Judges one outcome; a Guard must be exclusive among the workers.
  auto judge = [&](absl::StatusOr<Guard> g) {
    if (g.ok()) {
      if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
      inside.fetch_sub(1);
      ++counts.granted;
      absl::Status r = g->release();
      if (!r.ok()) report("release: " + r.ToString());
    } else if (g.status().code() == absl::StatusCode::kCancelled) {
      ++counts.cancelled;
    } else if (g.status().code() == absl::StatusCode::kDeadlineExceeded) {
      ++counts.timed_out;
    } else {
      report("neither a Guard nor cancelled/timed out: " +
             g.status().ToString());
    }
  };

  std::vector<Slot> slots(kWorkers);
  std::atomic<bool> done{false};
  {
    WorkerPool pool(2);
    std::thread canceller([&] {
      std::minstd_rand rng(7);
      while (!done.load()) {
        for (Slot& s : slots) {
          std::optional<std::stop_source> stop;
          {
            std::lock_guard<std::mutex> l(s.mu);
            stop = s.stop;
          }
          if (stop) stop->request_stop();
          spin(rng() % 8);
        }
      }
    });
    // A thread of ours that holds the lock for long stretches, so that most
    // acquires wait: in-process while it holds, in the kernel while the
    // other process does.
    std::thread hog([&] {
      while (!done.load()) {
        absl::StatusOr<Guard> g = lock.acquire();
        if (!g.ok()) {
          report("hog: " + g.status().ToString());
          return;
        }
        const auto until = std::chrono::steady_clock::now() + 500us;
        while (std::chrono::steady_clock::now() < until) spin(1);
      }
    });
    std::vector<std::thread> workers;
    for (int w = 0; w < kWorkers; ++w) {
      workers.emplace_back([&, w] {
        std::minstd_rand rng(static_cast<unsigned>(w) + 1);
        Slot& slot = slots[static_cast<std::size_t>(w)];
        for (int i = 0; i < per_worker; ++i) {
          AcquireOptions options;
          const int kind = i % 4;
          if (kind == 0 || kind == 2) {
            std::stop_source stop;
            options.stop = stop.get_token();
            std::lock_guard<std::mutex> l(slot.mu);
            slot.stop = std::move(stop);
          } else {
            options.timeout = std::chrono::microseconds(rng() % 300);
          }
          if (kind < 2) {
            judge(lock.acquire(std::move(options)));
          } else {
            options.pool = &pool;
            judge(lock.acquire_async(std::move(options)).get());
          }
          std::lock_guard<std::mutex> l(slot.mu);
          slot.stop.reset();
        }
      });
    }
    for (auto& t : workers) t.join();
    done = true;
    canceller.join();
    hog.join();
  }  // the pool's threads are joined here
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();

  ASSERT_TRUE(churn.write_line("stop"));
  std::optional<std::string> churned = churn.read_line();
  EXPECT_EQ(churn.wait().code, 0);
  EXPECT_EQ(error, "");
  EXPECT_EQ(overlaps.load(), 0);
  const int total = counts.granted + counts.cancelled + counts.timed_out;
  EXPECT_EQ(total, per_worker * kWorkers);
  // Contention really happened: some acquires did not get the lock.
  EXPECT_GT(counts.cancelled + counts.timed_out, 0);

  // Nothing leaked.
  EXPECT_TRUE(HoldsNothing(lock));
  EXPECT_LE(count_open_fds(), fds_before) << "descriptors leaked";
  EXPECT_TRUE(wait_until([&] { return count_threads() <= threads_before; }))
      << count_threads() << " threads, " << threads_before << " before";
  EXPECT_TRUE(LocksBecome(lock.lock_file(), no_locks()));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);

  std::cout << "[ figures  ] cancel storm: " << total << " acquires in " << secs
            << " s (" << counts.granted << " granted, " << counts.cancelled
            << " cancelled, " << counts.timed_out << " timed out) against "
            << churned.value_or("?") << " holds by another process; fds "
            << fds_before << " -> " << count_open_fds() << ", threads "
            << threads_before << " -> " << count_threads() << "\n";
}

}  // namespace

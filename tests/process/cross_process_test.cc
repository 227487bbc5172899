// tests/process/cross_process_test.cc
//
// DirLock between real processes: mutual exclusion under contention (a counter
// file incremented under the lock), shared holders, and interoperation with
// util-linux flock(1). Processes are tl_helper (fork+exec) or forked children;
// they synchronise through pipes and /proc/locks, never through sleeps.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "support/child.h"
#include "support/counter.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/proc_locks.h"
#include "support/status.h"
#include "support/wait.h"
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"

namespace {

using tierlock::DirLock;
using tierlock::Guard;
using tierlock::Mode;
using namespace tierlock::testing;  // NOLINT: test support vocabulary

class DirLockCrossProcessTest : public TierlockTest {};
class DirLockFlockInteropTest : public TierlockTest {
 protected:
  void SetUp() override {
    TierlockTest::SetUp();
    if (flock_path().empty()) GTEST_SKIP() << "flock(1) (util-linux) not found";
  }
};

// ------------------------------------------------------- mutual exclusion

// Starts `processes` tl_helper count processes of `threads` threads, each
// thread incrementing the counter `per_thread` times, and checks the total.
void run_counter_processes(const std::filesystem::path& dir, int processes,
                           int threads, int per_thread) {
  std::vector<Process> workers;
  for (int i = 0; i < processes; ++i) {
    workers.push_back(
        Process::spawn({helper_path(), "count", dir.string(),
                        std::to_string(per_thread), std::to_string(threads)}));
    workers.back().close_stdin();
  }
  for (Process& w : workers) {
    ExitStatus st = w.wait(std::chrono::seconds(120));
    EXPECT_EQ(st.code, 0) << "worker " << w.pid() << ": " << st.describe();
  }
  EXPECT_EQ(read_counter(dir / "counter"),
            static_cast<long long>(processes) * threads * per_thread);
}

TEST_F(DirLockCrossProcessTest, CounterIsExactWithFourProcesses) {
  run_counter_processes(dir(), /*processes=*/4, /*threads=*/1,
                        /*per_thread=*/2000);
}

TEST_F(DirLockCrossProcessTest, CounterIsExactWithFourThreadsOfOneProcess) {
  constexpr int kThreads = 4;
  constexpr int kIncrements = 2000;
  const auto counter = dir() / "counter";
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::string& err = errors[static_cast<std::size_t>(t)];
      // Each thread opens its own handle; all share the registry entry.
      absl::StatusOr<DirLock> lock = DirLock::open(dir());
      if (!lock.ok()) {
        err = lock.status().ToString();
        return;
      }
      for (int i = 0; i < kIncrements && err.empty(); ++i) {
        absl::StatusOr<Guard> g = lock->acquire();
        if (!g.ok()) {
          err = g.status().ToString();
          break;
        }
        err = increment_counter(counter);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  EXPECT_EQ(read_counter(counter), kThreads * kIncrements);
}

TEST_F(DirLockCrossProcessTest, CounterIsExactWithThreadsInSeveralProcesses) {
  run_counter_processes(dir(), /*processes=*/3, /*threads=*/3,
                        /*per_thread=*/1000);
}

// ------------------------------------------------------------ shared mode

TEST_F(DirLockCrossProcessTest, SharedHoldersInTwoProcessesHoldAtOnce) {
  Process a = start_holder(dir(), Mode::kShared);
  ASSERT_EQ(a.read_line(), "locked");
  Process b = start_holder(dir(), Mode::kShared);
  // b is granted while a still holds.
  ASSERT_EQ(b.read_line(), "locked");
  EXPECT_TRUE(LocksBecome(dir() / ".lock", [&](const auto& e) {
    return e.size() == 2 && count_holders_by(e, a.pid()) == 1 &&
           count_holders_by(e, b.pid()) == 1 && !e[0].exclusive() &&
           !e[1].exclusive();
  }));
  EXPECT_EQ(stop_holder(a).code, 0);
  EXPECT_EQ(stop_holder(b).code, 0);
}

TEST_F(DirLockCrossProcessTest, ExclusiveWaitsForBothSharedHoldersInProcesses) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process a = start_holder(dir(), Mode::kShared);
  ASSERT_EQ(a.read_line(), "locked");
  Process b = start_holder(dir(), Mode::kShared);
  ASSERT_EQ(b.read_line(), "locked");

  // An exclusive try fails, here and in another process; a shared one works.
  {
    ASSERT_OK_AND_ASSIGN(std::optional<Guard> g, lock.try_acquire());
    EXPECT_FALSE(g.has_value());
  }
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
  EXPECT_EQ(try_in_other_process(dir(), Mode::kShared), kAcquired);

  // A third process blocks in an exclusive acquire.
  Process c = start_holder(dir(), Mode::kExclusive);
  std::string table;
  ASSERT_TRUE(wait_for_locks(
      lock.lock_file(),
      [&](const auto& e) { return count_waiters_by(e, c.pid()) == 1; },
      kTimeout, &table))
      << table;
  EXPECT_FALSE(c.io().readable_now()) << "exclusive granted while shared held";

  // One shared holder goes: still blocked by the other.
  EXPECT_EQ(stop_holder(a).code, 0);
  ASSERT_TRUE(wait_for_locks(
      lock.lock_file(),
      [&](const auto& e) {
        return count_holders_by(e, a.pid()) == 0 &&
               count_holders_by(e, b.pid()) == 1 &&
               count_waiters_by(e, c.pid()) == 1;
      },
      kTimeout, &table))
      << table;
  EXPECT_FALSE(c.io().readable_now()) << "exclusive granted while shared held";

  // The last one goes: the exclusive acquire completes.
  EXPECT_EQ(stop_holder(b).code, 0);
  EXPECT_EQ(c.read_line(), "locked");
  EXPECT_EQ(try_in_other_process(dir(), Mode::kShared), kBusy);
  EXPECT_EQ(stop_holder(c).code, 0);
}

TEST_F(DirLockCrossProcessTest,
       ExclusiveInThreadWaitsForSharedHoldersInProcesses) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process a = start_holder(dir(), Mode::kShared);
  ASSERT_EQ(a.read_line(), "locked");
  Process b = start_holder(dir(), Mode::kShared);
  ASSERT_EQ(b.read_line(), "locked");

  std::future<absl::StatusOr<Guard>> waiter =
      std::async(std::launch::async, [&lock] { return lock.acquire(); });
  std::string table;
  ASSERT_TRUE(wait_for_locks(
      lock.lock_file(),
      [](const auto& e) { return count_waiters_by(e, ::getpid()) == 1; },
      kTimeout, &table))
      << table;
  EXPECT_EQ(waiter.wait_for(std::chrono::seconds(0)),
            std::future_status::timeout);

  EXPECT_EQ(stop_holder(a).code, 0);
  ASSERT_TRUE(wait_for_locks(
      lock.lock_file(),
      [&](const auto& e) {
        return count_holders_by(e, a.pid()) == 0 &&
               count_waiters_by(e, ::getpid()) == 1;
      },
      kTimeout, &table))
      << table;
  EXPECT_EQ(waiter.wait_for(std::chrono::seconds(0)),
            std::future_status::timeout);

  EXPECT_EQ(stop_holder(b).code, 0);
  ASSERT_EQ(waiter.wait_for(kTimeout), std::future_status::ready);
  absl::StatusOr<Guard> g = waiter.get();
  ASSERT_OK(g);
  EXPECT_EQ(try_in_other_process(dir(), Mode::kShared), kBusy);
}

TEST_F(DirLockCrossProcessTest, SharedWaitsForExclusiveHolderInAnotherProcess) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process holder = start_holder(dir(), Mode::kExclusive);
  ASSERT_EQ(holder.read_line(), "locked");
  std::future<absl::StatusOr<Guard>> waiter = std::async(
      std::launch::async, [&lock] { return lock.acquire(Mode::kShared); });
  std::string table;
  ASSERT_TRUE(wait_for_locks(
      lock.lock_file(),
      [](const auto& e) { return count_waiters_by(e, ::getpid()) == 1; },
      kTimeout, &table))
      << table;
  EXPECT_EQ(stop_holder(holder).code, 0);
  ASSERT_EQ(waiter.wait_for(kTimeout), std::future_status::ready);
  absl::StatusOr<Guard> g = waiter.get();
  ASSERT_OK(g);
  EXPECT_EQ(g->mode(), Mode::kShared);
  EXPECT_EQ(try_in_other_process(dir(), Mode::kShared), kAcquired);
}

// ---------------------------------------------------------------- flock(1)

TEST_F(DirLockFlockInteropTest, FlockToolHolderMakesTryAcquireReturnEmpty) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process tool =
      Process::spawn({flock_path(), "-x", lock.lock_file().string(), "cat"});
  std::string table;
  ASSERT_TRUE(wait_for_locks(
      lock.lock_file(), [](const auto& e) { return count_holders(e) == 1; },
      kTimeout, &table))
      << table;
  {
    ASSERT_OK_AND_ASSIGN(std::optional<Guard> g, lock.try_acquire());
    EXPECT_FALSE(g.has_value());
    ASSERT_OK_AND_ASSIGN(std::optional<Guard> s,
                         lock.try_acquire(Mode::kShared));
    EXPECT_FALSE(s.has_value());
  }
  EXPECT_EQ(try_in_other_thread(lock), kBusy);
  tool.close_stdin();  // cat exits, flock(1) releases
  EXPECT_EQ(tool.wait().code, 0);
  ASSERT_OK_AND_ASSIGN(std::optional<Guard> g, lock.try_acquire());
  EXPECT_TRUE(g.has_value());
}

TEST_F(DirLockFlockInteropTest, FlockToolSharedHolderAdmitsSharedOnly) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process tool =
      Process::spawn({flock_path(), "-s", lock.lock_file().string(), "cat"});
  std::string table;
  ASSERT_TRUE(wait_for_locks(
      lock.lock_file(), [](const auto& e) { return count_holders(e) == 1; },
      kTimeout, &table))
      << table;
  {
    ASSERT_OK_AND_ASSIGN(std::optional<Guard> g, lock.try_acquire());
    EXPECT_FALSE(g.has_value());
    ASSERT_OK_AND_ASSIGN(std::optional<Guard> s,
                         lock.try_acquire(Mode::kShared));
    EXPECT_TRUE(s.has_value());
  }
  tool.close_stdin();
  EXPECT_EQ(tool.wait().code, 0);
}

TEST_F(DirLockFlockInteropTest, FlockToolHolderBlocksAcquireUntilItExits) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process tool =
      Process::spawn({flock_path(), "-x", lock.lock_file().string(), "cat"});
  std::string table;
  ASSERT_TRUE(wait_for_locks(
      lock.lock_file(), [](const auto& e) { return count_holders(e) == 1; },
      kTimeout, &table))
      << table;
  std::future<absl::StatusOr<Guard>> waiter =
      std::async(std::launch::async, [&lock] { return lock.acquire(); });
  ASSERT_TRUE(wait_for_locks(
      lock.lock_file(),
      [](const auto& e) { return count_waiters_by(e, ::getpid()) == 1; },
      kTimeout, &table))
      << table;
  EXPECT_EQ(waiter.wait_for(std::chrono::seconds(0)),
            std::future_status::timeout);
  tool.close_stdin();
  EXPECT_EQ(tool.wait().code, 0);
  ASSERT_EQ(waiter.wait_for(kTimeout), std::future_status::ready);
  absl::StatusOr<Guard> g = waiter.get();
  ASSERT_OK(g);
  EXPECT_EQ(
      run({flock_path(), "-n", lock.lock_file().string(), "true"}).status.code,
      1);
}

TEST_F(DirLockFlockInteropTest, TierlockHolderMakesFlockToolFail) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  const std::string file = lock.lock_file().string();
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    EXPECT_EQ(run({flock_path(), "-n", file, "true"}).status.code, 1);
    EXPECT_EQ(run({flock_path(), "-n", "-s", file, "true"}).status.code, 1);
  }
  EXPECT_EQ(run({flock_path(), "-n", file, "true"}).status.code, 0);
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire(Mode::kShared));
    EXPECT_EQ(run({flock_path(), "-n", "-s", file, "true"}).status.code, 0);
    EXPECT_EQ(run({flock_path(), "-n", "-x", file, "true"}).status.code, 1);
  }
  EXPECT_EQ(run({flock_path(), "-n", "-x", file, "true"}).status.code, 0);
}

TEST_F(DirLockFlockInteropTest, ForkedChildSeesFlockToolHold) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process tool =
      Process::spawn({flock_path(), "-x", lock.lock_file().string(), "cat"});
  std::string table;
  ASSERT_TRUE(wait_for_locks(
      lock.lock_file(), [](const auto& e) { return count_holders(e) == 1; },
      kTimeout, &table))
      << table;
  const std::filesystem::path d = dir();
  ChildOutcome child = run_in_child([&lock, &d]() -> std::string {
    // Through the inherited handle, and through a fresh one.
    absl::StatusOr<std::optional<Guard>> inherited = lock.try_acquire();
    if (!inherited.ok())
      return "inherited try: " + inherited.status().ToString();
    if (inherited->has_value()) return "inherited handle acquired a held lock";
    absl::StatusOr<DirLock> fresh = DirLock::open(d);
    if (!fresh.ok()) return "open: " + fresh.status().ToString();
    absl::StatusOr<std::optional<Guard>> g = fresh->try_acquire();
    if (!g.ok()) return "fresh try: " + g.status().ToString();
    if (g->has_value()) return "fresh handle acquired a held lock";
    return "";
  });
  EXPECT_TRUE(child.ok()) << child.message;
  tool.close_stdin();
  EXPECT_EQ(tool.wait().code, 0);
}

TEST_F(DirLockFlockInteropTest, ForkedChildWithoutTheLockSeesTierlockHold) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  const std::filesystem::path file = lock.lock_file();
  const std::filesystem::path d = dir();
  ChildOutcome child = run_in_child([&file, &d]() -> std::string {
    // A raw flock on a new open file description must conflict.
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::string("open: ") + std::strerror(errno);
    int r = ::flock(fd, LOCK_EX | LOCK_NB);
    int err = errno;
    ::close(fd);
    if (r == 0) return "raw flock(LOCK_EX|LOCK_NB) succeeded in the child";
    if (err != EWOULDBLOCK)
      return std::string("raw flock: ") + std::strerror(err);
    absl::StatusOr<DirLock> fresh = DirLock::open(d);
    if (!fresh.ok()) return "open: " + fresh.status().ToString();
    absl::StatusOr<std::optional<Guard>> t = fresh->try_acquire(Mode::kShared);
    if (!t.ok()) return "try: " + t.status().ToString();
    if (t->has_value()) return "child acquired the parent's exclusive lock";
    return "";
  });
  EXPECT_TRUE(child.ok()) << child.message;
  EXPECT_TRUE(g.held());
  EXPECT_EQ(run({flock_path(), "-n", file.string(), "true"}).status.code, 1);
}

}  // namespace

// tests/api/dir_lock_test.cc
//
// DirLock in one process: opening, the kernel lock it takes, contention with
// other threads and processes, re-entry (self-deadlock) and the std Lockable
// members.
#include "tierlock/dir_lock.h"

#include <sys/stat.h>
#include <unistd.h>

#include <future>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <system_error>
#include <thread>

#include "gtest/gtest.h"
#include "support/files.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/proc_locks.h"
#include "support/status.h"
#include "support/wait.h"
#include "tierlock/guard.h"
#include "tierlock/registry.h"

namespace {

using tierlock::DirLock;
using tierlock::Guard;
using tierlock::LockOptions;
using tierlock::Mode;
using namespace tierlock::testing;  // NOLINT: test support vocabulary

class DirLockTest : public TierlockTest {};
class DirLockReentryTest : public TierlockTest {};
class DirLockLockableTest : public TierlockTest {};

// ------------------------------------------------------------------- opening

TEST_F(DirLockTest, OpenCreatesLockFileAndReportsCanonicalPaths) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  EXPECT_EQ(lock.directory(), dir());
  EXPECT_EQ(lock.lock_file(), dir() / ".lock");
  EXPECT_TRUE(lock.directory().is_absolute());
  FileSnapshot s = snapshot(dir() / ".lock");
  EXPECT_TRUE(s.exists);
  EXPECT_EQ(s.type, 'f');
  // Opening locks nothing.
  EXPECT_TRUE(LocksBecome(lock.lock_file(), no_locks()));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(DirLockTest, OpenUsesCustomLockFileName) {
  LockOptions options;
  options.lock_file_name = "workspace.lck";
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir(), options));
  EXPECT_EQ(lock.lock_file(), dir() / "workspace.lck");
  EXPECT_TRUE(snapshot(dir() / "workspace.lck").exists);
  EXPECT_FALSE(snapshot(dir() / ".lock").exists);
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_EQ(try_in_other_process(dir(), Mode::kExclusive, "workspace.lck"),
            kBusy);
  // A different lock file name in the same directory is a different lock.
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(DirLockTest, OpenKeepsACopyOfTheTier) {
  ASSERT_OK_AND_ASSIGN(DirLock untiered, DirLock::open(dir()));
  EXPECT_FALSE(untiered.tier().has_value());

  std::string name = "workspace";
  LockOptions options;
  options.tier = tierlock::Tier{10, name};
  ASSERT_OK_AND_ASSIGN(DirLock tiered, DirLock::open(dir(), options));
  name.assign("clobbered");  // the handle must not point into this string
  ASSERT_TRUE(tiered.tier().has_value());
  EXPECT_EQ(tiered.tier()->level, 10);
  EXPECT_EQ(tiered.tier()->name, "workspace");
  // The tier belongs to the handle, not to the lock file: the untiered
  // handle onto the same lock stays untiered, and copies keep the tier.
  EXPECT_FALSE(untiered.tier().has_value());
  DirLock copy = tiered;
  EXPECT_EQ(copy.tier(), tiered.tier());
}

TEST_F(DirLockTest, OpenCreatesLockFileWithUmaskedMode) {
  const mode_t old = ::umask(027);
  absl::StatusOr<DirLock> lock = DirLock::open(dir());
  ::umask(old);
  ASSERT_OK(lock);
  EXPECT_EQ(file_mode(dir() / ".lock"), 0640u);
}

TEST_F(DirLockTest, OpenLeavesExistingLockFileUntouched) {
  const auto lock_path = dir() / ".lock";
  write_file(lock_path, "pid 42 on host x\n", 0600);
  const FileSnapshot before = snapshot(lock_path);
  {
    ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    ASSERT_OK(g.release());
    ASSERT_OK_AND_ASSIGN(Guard s, lock.acquire(Mode::kShared));
  }
  // Never truncated, chmod'ed or deleted, even after everything is released.
  EXPECT_EQ(snapshot(lock_path), before);
}

// ------------------------------------------------------------ the kernel lock

TEST_F(DirLockTest, AcquireTakesKernelLockExclusively) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_TRUE(g.held());
  EXPECT_EQ(g.mode(), Mode::kExclusive);
  EXPECT_TRUE(LocksBecome(lock.lock_file(), [](const auto& e) {
    return e.size() == 1 && !e[0].waiter && e[0].exclusive() &&
           e[0].pid == ::getpid();
  }));
  ASSERT_OK(g.release());
  EXPECT_TRUE(LocksBecome(lock.lock_file(), no_locks()));
}

TEST_F(DirLockTest, AcquireSharedTakesKernelLockShared) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire(Mode::kShared));
  EXPECT_EQ(g.mode(), Mode::kShared);
  EXPECT_TRUE(LocksBecome(lock.lock_file(), [](const auto& e) {
    return e.size() == 1 && !e[0].waiter && !e[0].exclusive() &&
           e[0].pid == ::getpid();
  }));
  ASSERT_OK(g.release());
  EXPECT_TRUE(LocksBecome(lock.lock_file(), no_locks()));
}

TEST_F(DirLockTest, TryAcquireSucceedsWhenFree) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(std::optional<Guard> g, lock.try_acquire());
  ASSERT_TRUE(g.has_value());
  EXPECT_TRUE(g->held());
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
}

TEST_F(DirLockTest, TryAcquireReturnsEmptyWhenHeldByAnotherThread) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_EQ(try_in_other_thread(lock, Mode::kExclusive), kBusy);
  EXPECT_EQ(try_in_other_thread(lock, Mode::kShared), kBusy);
  ASSERT_OK(g.release());
  EXPECT_EQ(try_in_other_thread(lock, Mode::kExclusive), kAcquired);
}

TEST_F(DirLockTest, TryAcquireReturnsEmptyWhenHeldByAnotherProcess) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  {
    ASSERT_OK_AND_ASSIGN(std::optional<Guard> g, lock.try_acquire());
    EXPECT_FALSE(g.has_value());
    ASSERT_OK_AND_ASSIGN(std::optional<Guard> s,
                         lock.try_acquire(Mode::kShared));
    EXPECT_FALSE(s.has_value());
  }
  EXPECT_EQ(stop_holder(holder).code, 0);
  ASSERT_OK_AND_ASSIGN(std::optional<Guard> g, lock.try_acquire());
  EXPECT_TRUE(g.has_value());
}

TEST_F(DirLockTest, AcquireBlocksUntilAnotherProcessReleases) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  std::future<absl::StatusOr<Guard>> waiter =
      std::async(std::launch::async, [&lock] { return lock.acquire(); });
  // The waiter blocks in the kernel: /proc/locks shows it as "->".
  std::string table;
  EXPECT_TRUE(wait_for_locks(
      lock.lock_file(),
      [](const auto& e) { return count_waiters_by(e, ::getpid()) == 1; },
      kTimeout, &table))
      << table;
  EXPECT_EQ(waiter.wait_for(std::chrono::seconds(0)),
            std::future_status::timeout);
  EXPECT_EQ(stop_holder(holder).code, 0);
  ASSERT_EQ(waiter.wait_for(kTimeout), std::future_status::ready);
  absl::StatusOr<Guard> g = waiter.get();
  ASSERT_OK(g);
  EXPECT_TRUE(g->held());
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
}

TEST_F(DirLockTest, SharedHoldsInTwoThreadsCoexist) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire(Mode::kShared));
  EXPECT_EQ(try_in_other_thread(lock, Mode::kShared), kAcquired);
  EXPECT_EQ(try_in_other_thread(lock, Mode::kExclusive), kBusy);
  // Another process may share too, but not take it exclusively.
  EXPECT_EQ(try_in_other_process(dir(), Mode::kShared), kAcquired);
  EXPECT_EQ(try_in_other_process(dir(), Mode::kExclusive), kBusy);
}

TEST_F(DirLockTest, CopiesOfAHandleLockTheSameLock) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  DirLock copy = lock;
  EXPECT_EQ(copy.lock_file(), lock.lock_file());
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_EQ(try_in_other_thread(copy), kBusy);
}

// --------------------------------------------------------------- re-entry

TEST_F(DirLockReentryTest, ExclusiveReacquireOnSameThreadFailsPrecondition) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  absl::StatusOr<Guard> again = lock.acquire();
  EXPECT_TRUE(IsError(again.status(), absl::StatusCode::kFailedPrecondition,
                      dir().string()));
  // The first hold is intact, and released normally.
  EXPECT_TRUE(g.held());
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
  ASSERT_OK(g.release());
  ASSERT_OK_AND_ASSIGN(Guard g2, lock.acquire());
  EXPECT_TRUE(g2.held());
}

TEST_F(DirLockReentryTest, SharedAfterExclusiveOnSameThreadFailsPrecondition) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_TRUE(IsError(lock.acquire(Mode::kShared).status(),
                      absl::StatusCode::kFailedPrecondition));
  EXPECT_TRUE(g.held());
}

TEST_F(DirLockReentryTest, ExclusiveAfterSharedOnSameThreadFailsPrecondition) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire(Mode::kShared));
  EXPECT_TRUE(IsError(lock.acquire(Mode::kExclusive).status(),
                      absl::StatusCode::kFailedPrecondition));
  EXPECT_TRUE(g.held());
  // Still shared: another process can share, not take it exclusively.
  EXPECT_EQ(try_in_other_process(dir(), Mode::kShared), kAcquired);
  EXPECT_EQ(try_in_other_process(dir(), Mode::kExclusive), kBusy);
}

TEST_F(DirLockReentryTest, SharedAfterSharedOnSameThreadFailsPrecondition) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire(Mode::kShared));
  EXPECT_TRUE(IsError(lock.acquire(Mode::kShared).status(),
                      absl::StatusCode::kFailedPrecondition));
  EXPECT_TRUE(g.held());
}

TEST_F(DirLockReentryTest, TryAcquireReentryFailsPreconditionNotEmpty) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    EXPECT_TRUE(IsError(lock.try_acquire().status(),
                        absl::StatusCode::kFailedPrecondition));
    EXPECT_TRUE(IsError(lock.try_acquire(Mode::kShared).status(),
                        absl::StatusCode::kFailedPrecondition));
  }
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire(Mode::kShared));
    EXPECT_TRUE(IsError(lock.try_acquire(Mode::kShared).status(),
                        absl::StatusCode::kFailedPrecondition));
    EXPECT_TRUE(IsError(lock.try_acquire().status(),
                        absl::StatusCode::kFailedPrecondition));
  }
}

TEST_F(DirLockReentryTest, ReentryThroughAnotherHandleFailsPrecondition) {
  ASSERT_OK_AND_ASSIGN(DirLock a, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(DirLock b, DirLock::open(dir() / "."));
  ASSERT_OK_AND_ASSIGN(Guard g, a.acquire());
  EXPECT_TRUE(
      IsError(b.acquire().status(), absl::StatusCode::kFailedPrecondition));
  EXPECT_TRUE(
      IsError(b.try_acquire().status(), absl::StatusCode::kFailedPrecondition));
}

TEST_F(DirLockReentryTest, OtherThreadsStillQueueWhileHolderReenters) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_FALSE(lock.acquire().ok());
  EXPECT_EQ(try_in_other_thread(lock), kBusy);
  ASSERT_OK(g.release());
  EXPECT_EQ(try_in_other_thread(lock), kAcquired);
}

// ------------------------------------------------------------- std Lockable

TEST_F(DirLockLockableTest, ScopedLockHoldsAndReleases) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  {
    std::scoped_lock hold(lock);
    EXPECT_EQ(try_in_other_thread(lock), kBusy);
    EXPECT_EQ(try_in_other_process(dir()), kBusy);
  }
  EXPECT_EQ(try_in_other_thread(lock), kAcquired);
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(DirLockLockableTest, UniqueLockLocksTriesAndUnlocks) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::unique_lock hold(lock);
  EXPECT_TRUE(hold.owns_lock());
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
  hold.unlock();
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
  EXPECT_TRUE(hold.try_lock());
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
}

TEST_F(DirLockLockableTest, SharedLockAdmitsOtherSharedHolders) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  std::shared_lock hold(lock);
  EXPECT_TRUE(hold.owns_lock());
  EXPECT_EQ(try_in_other_thread(lock, Mode::kShared), kAcquired);
  EXPECT_EQ(try_in_other_thread(lock, Mode::kExclusive), kBusy);
  EXPECT_EQ(try_in_other_process(dir(), Mode::kShared), kAcquired);
  EXPECT_EQ(try_in_other_process(dir(), Mode::kExclusive), kBusy);
  // try_lock_shared from another thread works alongside.
  bool other = std::async(std::launch::async, [&lock] {
                 bool got = lock.try_lock_shared();
                 if (got) lock.unlock_shared();
                 return got;
               }).get();
  EXPECT_TRUE(other);
}

TEST_F(DirLockLockableTest, TryLockFailsWhenHeldByAnotherProcess) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  EXPECT_FALSE(lock.try_lock());
  EXPECT_FALSE(lock.try_lock_shared());
  EXPECT_EQ(stop_holder(holder).code, 0);
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
}

TEST_F(DirLockLockableTest, LockReentryThrowsSystemError) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  lock.lock();
  try {
    lock.lock();
    ADD_FAILURE() << "lock() re-entry did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::resource_deadlock_would_occur) << e.what();
    EXPECT_NE(std::string(e.what()).find(dir().string()), std::string::npos)
        << e.what();
  }
  // The first hold survives the failed re-entry.
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
  lock.unlock();
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(DirLockLockableTest, LockSharedReentryThrowsSystemError) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  lock.lock_shared();
  EXPECT_THROW(lock.lock_shared(), std::system_error);
  EXPECT_THROW(lock.lock(), std::system_error);
  lock.unlock_shared();
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(DirLockLockableTest, UnlockWithoutHoldThrows) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  try {
    lock.unlock();
    ADD_FAILURE() << "unlock() without a hold did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::operation_not_permitted) << e.what();
  }
  EXPECT_THROW(lock.unlock_shared(), std::system_error);
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(DirLockLockableTest, LockedInOneThreadUnlockedInAnother) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  lock.lock();
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
  std::async(std::launch::async, [&lock] { lock.unlock(); }).get();
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
}

}  // namespace

// tests/api/guard_test.cc
//
// Guard: release, moves, paths, and holds that outlive their handle or move
// between threads.
#include "tierlock/guard.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <optional>
#include <string>
#include <utility>

#include "gtest/gtest.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/status.h"
#include "support/tier_mode.h"
#include "tierlock/dir_lock.h"
#include "tierlock/registry.h"

namespace {

using tierlock::DirLock;
using tierlock::Guard;
using tierlock::LockOptions;
using tierlock::Mode;
using tierlock::Registry;
using namespace tierlock::testing;  // NOLINT: test support vocabulary

class GuardTest : public TierlockTest {};

TEST_F(GuardTest, DefaultGuardIsEmpty) {
  Guard g;
  EXPECT_FALSE(g.held());
  EXPECT_TRUE(g.lock_file().empty());
  EXPECT_OK(g.release());
  EXPECT_FALSE(g.held());
}

TEST_F(GuardTest, ReleaseIsIdempotent) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_TRUE(g.held());
  EXPECT_OK(g.release());
  EXPECT_FALSE(g.held());
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
  // A second release does nothing, even while someone else holds the lock.
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  EXPECT_OK(g.release());
  EXPECT_OK(g.release());
  EXPECT_FALSE(g.held());
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
  EXPECT_EQ(stop_holder(holder).code, 0);
}

TEST_F(GuardTest, DestructorReleases) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    EXPECT_EQ(try_in_other_process(dir()), kBusy);
  }
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
  EXPECT_EQ(try_in_other_thread(lock), kAcquired);
}

TEST_F(GuardTest, ModeReportsTheHoldsMode) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  {
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire(Mode::kExclusive));
    EXPECT_EQ(g.mode(), Mode::kExclusive);
  }
  ASSERT_OK_AND_ASSIGN(Guard s, lock.acquire(Mode::kShared));
  EXPECT_EQ(s.mode(), Mode::kShared);
}

TEST_F(GuardTest, MovedFromGuardIsEmptyAndTheHoldMoves) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard a, lock.acquire());
  Guard b(std::move(a));
  EXPECT_FALSE(a.held());  // NOLINT(bugprone-use-after-move): the point
  EXPECT_TRUE(b.held());
  EXPECT_EQ(b.lock_file(), lock.lock_file());
  // Releasing the moved-from guard must not release the hold.
  EXPECT_OK(a.release());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
  EXPECT_EQ(try_in_other_thread(lock), kBusy);

  Guard c;
  c = std::move(b);
  EXPECT_FALSE(b.held());  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(c.held());
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
  EXPECT_OK(c.release());
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(GuardTest, MoveAssignReleasesTheOldHold) {
  // Takes a then b, later a while holding b: a nesting cycle by design.
  ScopedTierCheckMode no_order_checks(tierlock::TierCheckMode::kIgnore);
  const auto dir_a = dir() / "a";
  const auto dir_b = dir() / "b";
  std::filesystem::create_directory(dir_a);
  std::filesystem::create_directory(dir_b);
  ASSERT_OK_AND_ASSIGN(DirLock a, DirLock::open(dir_a));
  ASSERT_OK_AND_ASSIGN(DirLock b, DirLock::open(dir_b));
  ASSERT_OK_AND_ASSIGN(Guard ga, a.acquire());
  ASSERT_OK_AND_ASSIGN(Guard gb, b.acquire(Mode::kShared));
  EXPECT_EQ(try_in_other_process(dir_a), kBusy);

  ga = std::move(gb);
  EXPECT_EQ(try_in_other_process(dir_a), kAcquired) << "old hold not released";
  EXPECT_EQ(try_in_other_process(dir_b), kBusy) << "new hold lost";
  EXPECT_TRUE(ga.held());
  EXPECT_EQ(ga.mode(), Mode::kShared);
  EXPECT_EQ(ga.lock_file(), dir_b / ".lock");
  EXPECT_FALSE(gb.held());  // NOLINT(bugprone-use-after-move)
  // This thread no longer holds `a`, so it may acquire it again.
  ASSERT_OK_AND_ASSIGN(Guard again, a.acquire());
  EXPECT_TRUE(again.held());
}

TEST_F(GuardTest, AssigningAnEmptyGuardReleases) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  g = Guard();
  EXPECT_FALSE(g.held());
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(GuardTest, PathsAreCanonicalAndAbsolute) {
  const auto real = dir() / "real";
  std::filesystem::create_directories(real / "sub");
  std::filesystem::create_directory_symlink(real, dir() / "link");
  // Symlinked directory, "." and "..", and a trailing slash.
  const std::filesystem::path spelled =
      (dir() / "link" / "." / "sub" / "..").string() + "/";
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(spelled));
  EXPECT_EQ(lock.directory(), real);
  EXPECT_TRUE(lock.directory().is_absolute());
  EXPECT_EQ(lock.lock_file(), real / ".lock");
  EXPECT_TRUE(lock.lock_file().is_absolute());
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_EQ(g.lock_file(), real / ".lock");
  EXPECT_TRUE(g.lock_file().is_absolute());
}

TEST_F(GuardTest, PathsAreAbsoluteForARelativeDirectory) {
  const auto real = dir() / "rel";
  std::filesystem::create_directory(real);
  const std::filesystem::path relative =
      std::filesystem::relative(real, std::filesystem::current_path());
  ASSERT_TRUE(relative.is_relative()) << relative;
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(relative));
  EXPECT_EQ(lock.directory(), real);
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_EQ(g.lock_file(), real / ".lock");
}

TEST_F(GuardTest, HoldOutlivesItsDirLockHandle) {
  const std::size_t before = Registry::global().size();
  std::optional<Guard> g;
  {
    ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
    ASSERT_OK_AND_ASSIGN(g, lock.acquire());
  }
  EXPECT_TRUE(g->held());
  EXPECT_EQ(Registry::global().size(), before + 1);
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
  EXPECT_EQ(g->lock_file(), dir() / ".lock");
  EXPECT_OK(g->release());
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
  g.reset();
  EXPECT_EQ(Registry::global().size(), before);
}

TEST_F(GuardTest, ReleasedOnAnotherThread) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  absl::Status released = std::async(std::launch::async, [&g] {
                            Guard mine = std::move(g);
                            return mine.release();
                          }).get();
  EXPECT_OK(released);
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
  // The acquiring thread holds nothing now: acquiring again is not re-entry.
  ASSERT_OK_AND_ASSIGN(Guard again, lock.acquire());
  EXPECT_TRUE(again.held());
}

TEST_F(GuardTest, DestroyedOnAnotherThread) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire(Mode::kShared));
  std::async(std::launch::async, [moved = std::move(g)]() mutable {
    Guard local = std::move(moved);
  }).get();
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

}  // namespace

// tests/process/fork_test.cc
//
// fork(): flock locks belong to the open file description, which a child
// shares with its parent. A Guard inherited by a child must be inert (never
// LOCK_UN the parent's lock), and an acquire in the child must use its own
// descriptor (never "succeed" by sharing the parent's).
//
// Every test forks while the test process runs no other thread; children report
// through pipes and exit codes, never through gtest assertions.
#include <unistd.h>

#include <optional>
#include <string>
#include <utility>

#include "gtest/gtest.h"
#include "support/child.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/proc_locks.h"
#include "support/status.h"
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"
#include "tierlock/registry.h"

namespace {

using tierlock::DirLock;
using tierlock::Guard;
using tierlock::Mode;
using tierlock::Registry;
using namespace tierlock::testing;  // NOLINT: test support vocabulary

class GuardForkTest : public TierlockTest {};
class DirLockForkTest : public TierlockTest {};

// Returns "" if the child's inherited guard behaves as inert.
std::string release_inherited(Guard& g) {
  if (g.held()) return "inherited guard reports held() in the child";
  absl::Status r = g.release();
  if (!r.ok()) return "release() in child: " + r.ToString();
  { Guard gone = std::move(g); }  // and destroy it
  return "";
}

void check_inherited_guard_is_inert(const std::filesystem::path& dir,
                                    Mode mode) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire(mode));
  ChildOutcome child = run_in_child([&g, &lock]() -> std::string {
    std::string err = release_inherited(g);
    if (!err.empty()) return err;
    { DirLock handle = std::move(lock); }  // drop the child's handle too
    return "";
  });
  EXPECT_TRUE(child.ok()) << child.message;
  // The parent still holds it, as seen from a third process.
  EXPECT_TRUE(g.held());
  EXPECT_EQ(try_in_other_process(dir, Mode::kExclusive), kBusy);
  EXPECT_EQ(try_in_other_process(dir, Mode::kShared),
            mode == Mode::kShared ? kAcquired : kBusy);
  EXPECT_TRUE(LocksBecome(dir / ".lock", held_by(::getpid())));
  ASSERT_OK(g.release());
  EXPECT_EQ(try_in_other_process(dir), kAcquired);
}

TEST_F(GuardForkTest, InheritedExclusiveGuardIsInertInChild) {
  check_inherited_guard_is_inert(dir(), Mode::kExclusive);
}

TEST_F(GuardForkTest, InheritedSharedGuardIsInertInChild) {
  check_inherited_guard_is_inert(dir(), Mode::kShared);
}

TEST_F(GuardForkTest, ChildExitingWithoutReleaseKeepsParentHold) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  ChildOutcome child = run_in_child([]() -> std::string { return ""; });
  EXPECT_TRUE(child.ok()) << child.message;
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
}

TEST_F(GuardForkTest, LockableHoldIsNotReleasedByChildUnlock) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  lock.lock();
  ChildOutcome child = run_in_child([&lock]() -> std::string {
    // The child does not hold the parent's lock; unlock() must not release it
    // (it throws, as for any lock the process does not hold).
    try {
      lock.unlock();
    } catch (const std::system_error&) {
    }
    return "";
  });
  EXPECT_TRUE(child.ok()) << child.message;
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
  lock.unlock();
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(DirLockForkTest, ChildAcquiresInheritedHandleOnlyAfterParentReleases) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  Process child = Process::fork([&lock, &g](LineChannel& ch) -> int {
    std::string err = release_inherited(g);
    if (!err.empty()) {
      ch.write_line(err);
      return 1;
    }
    // While the parent holds: must not succeed by sharing its descriptor.
    absl::StatusOr<std::optional<Guard>> t = lock.try_acquire();
    if (!t.ok()) {
      ch.write_line("try: " + t.status().ToString());
      return 1;
    }
    if (t->has_value()) {
      ch.write_line("child acquired while the parent holds");
      return 1;
    }
    ch.write_line("tried");
    if (ch.read_line() != "released") return 2;
    absl::StatusOr<Guard> mine = lock.acquire();
    if (!mine.ok()) {
      ch.write_line("acquire: " + mine.status().ToString());
      return 1;
    }
    ch.write_line("acquired");
    if (ch.read_line() != "checked") return 2;
    absl::Status r = mine->release();
    if (!r.ok()) {
      ch.write_line("release: " + r.ToString());
      return 1;
    }
    return 0;
  });
  ASSERT_EQ(child.read_line(), "tried");
  ASSERT_OK(g.release());
  ASSERT_TRUE(child.write_line("released"));
  ASSERT_EQ(child.read_line(), "acquired");
  // The child's hold is its own: it excludes this process (same handle, other
  // descriptor) and a third one.
  {
    ASSERT_OK_AND_ASSIGN(std::optional<Guard> t, lock.try_acquire());
    EXPECT_FALSE(t.has_value()) << "parent acquired while the child holds";
  }
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
  EXPECT_TRUE(LocksBecome(lock.lock_file(), [&](const auto& e) {
    return e.size() == 1 && count_holders_by(e, child.pid()) == 1;
  }));
  ASSERT_TRUE(child.write_line("checked"));
  ExitStatus st = child.wait();
  EXPECT_EQ(st.code, 0) << st.describe() << " " << child.io().read_all();
  ASSERT_OK_AND_ASSIGN(std::optional<Guard> t, lock.try_acquire());
  EXPECT_TRUE(t.has_value());
}

TEST_F(DirLockForkTest, ChildHoldExcludesParent) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  Process child = Process::fork([&lock](LineChannel& ch) -> int {
    absl::StatusOr<Guard> g = lock.acquire();
    if (!g.ok()) {
      ch.write_line("acquire: " + g.status().ToString());
      return 1;
    }
    ch.write_line("locked");
    ch.read_line();  // hold until told (or EOF)
    return g->release().ok() ? 0 : 1;
  });
  ASSERT_EQ(child.read_line(), "locked");
  {
    ASSERT_OK_AND_ASSIGN(std::optional<Guard> t, lock.try_acquire());
    EXPECT_FALSE(t.has_value());
    ASSERT_OK_AND_ASSIGN(std::optional<Guard> s,
                         lock.try_acquire(Mode::kShared));
    EXPECT_FALSE(s.has_value());
  }
  ASSERT_TRUE(child.write_line("release"));
  EXPECT_EQ(child.wait().code, 0);
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_TRUE(g.held());
}

TEST_F(DirLockForkTest, ChildSharedHoldCoexistsWithParentSharedHold) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire(Mode::kShared));
  Process child = Process::fork([&lock, &g](LineChannel& ch) -> int {
    std::string err = release_inherited(g);
    if (!err.empty()) {
      ch.write_line(err);
      return 1;
    }
    absl::StatusOr<std::optional<Guard>> t = lock.try_acquire(Mode::kShared);
    if (!t.ok() || !t->has_value()) {
      ch.write_line("child could not share");
      return 1;
    }
    ch.write_line("locked");
    ch.read_line();
    return (*t)->release().ok() ? 0 : 1;
  });
  ASSERT_EQ(child.read_line(), "locked");
  EXPECT_TRUE(LocksBecome(lock.lock_file(), [&](const auto& e) {
    return e.size() == 2 && count_holders_by(e, ::getpid()) == 1 &&
           count_holders_by(e, child.pid()) == 1;
  }));
  // The parent lets go; the child's own shared hold still excludes writers.
  ASSERT_OK(g.release());
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
  ASSERT_TRUE(child.write_line("release"));
  EXPECT_EQ(child.wait().code, 0);
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(DirLockForkTest, ChildStartsWithEmptyRegistry) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  ASSERT_GE(Registry::global().size(), 1u);
  const std::filesystem::path d = dir();
  ChildOutcome child = run_in_child([&d]() -> std::string {
    if (Registry::global().size() != 0) {
      return "child registry has " + std::to_string(Registry::global().size()) +
             " entries";
    }
    absl::StatusOr<DirLock> fresh = DirLock::open(d);
    if (!fresh.ok()) return "open: " + fresh.status().ToString();
    if (Registry::global().size() != 1) return "open did not add one entry";
    absl::StatusOr<std::optional<Guard>> t = fresh->try_acquire();
    if (!t.ok()) return "try: " + t.status().ToString();
    if (t->has_value()) return "child acquired the parent's exclusive lock";
    return "";
  });
  EXPECT_TRUE(child.ok()) << child.message;
}

TEST_F(DirLockForkTest, GrandchildOfHolderSeesLockHeld) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  ChildOutcome child = run_in_child([&lock, &g]() -> std::string {
    std::string err = release_inherited(g);
    if (!err.empty()) return err;
    // The child takes a shared lock of its own, then forks again.
    absl::StatusOr<std::optional<Guard>> t = lock.try_acquire(Mode::kShared);
    if (!t.ok()) return "child try: " + t.status().ToString();
    if (t->has_value()) return "child acquired while the parent holds";
    ChildOutcome grandchild = run_in_child([&lock]() -> std::string {
      absl::StatusOr<std::optional<Guard>> t2 = lock.try_acquire();
      if (!t2.ok()) return "grandchild try: " + t2.status().ToString();
      if (t2->has_value()) return "grandchild acquired while the parent holds";
      return "";
    });
    if (!grandchild.ok()) return "grandchild: " + grandchild.message;
    return "";
  });
  EXPECT_TRUE(child.ok()) << child.message;
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
}

}  // namespace

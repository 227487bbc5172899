// tests/process/path_race_test.cc
//
// Races on the path, and the semantics they pin (docs/design.md, "The path
// after open"): a DirLock locks the inode it opened. DirLock::open resolves
// the directory and opens the lock file once; acquires use that descriptor
// and never look at the path again. So:
//   - a directory renamed, or replaced by a symlink, between open and
//     acquire: the acquire locks the original directory's lock file, where
//     it now is; the path's new occupant is a different lock;
//   - a lock file deleted (or replaced) by someone else: the hold stays on
//     the old, now unreachable, inode, and a newcomer creates and locks a new
//     file. Exclusion between the two is lost; tierlock never deletes or
//     replaces a lock file itself, and does not try to detect this (see the
//     design note for why).
#include <stdio.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "support/files.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/proc_locks.h"
#include "support/status.h"
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"

namespace {

using tierlock::DirLock;
using tierlock::Guard;
using tierlock::Mode;
using namespace tierlock::testing;  // NOLINT: test support vocabulary

class DirLockPathRaceTest : public TierlockTest {
 protected:
  std::filesystem::path make_ws(const std::string& name) {
    const auto ws = dir() / name;
    std::filesystem::create_directory(ws);
    return ws;
  }
};

// True if a flock entry of this process is on inode `ino` (any device).
bool this_process_locks_inode(std::uint64_t ino) {
  for (const ProcLock& e : read_proc_locks()) {
    if (e.is_flock() && !e.waiter && e.pid == ::getpid() && e.inode == ino) {
      return true;
    }
  }
  return false;
}

TEST_F(DirLockPathRaceTest, DirectoryRenamedBeforeAcquireLocksItWhereItIs) {
  const auto ws = make_ws("ws");
  const auto moved = dir() / "moved";
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(ws));
  std::filesystem::rename(ws, moved);
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  // The lock followed the directory.
  EXPECT_EQ(try_in_other_process(moved), kBusy);
  // A new directory at the old path is another lock.
  std::filesystem::create_directory(ws);
  EXPECT_EQ(try_in_other_process(ws), kAcquired);
  // The handle reports the path as it was resolved at open.
  EXPECT_EQ(lock.directory(), ws);
  ASSERT_OK(g.release());
  EXPECT_EQ(try_in_other_process(moved), kAcquired);
}

TEST_F(DirLockPathRaceTest,
       DirectoryReplacedBySymlinkBeforeAcquireLocksTheOriginal) {
  const auto ws = make_ws("ws");
  const auto real = dir() / "real";
  const auto other = make_ws("other");
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(ws));
  std::filesystem::rename(ws, real);
  std::filesystem::create_directory_symlink(other, ws);
  const FileSnapshot link_before = snapshot(ws);

  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_EQ(try_in_other_process(real), kBusy);
  // The symlink's target is not what we opened, so it is not what we hold.
  EXPECT_EQ(try_in_other_process(other), kAcquired);
  EXPECT_EQ(try_in_other_process(ws), kAcquired);
  // A new handle in this process resolves the path anew: a different lock,
  // with its own registry entry.
  {
    ASSERT_OK_AND_ASSIGN(DirLock fresh, DirLock::open(ws));
    EXPECT_EQ(fresh.directory(), other);
    ASSERT_OK_AND_ASSIGN(std::optional<Guard> t, fresh.try_acquire());
    EXPECT_TRUE(t.has_value());
  }
  EXPECT_EQ(snapshot(ws), link_before);
}

TEST_F(DirLockPathRaceTest, LockFileDeletedWhileHeldLetsANewcomerIn) {
  // Pins the one interference tierlock cannot survive: someone else deletes
  // the lock file. Our hold stays on the old inode; a newcomer creates and
  // locks a new file at the path.
  const auto ws = make_ws("ws");
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(ws));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  const std::uint64_t old_inode = inode_of(ws / ".lock");
  ASSERT_EQ(::unlink((ws / ".lock").c_str()), 0);

  EXPECT_EQ(try_in_other_process(ws), kAcquired);
  EXPECT_NE(inode_of(ws / ".lock"), old_inode);
  EXPECT_TRUE(g.held());
  EXPECT_TRUE(this_process_locks_inode(old_inode));
  // In this process too: a new handle finds the new inode, not our entry.
  {
    ASSERT_OK_AND_ASSIGN(DirLock fresh, DirLock::open(ws));
    ASSERT_OK_AND_ASSIGN(std::optional<Guard> t, fresh.try_acquire());
    EXPECT_TRUE(t.has_value());
  }
  ASSERT_OK(g.release());
  // tierlock left the newcomer's file alone.
  EXPECT_EQ(snapshot(ws / ".lock").type, 'f');
}

TEST_F(DirLockPathRaceTest, LockFileReplacedByRenameWhileHeldLetsANewcomerIn) {
  // The same through an atomic replace (an editor's or installer's rename).
  const auto ws = make_ws("ws");
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(ws));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  write_file(dir() / "replacement", "", 0644);
  ASSERT_EQ(::rename((dir() / "replacement").c_str(), (ws / ".lock").c_str()),
            0);
  EXPECT_EQ(try_in_other_process(ws), kAcquired);
  ASSERT_OK(g.release());
}

TEST_F(DirLockPathRaceTest, LockFileDeletedBetweenOpenAndAcquireLocksANewFile) {
  // The grant on the deleted inode is dropped (it would exclude nobody who
  // opens the path now) and the acquire is redone on a new file at the path.
  const auto ws = make_ws("ws");
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(ws));
  const std::uint64_t old_inode = inode_of(ws / ".lock");
  ASSERT_EQ(::unlink((ws / ".lock").c_str()), 0);
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_FALSE(this_process_locks_inode(old_inode));
  ASSERT_TRUE(snapshot(ws / ".lock").exists);
  EXPECT_TRUE(this_process_locks_inode(inode_of(ws / ".lock")));
  EXPECT_EQ(try_in_other_process(ws), kBusy);
  ASSERT_OK(g.release());
}

TEST_F(DirLockPathRaceTest, ExclusionHoldsWhenNobodyDeletesTheFile) {
  // The control for the tests above: with the path left alone, the rename
  // dance of the directory around a held lock changes nothing for anyone
  // who reaches the same inode, by any path.
  const auto ws = make_ws("ws");
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(ws));
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire(Mode::kShared));
  const auto moved = dir() / "moved";
  std::filesystem::rename(ws, moved);
  std::filesystem::create_directory_symlink(moved, ws);
  EXPECT_EQ(try_in_other_process(ws), kBusy);
  EXPECT_EQ(try_in_other_process(moved), kBusy);
  EXPECT_EQ(try_in_other_process(ws, Mode::kShared), kAcquired);
  ASSERT_OK(g.release());
}

}  // namespace

// tests/process/lock_file_safety_test.cc
//
// Lock files that someone else can delete or replace:
//   - detection (DirLock::unsafe_reason, LockOptions::refuse_unsafe_lock_file,
//     LockState::unsafe_reason), with the stranger played by nobody when the
//     tests run as root (CI does);
//   - the check after every kernel grant that the path still names the locked
//     file, with real processes holding the old and the new file;
//   - a directory where the lock file cannot be created (/proc) is not
//     reported as a missing directory.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "support/files.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/proc_locks.h"
#include "support/status.h"
#include "support/unprivileged.h"
#include "support/wait.h"
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"
#include "tierlock/holder.h"

namespace {

using tierlock::DirLock;
using tierlock::Guard;
using tierlock::LockOptions;
using namespace tierlock::testing;  // NOLINT: test support vocabulary

// The flock entries of this inode (granted or waiting), by any process.
std::vector<ProcLock> locks_on_inode(std::uint64_t inode) {
  std::vector<ProcLock> out;
  for (const ProcLock& l : read_proc_locks()) {
    if (l.is_flock() && l.inode == inode) out.push_back(l);
  }
  return out;
}

bool waits_on(pid_t pid, std::uint64_t inode) {
  return count_waiters_by(locks_on_inode(inode), pid) > 0;
}

bool holds(pid_t pid, std::uint64_t inode) {
  return count_holders_by(locks_on_inode(inode), pid) > 0;
}

class LockFileSafetyTest : public TierlockTest {
 protected:
  std::filesystem::path make_dir(const std::string& name, mode_t mode) {
    // The test directory is 0700: nobody must be able to reach inside.
    EXPECT_EQ(::chmod(dir().c_str(), 0755), 0);
    const auto p = dir() / name;
    std::filesystem::create_directory(p);
    EXPECT_EQ(::chmod(p.c_str(), mode), 0);
    return p;
  }
};

TEST_F(LockFileSafetyTest, OwnDirectoryIsSafe) {
  const auto ws = make_dir("ws", 0755);
  LockOptions refuse;
  refuse.refuse_unsafe_lock_file = true;
  absl::StatusOr<DirLock> lock = DirLock::open(ws, refuse);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_EQ(lock->unsafe_reason(), "");
  absl::StatusOr<tierlock::LockState> state = tierlock::inspect_lock(ws);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->unsafe_reason, "");
}

TEST_F(LockFileSafetyTest, WorldWritableDirectoryWithoutStickyBitIsReported) {
  const auto ws = make_dir("ws", 0777);
  absl::StatusOr<DirLock> lock = DirLock::open(ws);
  ASSERT_TRUE(lock.ok()) << lock.status();
  const std::string why = lock->unsafe_reason();
  EXPECT_NE(why.find(ws.string()), std::string::npos) << why;
  EXPECT_NE(why.find("mode 0777"), std::string::npos) << why;
  EXPECT_NE(why.find("sticky"), std::string::npos) << why;

  absl::StatusOr<tierlock::LockState> state = tierlock::inspect_lock(ws);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->unsafe_reason, why);

  LockOptions refuse;
  refuse.refuse_unsafe_lock_file = true;
  EXPECT_TRUE(IsError(DirLock::open(ws, refuse).status(),
                      absl::StatusCode::kFailedPrecondition,
                      (ws / ".lock").string(), "mode 0777"));
}

TEST_F(LockFileSafetyTest, GroupWritableDirectoryIsReported) {
  const auto ws = make_dir("ws", 0770);
  absl::StatusOr<DirLock> lock = DirLock::open(ws);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_NE(lock->unsafe_reason().find("writable by its group"),
            std::string::npos)
      << lock->unsafe_reason();
}

TEST_F(LockFileSafetyTest, OwnLockFileInStickyDirectoryIsSafe) {
  const auto ws = make_dir("tmp", 01777);
  absl::StatusOr<DirLock> lock = DirLock::open(ws);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_EQ(lock->unsafe_reason(), "");
}

TEST_F(LockFileSafetyTest, StrangersLockFileInStickyDirectoryIsReported) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to play another user";
  const auto ws = make_dir("tmp", 01777);
  // nobody creates the lock file first (and could delete it at any time).
  ChildOutcome child = run_unprivileged([&]() -> std::string {
    absl::StatusOr<DirLock> lock = DirLock::open(ws);
    return lock.ok() ? "" : lock.status().ToString();
  });
  if (child.skipped()) GTEST_SKIP() << child.message;
  ASSERT_TRUE(child.ok()) << child.message;
  struct stat st;
  ASSERT_EQ(::stat((ws / ".lock").c_str(), &st), 0);
  ASSERT_EQ(st.st_uid, kNobodyUid);

  absl::StatusOr<DirLock> lock = DirLock::open(ws);
  ASSERT_TRUE(lock.ok()) << lock.status();
  const std::string why = lock->unsafe_reason();
  EXPECT_NE(why.find((ws / ".lock").string()), std::string::npos) << why;
  EXPECT_NE(why.find("uid 65534"), std::string::npos) << why;
  EXPECT_NE(why.find("mode 1777"), std::string::npos) << why;

  absl::StatusOr<tierlock::LockState> state = tierlock::inspect_lock(ws);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->unsafe_reason, why);

  LockOptions refuse;
  refuse.refuse_unsafe_lock_file = true;
  EXPECT_TRUE(IsError(DirLock::open(ws, refuse).status(),
                      absl::StatusCode::kFailedPrecondition,
                      (ws / ".lock").string(), "uid 65534"));
}

TEST_F(LockFileSafetyTest, DirectoryOwnedByStrangerIsReported) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to play another user";
  const auto ws = make_dir("theirs", 0755);
  ASSERT_EQ(::chown(ws.c_str(), kNobodyUid, kNobodyGid), 0);
  absl::StatusOr<DirLock> lock = DirLock::open(ws);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_NE(lock->unsafe_reason().find("owned by uid 65534"), std::string::npos)
      << lock->unsafe_reason();
}

// /proc exists, but no file can be created in it: not "no such directory".
TEST(DirLockCreateTest, DirectoryWhereNoFileCanBeCreatedIsNotNotFound) {
  if (!std::filesystem::exists("/proc/self")) GTEST_SKIP() << "no /proc";
  absl::Status st = DirLock::open("/proc").status();
  EXPECT_TRUE(IsError(st, absl::StatusCode::kUnimplemented, "/proc/.lock",
                      "does not allow creating"));
}

class LockFileReplacedTest : public TierlockTest {};

// Deleted between open and acquire: the acquire locks a new file at the
// path, which others opening the path will find, not the deleted one.
TEST_F(LockFileReplacedTest, UnlinkedBetweenOpenAndAcquireLocksTheNewFile) {
  absl::StatusOr<DirLock> lock = DirLock::open(dir());
  ASSERT_TRUE(lock.ok()) << lock.status();
  const std::uint64_t old_inode = inode_of(dir() / ".lock");
  ASSERT_EQ(::unlink((dir() / ".lock").c_str()), 0);
  {
    absl::StatusOr<Guard> g = lock->acquire();
    ASSERT_TRUE(g.ok()) << g.status();
    ASSERT_TRUE(std::filesystem::exists(dir() / ".lock"));
    const std::uint64_t new_inode = inode_of(dir() / ".lock");
    EXPECT_NE(new_inode, old_inode);
    EXPECT_TRUE(holds(::getpid(), new_inode)) << describe(read_proc_locks());
    EXPECT_FALSE(holds(::getpid(), old_inode));
    EXPECT_EQ(try_in_other_process(dir()), kBusy);
  }
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

// Replaced between open and a try while another process holds the new
// file: the try must see that holder, not take the deleted file.
TEST_F(LockFileReplacedTest, TryAfterReplacementSeesTheNewHolder) {
  absl::StatusOr<DirLock> lock = DirLock::open(dir());
  ASSERT_TRUE(lock.ok()) << lock.status();
  ASSERT_EQ(::unlink((dir() / ".lock").c_str()), 0);
  Process c = start_holder(dir());
  ASSERT_EQ(c.read_line(), "locked");
  {
    absl::StatusOr<std::optional<Guard>> g = lock->try_acquire();
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_FALSE(g->has_value()) << "acquired the deleted lock file while "
                                    "another process holds the new one";
  }
  EXPECT_EQ(stop_holder(c).code, 0);
  absl::StatusOr<std::optional<Guard>> g = lock->try_acquire();
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->has_value());
  EXPECT_EQ(lock->unsafe_reason(), "");  // the handle follows the new file
}

// The classic deletion race: B waits in the kernel on the old file while it
// is deleted and C takes the new one; A's release grants B the old file,
// which must not count: B waits for C, then holds the new file.
TEST_F(LockFileReplacedTest, WaiterGrantedTheDeletedFileWaitsForTheNewHolder) {
  Process a = start_holder(dir());
  ASSERT_EQ(a.read_line(), "locked");
  const std::uint64_t old_inode = inode_of(dir() / ".lock");
  Process b = Process::spawn({helper_path(), "wait-time", dir().string()});
  ASSERT_EQ(b.read_line(), "opened");
  ASSERT_TRUE(wait_until([&] { return waits_on(b.pid(), old_inode); }))
      << describe(read_proc_locks());

  ASSERT_EQ(::unlink((dir() / ".lock").c_str()), 0);
  Process c = start_holder(dir());
  ASSERT_EQ(c.read_line(), "locked");
  const std::uint64_t new_inode = inode_of(dir() / ".lock");
  ASSERT_NE(new_inode, old_inode);

  EXPECT_EQ(stop_holder(a).code, 0);
  // B's grant on the old file is dropped; B now waits for C's file.
  EXPECT_TRUE(wait_until([&] { return waits_on(b.pid(), new_inode); }))
      << describe(read_proc_locks());
  EXPECT_FALSE(holds(b.pid(), old_inode));
  EXPECT_FALSE(b.io().readable_now()) << "B reported a grant while C holds";

  EXPECT_EQ(stop_holder(c).code, 0);
  std::optional<std::string> got = b.read_line();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->rfind("acquired ", 0), 0u) << *got;
  EXPECT_TRUE(holds(b.pid(), new_inode)) << describe(read_proc_locks());
  b.close_stdin();
  EXPECT_EQ(b.wait().code, 0);
}

// In-process waiters queued behind the kernel waiter move to the new file
// too: after the replacement every thread of this process waits for C, and
// then each gets the new file's lock in turn.
TEST_F(LockFileReplacedTest, InProcessWaitersMoveToTheNewFile) {
  Process a = start_holder(dir());
  ASSERT_EQ(a.read_line(), "locked");
  const std::uint64_t old_inode = inode_of(dir() / ".lock");
  absl::StatusOr<DirLock> lock = DirLock::open(dir());
  ASSERT_TRUE(lock.ok()) << lock.status();

  constexpr int kThreads = 3;
  std::atomic<int> holding{0};
  std::atomic<int> max_holding{0};
  std::atomic<int> done{0};
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i, handle = *lock]() mutable {
      absl::StatusOr<Guard> g = handle.acquire();
      if (!g.ok()) {
        errors[static_cast<std::size_t>(i)] = g.status().ToString();
      } else {
        const int now = holding.fetch_add(1) + 1;
        int seen = max_holding.load();
        while (now > seen && !max_holding.compare_exchange_weak(seen, now)) {
        }
        holding.fetch_sub(1);
        (void)g->release();
      }
      done.fetch_add(1);
    });
  }
  ASSERT_TRUE(wait_until([&] { return waits_on(::getpid(), old_inode); }));

  ASSERT_EQ(::unlink((dir() / ".lock").c_str()), 0);
  Process c = start_holder(dir());
  ASSERT_EQ(c.read_line(), "locked");
  const std::uint64_t new_inode = inode_of(dir() / ".lock");

  EXPECT_EQ(stop_holder(a).code, 0);
  EXPECT_TRUE(wait_until([&] { return waits_on(::getpid(), new_inode); }))
      << describe(read_proc_locks());
  EXPECT_EQ(done.load(), 0) << "a thread returned while C holds the new file";

  EXPECT_EQ(stop_holder(c).code, 0);
  for (auto& t : threads) t.join();
  for (const std::string& e : errors) EXPECT_EQ(e, "");
  EXPECT_EQ(done.load(), kThreads);
  EXPECT_EQ(max_holding.load(), 1);
  EXPECT_TRUE(locks_on_inode(old_inode).empty());
}

}  // namespace

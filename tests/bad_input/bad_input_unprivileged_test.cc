// tests/bad_input/bad_input_unprivileged_test.cc
//
// Permission errors, checked as an unprivileged user. CI runs as root, and
// root bypasses permission checks, so each case runs in a forked child that
// switches to nobody:nogroup (support/child.h); a non-root run is already
// unprivileged and runs the child as itself. Each case expects a clear error
// (kPermissionDenied, naming the path and the reason) or, where tierlock can
// lock without the permission, a real lock; and every foreign file or
// directory exactly as it was. bad_input_test.cc has the cases that
// need no user switch (and the unwritable-directory one).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "support/child.h"
#include "support/files.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/status.h"
#include "support/unprivileged.h"
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"

namespace {

using tierlock::DirLock;
using tierlock::Guard;
using tierlock::LockOptions;
using tierlock::Mode;
using namespace tierlock::testing;  // NOLINT: test support vocabulary

class DirLockPermissionTest : public TierlockTest {
 protected:
  void SetUp() override {
    TierlockTest::SetUp();
    // The test directory is 0700; nobody must be able to reach inside it.
    ASSERT_EQ(::chmod(dir().c_str(), 0755), 0);
  }

  // Expects DirLock::open(`ws`, options) run unprivileged to fail with
  // kPermissionDenied naming `named`; and `foreign` unchanged.
  void expect_denied(const std::filesystem::path& ws,
                     const std::filesystem::path& named,
                     const std::vector<std::filesystem::path>& foreign,
                     LockOptions options = {}) {
    std::vector<FileSnapshot> before;
    for (const auto& p : foreign) before.push_back(snapshot(p));
    ChildOutcome child = run_unprivileged([&]() -> std::string {
      absl::StatusOr<DirLock> lock = DirLock::open(ws, options);
      ::testing::AssertionResult r =
          IsError(lock.status(), absl::StatusCode::kPermissionDenied,
                  named.string(), "Permission denied");
      return r ? "" : r.message();
    });
    if (child.skipped()) GTEST_SKIP() << child.message;
    EXPECT_TRUE(child.ok()) << child.message;
    for (std::size_t i = 0; i < foreign.size(); ++i) {
      EXPECT_EQ(snapshot(foreign[i]), before[i])
          << foreign[i] << " was changed";
    }
  }

  std::filesystem::path make_dir(const std::string& name, mode_t mode) {
    const auto p = dir() / name;
    std::filesystem::create_directory(p);
    EXPECT_EQ(::chmod(p.c_str(), mode), 0);
    return p;
  }
};

TEST_F(DirLockPermissionTest, LockFileWithoutReadOrWriteIsPermissionDenied) {
  const auto ws = make_dir("ws", 0777);
  write_file(ws / ".lock", "someone else's\n", 0000);
  expect_denied(ws, ws / ".lock", {ws, ws / ".lock"});
}

TEST_F(DirLockPermissionTest, WriteOnlyLockFileIsPermissionDenied) {
  // tierlock opens read-write, then read-only; never write-only.
  const auto ws = make_dir("ws", 0755);
  write_file(ws / ".lock", "", 0222);
  expect_denied(ws, ws / ".lock", {ws, ws / ".lock"});
}

TEST_F(DirLockPermissionTest, DirectoryWithoutSearchIsPermissionDenied) {
  // rw- but no x: the lock file inside cannot even be looked at.
  const auto ws = make_dir("ws", 0777);
  write_file(ws / ".lock", "", 0666);
  ASSERT_EQ(::chmod(ws.c_str(), 0666), 0);
  expect_denied(ws, ws / ".lock", {ws});
}

TEST_F(DirLockPermissionTest, ParentWithoutSearchIsPermissionDenied) {
  const auto parent = make_dir("parent", 0755);
  std::filesystem::create_directory(parent / "ws");
  ASSERT_EQ(::chmod(parent.c_str(), 0666), 0);
  expect_denied(parent / "ws", parent / "ws", {parent});
}

TEST_F(DirLockPermissionTest,
       CreateDirectoryInUnwritableParentIsPermissionDenied) {
  const auto parent = make_dir("parent", 0555);
  LockOptions options;
  options.create_directory = true;
  expect_denied(parent / "ws", parent / "ws", {parent}, options);
  EXPECT_FALSE(snapshot(parent / "ws").exists);
}

TEST_F(DirLockPermissionTest, SearchOnlyDirectoryWithLockFileLocks) {
  // --x on the directory and rw on the lock file is all flock needs: no
  // read or write permission on the directory.
  const auto ws = make_dir("ws", 0777);
  write_file(ws / ".lock", "", 0666);
  ASSERT_EQ(::chmod(ws.c_str(), 0111), 0);
  const FileSnapshot before = snapshot(ws / ".lock");
  Process child = fork_unprivileged_holder(ws);
  std::optional<std::string> first = child.read_line();
  ASSERT_TRUE(first.has_value()) << child.wait().describe();
  if (first->rfind(kChildSkip, 0) == 0) {
    child.wait();
    GTEST_SKIP() << *first;
  }
  ASSERT_EQ(*first, "locked");
  EXPECT_EQ(try_in_other_process(ws), kBusy);
  ASSERT_TRUE(child.write_line("release"));
  EXPECT_EQ(child.wait().code, 0);
  EXPECT_EQ(try_in_other_process(ws), kAcquired);
  EXPECT_EQ(snapshot(ws / ".lock"), before);
}

TEST_F(DirLockPermissionTest, OtherUsersLockFileIsLockedNeverChanged) {
  // A lock file nobody may only read (root's, 0644, in root's 0755
  // directory): opened read-only, locked for real, left as it was.
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to own the file";
  const auto ws = make_dir("ws", 0755);
  write_file(ws / ".lock", "root's record\n", 0644);
  const FileSnapshot before = snapshot(ws / ".lock");
  const FileSnapshot dir_before = snapshot(ws);
  ChildOutcome child = run_unprivileged([&ws]() -> std::string {
    absl::StatusOr<DirLock> lock = DirLock::open(ws);
    if (!lock.ok()) return "open: " + lock.status().ToString();
    absl::StatusOr<Guard> g = lock->acquire(Mode::kExclusive);
    if (!g.ok()) return "acquire: " + g.status().ToString();
    // Probed with another open file description, not a helper process: the
    // build tree need not be reachable by nobody.
    const int probe = ::open((ws / ".lock").c_str(), O_RDONLY | O_CLOEXEC);
    if (probe < 0) return "probe open failed";
    const bool free = ::flock(probe, LOCK_EX | LOCK_NB) == 0;
    ::close(probe);
    if (free) return "not exclusive";
    return g->release().ok() ? "" : "release failed";
  });
  if (child.skipped()) GTEST_SKIP() << child.message;
  EXPECT_TRUE(child.ok()) << child.message;
  EXPECT_EQ(snapshot(ws / ".lock"), before);
  EXPECT_EQ(snapshot(ws), dir_before);
}

}  // namespace

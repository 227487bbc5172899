// tests/bad_input/bad_input_fs_test.cc
//
// Bad paths and filesystems that bad_input_test.cc does not reach:
// names and paths over the kernel's limits (NAME_MAX, PATH_MAX, a directory
// deeper than PATH_MAX), symlink loops and dangling symlinks in the directory
// position, a lock file hard-linked to a foreign file, and read-only and tmpfs
// filesystems (mounted in a private mount namespace of a child, as root).
// Each is a clear error naming the path and the reason, or a real lock; never
// a hang or a false success; foreign files stay exactly as they were.
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
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
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"

namespace {

using tierlock::DirLock;
using tierlock::Guard;
using tierlock::LockOptions;
using namespace tierlock::testing;  // NOLINT: test support vocabulary

class DirLockBadPathTest : public TierlockTest {};
class DirLockFilesystemTest : public TierlockTest {};

// ------------------------------------------------------------ limits

TEST_F(DirLockBadPathTest, PathLongerThanPathMaxIsInvalidArgument) {
  std::string long_path = dir().string();
  while (long_path.size() <= PATH_MAX) long_path += "/abcdefghij";
  absl::StatusOr<DirLock> lock = DirLock::open(long_path);
  EXPECT_TRUE(IsError(lock.status(), absl::StatusCode::kInvalidArgument,
                      dir().string(), "File name too long"));
  EXPECT_EQ(snapshot(dir()).entries, std::vector<std::string>{});
}

TEST_F(DirLockBadPathTest, LockFileNameLongerThanNameMaxIsInvalidArgument) {
  LockOptions options;
  options.lock_file_name = std::string(NAME_MAX + 1, 'n');
  absl::StatusOr<DirLock> lock = DirLock::open(dir(), options);
  EXPECT_TRUE(IsError(lock.status(), absl::StatusCode::kInvalidArgument,
                      dir().string(), "File name too long"));
  EXPECT_EQ(snapshot(dir()).entries, std::vector<std::string>{});
}

TEST_F(DirLockBadPathTest, DirectoryDeeperThanPathMaxIsAnErrorNotATruncation) {
  // Reached by a short relative path, the directory exists and opens, but its
  // absolute path cannot be spelled: tierlock must say so, not lock a
  // truncated path. In a child: it changes its working directory.
  const std::filesystem::path d = dir();
  ChildOutcome child = run_in_child([&d]() -> std::string {
    if (::chdir(d.c_str()) != 0) return "chdir failed";
    const std::string part(200, 'd');
    int depth = 0;
    for (std::size_t len = d.string().size(); len <= PATH_MAX + 200;
         len += part.size() + 1) {
      if (::mkdir(part.c_str(), 0755) != 0 || ::chdir(part.c_str()) != 0) {
        return std::string("mkdir/chdir: ") + std::strerror(errno);
      }
      ++depth;
    }
    if (::mkdir(part.c_str(), 0755) != 0) return "mkdir failed";
    absl::StatusOr<DirLock> lock = DirLock::open(part);
    std::string result;
    if (lock.ok()) {
      result = "opened, reporting '" + lock->lock_file().string() + "'";
    } else if (::testing::AssertionResult r =
                   IsError(lock.status(), absl::StatusCode::kInvalidArgument,
                           part, "File name too long");
               !r) {
      result = r.message();
    }
    // Clean up from the inside: the test directory's own removal uses full
    // paths, which are too long here.
    ::unlink((part + "/.lock").c_str());
    ::rmdir(part.c_str());
    for (; depth > 0; --depth) {
      if (::chdir("..") != 0 || ::rmdir(part.c_str()) != 0) {
        return result + " (cleanup failed)";
      }
    }
    return result;
  });
  EXPECT_TRUE(child.ok()) << child.message;
  EXPECT_EQ(snapshot(dir()).entries, std::vector<std::string>{});
}

// ------------------------------------------------ symlinks as directory

TEST_F(DirLockBadPathTest, SymlinkLoopAsDirectoryIsInvalidArgument) {
  const auto loop = dir() / "loop";
  std::filesystem::create_symlink("loop", loop);
  const FileSnapshot before = snapshot(loop);
  absl::StatusOr<DirLock> lock = DirLock::open(loop);
  EXPECT_TRUE(IsError(lock.status(), absl::StatusCode::kInvalidArgument,
                      loop.string(), "Too many levels of symbolic links"));
  EXPECT_EQ(snapshot(loop), before);
}

TEST_F(DirLockBadPathTest, DanglingSymlinkAsDirectoryIsNotFoundEvenWithCreate) {
  // create_directory must not create the symlink's target (mkdir does not
  // follow a symlink; the open after it still finds nothing).
  const auto target = dir() / "target";
  const auto link = dir() / "link";
  std::filesystem::create_symlink(target, link);
  const FileSnapshot before = snapshot(link);
  for (bool create : {false, true}) {
    SCOPED_TRACE(create ? "create_directory" : "no create_directory");
    LockOptions options;
    options.create_directory = create;
    absl::StatusOr<DirLock> lock = DirLock::open(link, options);
    EXPECT_TRUE(
        IsError(lock.status(), absl::StatusCode::kNotFound, link.string()));
    EXPECT_EQ(snapshot(link), before);
    EXPECT_FALSE(snapshot(target).exists);
  }
}

// ----------------------------------------------------- foreign files

TEST_F(DirLockBadPathTest, LockFileHardLinkedToForeignFileIsLockedNotChanged) {
  // A hard link is the same regular file: tierlock locks it (flock needs no
  // write) and never writes, truncates or chmods it.
  const auto foreign = dir() / "precious";
  write_file(foreign, "precious data\n", 0640);
  const auto ws = dir() / "ws";
  std::filesystem::create_directory(ws);
  std::filesystem::create_hard_link(foreign, ws / ".lock");
  const FileSnapshot before = snapshot(foreign);
  {
    ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(ws));
    ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
    EXPECT_EQ(try_in_other_process(ws), kBusy);
    ASSERT_OK(g.release());
  }
  EXPECT_EQ(snapshot(foreign), before);
}

// ------------------------------------------------------ filesystems

// In a child: a private mount namespace (as root, or as an unprivileged user
// where user namespaces are allowed) with a fresh tmpfs at `where`. Returns
// "" or kChildSkip + reason.
std::string mount_private_tmpfs(const std::filesystem::path& where) {
  if (::unshare(CLONE_NEWNS) != 0) {
    const int err = errno;
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
      return std::string(kChildSkip) +
             "unshare(CLONE_NEWNS): " + std::strerror(err);
    }
  }
  // Keep our mounts out of the parent's namespace.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return std::string(kChildSkip) + "make / private: " + std::strerror(errno);
  }
  if (::mount("tmpfs", where.c_str(), "tmpfs", 0, "size=1m,mode=0755") != 0) {
    return std::string(kChildSkip) + "mount tmpfs: " + std::strerror(errno);
  }
  return "";
}

std::string remount_read_only(const std::filesystem::path& where) {
  if (::mount(nullptr, where.c_str(), nullptr, MS_REMOUNT | MS_RDONLY,
              nullptr) != 0) {
    return std::string("remount read-only: ") + std::strerror(errno);
  }
  return "";
}

// Checks the lock is really exclusive: another open file description of the
// same file cannot take it.
std::string expect_exclusive(const DirLock& lock) {
  const int fd = ::open(lock.lock_file().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string("probe open: ") + std::strerror(errno);
  const bool free = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
  ::close(fd);
  return free ? "the lock file is not locked" : "";
}

// Runs `body` in a child with a private tmpfs at `mnt` (read-only first if
// `read_only`; `setup` runs before that). Skips where no mount namespace can
// be had.
void in_private_tmpfs(const std::filesystem::path& mnt, bool read_only,
                      const std::function<std::string()>& setup,
                      const std::function<std::string()>& body) {
  std::filesystem::create_directory(mnt);
  ChildOutcome child = run_in_child([&]() -> std::string {
    std::string err = mount_private_tmpfs(mnt);
    if (err.empty() && setup) err = setup();
    if (err.empty() && read_only) err = remount_read_only(mnt);
    return err.empty() ? body() : err;
  });
  if (child.skipped()) GTEST_SKIP() << child.message;
  EXPECT_TRUE(child.ok()) << child.message;
  EXPECT_EQ(snapshot(mnt).entries, std::vector<std::string>{})
      << "the mount leaked into the test's namespace";
}

TEST_F(DirLockFilesystemTest, TmpfsLocks) {
  const auto mnt = dir() / "mnt";
  in_private_tmpfs(mnt, /*read_only=*/false, {}, [&mnt]() -> std::string {
    absl::StatusOr<DirLock> lock = DirLock::open(mnt);
    if (!lock.ok()) return "open: " + lock.status().ToString();
    absl::StatusOr<Guard> g = lock->acquire();
    if (!g.ok()) return "acquire: " + g.status().ToString();
    std::string err = expect_exclusive(*lock);
    if (!err.empty()) return err;
    return g->release().ok() ? "" : "release failed";
  });
}

TEST_F(DirLockFilesystemTest,
       ReadOnlyFilesystemWithoutLockFileIsPermissionDenied) {
  const auto mnt = dir() / "mnt";
  in_private_tmpfs(mnt, /*read_only=*/true, {}, [&mnt]() -> std::string {
    absl::StatusOr<DirLock> lock = DirLock::open(mnt);
    ::testing::AssertionResult r =
        IsError(lock.status(), absl::StatusCode::kPermissionDenied,
                (mnt / ".lock").string(), "Read-only file system");
    if (!r) return r.message();
    if (snapshot(mnt).entries != std::vector<std::string>{}) {
      return "something was created on a read-only filesystem";
    }
    return "";
  });
}

TEST_F(DirLockFilesystemTest, ReadOnlyFilesystemWithLockFileLocksExclusively) {
  const auto mnt = dir() / "mnt";
  FileSnapshot before;
  in_private_tmpfs(
      mnt, /*read_only=*/true,
      [&]() -> std::string {
        write_file(mnt / ".lock", "record\n", 0644);
        before = snapshot(mnt / ".lock");
        return "";
      },
      [&]() -> std::string {
        {
          absl::StatusOr<DirLock> lock = DirLock::open(mnt);
          if (!lock.ok()) return "open: " + lock.status().ToString();
          absl::StatusOr<Guard> g = lock->acquire();
          if (!g.ok()) return "acquire: " + g.status().ToString();
          std::string err = expect_exclusive(*lock);
          if (!err.empty()) return err;
          if (!g->release().ok()) return "release failed";
        }
        if (!(snapshot(mnt / ".lock") == before))
          return "the lock file changed";
        return "";
      });
}

}  // namespace

// tests/bad_input/bad_input_test.cc
//
// Every bad input DirLock::open can meet, one test each: the status code, a
// message that names the path, and proof that foreign files (symlink targets,
// FIFOs, sockets, directories) are left exactly as they were. Then the errors
// only a faulty system produces, reached through the syscall seam
// (src/platform/posix_sys.h) or real resource limits in a child process.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <future>
#include <optional>
#include <string>

#include "gtest/gtest.h"
#include "support/child.h"
#include "support/files.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/internal.h"
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

class DirLockBadInputTest : public TierlockTest {
 protected:
  std::filesystem::path lock_path() const { return dir() / ".lock"; }

  // Opens dir() and expects kInvalidArgument naming the lock file, and that
  // `foreign` (the lock file path and anything it points to) is unchanged.
  void expect_rejected_and_untouched(
      const std::vector<std::filesystem::path>& foreign) {
    std::vector<FileSnapshot> before;
    for (const auto& p : foreign) before.push_back(snapshot(p));
    absl::StatusOr<DirLock> lock = DirLock::open(dir());
    EXPECT_TRUE(IsError(lock.status(), absl::StatusCode::kInvalidArgument,
                        lock_path().string()));
    for (std::size_t i = 0; i < foreign.size(); ++i) {
      EXPECT_EQ(snapshot(foreign[i]), before[i])
          << foreign[i] << " was changed";
    }
    // Trying again gives the same answer (nothing was half-created).
    EXPECT_TRUE(IsError(DirLock::open(dir()).status(),
                        absl::StatusCode::kInvalidArgument));
  }
};

// ------------------------------------------------------------- directories

TEST_F(DirLockBadInputTest, MissingDirectoryIsNotFound) {
  const auto missing = dir() / "missing";
  absl::StatusOr<DirLock> lock = DirLock::open(missing);
  EXPECT_TRUE(
      IsError(lock.status(), absl::StatusCode::kNotFound, missing.string()));
  EXPECT_FALSE(snapshot(missing).exists) << "created without create_directory";
}

TEST_F(DirLockBadInputTest, DirectoryThatIsARegularFileIsInvalidArgument) {
  const auto file = dir() / "plain";
  write_file(file, "not a directory\n", 0644);
  const FileSnapshot before = snapshot(file);
  absl::StatusOr<DirLock> lock = DirLock::open(file);
  EXPECT_TRUE(IsError(lock.status(), absl::StatusCode::kInvalidArgument,
                      file.string()));
  EXPECT_EQ(snapshot(file), before);
}

TEST_F(DirLockBadInputTest, CreateDirectoryCreatesOneLevel) {
  const auto fresh = dir() / "fresh";
  LockOptions options;
  options.create_directory = true;
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(fresh, options));
  EXPECT_EQ(snapshot(fresh).type, 'd');
  EXPECT_EQ(lock.directory(), fresh);
  EXPECT_EQ(snapshot(fresh / ".lock").type, 'f');
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_EQ(try_in_other_process(fresh), kBusy);
  // An existing directory is fine too.
  ASSERT_OK_AND_ASSIGN(DirLock again, DirLock::open(fresh, options));
  EXPECT_EQ(again.lock_file(), lock.lock_file());
}

TEST_F(DirLockBadInputTest, CreateDirectoryFailsNotFoundWhenParentIsMissing) {
  const auto parent = dir() / "no-parent";
  const auto child = parent / "child";
  LockOptions options;
  options.create_directory = true;
  absl::StatusOr<DirLock> lock = DirLock::open(child, options);
  EXPECT_TRUE(
      IsError(lock.status(), absl::StatusCode::kNotFound, parent.string()));
  EXPECT_FALSE(snapshot(parent).exists) << "created more than one level";
}

// ------------------------------------------------------- lock file names

void expect_bad_name(const std::filesystem::path& dir,
                     const std::string& name) {
  LockOptions options;
  options.lock_file_name = name;
  absl::StatusOr<DirLock> lock = DirLock::open(dir, options);
  EXPECT_TRUE(
      IsError(lock.status(), absl::StatusCode::kInvalidArgument, dir.string()))
      << "lock_file_name \"" << name << "\"";
}

TEST_F(DirLockBadInputTest, LockFileNameWithSlashIsInvalidArgument) {
  std::filesystem::create_directory(dir() / "sub");
  const FileSnapshot before = snapshot(dir() / "sub");
  expect_bad_name(dir(), "sub/.lock");
  expect_bad_name(dir(), "/etc/passwd");
  expect_bad_name(dir(), "x/");
  EXPECT_EQ(snapshot(dir() / "sub"), before);
}

TEST_F(DirLockBadInputTest, EmptyLockFileNameIsInvalidArgument) {
  expect_bad_name(dir(), "");
}

TEST_F(DirLockBadInputTest, DotLockFileNameIsInvalidArgument) {
  expect_bad_name(dir(), ".");
}

TEST_F(DirLockBadInputTest, DotDotLockFileNameIsInvalidArgument) {
  expect_bad_name(dir(), "..");
}

TEST_F(DirLockBadInputTest, LockFileNameWithNulIsInvalidArgument) {
  expect_bad_name(dir(), std::string("a\0b", 3));
  EXPECT_FALSE(snapshot(dir() / "a").exists);
}

// ------------------------------------------- lock files that are not files

TEST_F(DirLockBadInputTest, LockFileSymlinkToFileIsInvalidArgument) {
  const auto target = dir() / "precious.txt";
  write_file(target, "do not touch\n", 0600);
  std::filesystem::create_symlink("precious.txt", lock_path());
  expect_rejected_and_untouched({lock_path(), target});
  EXPECT_EQ(read_file(target), "do not touch\n");
  EXPECT_EQ(file_mode(target), 0600u);
  EXPECT_EQ(std::filesystem::read_symlink(lock_path()), "precious.txt");
}

TEST_F(DirLockBadInputTest, LockFileSymlinkToDirectoryIsInvalidArgument) {
  const auto target = dir() / "elsewhere";
  std::filesystem::create_directory(target);
  write_file(target / "inside", "x", 0644);
  std::filesystem::create_directory_symlink(target, lock_path());
  expect_rejected_and_untouched({lock_path(), target, target / "inside"});
  EXPECT_EQ(std::filesystem::read_symlink(lock_path()), target);
}

TEST_F(DirLockBadInputTest, DanglingLockFileSymlinkIsInvalidArgument) {
  const auto target = dir() / "not-yet";
  std::filesystem::create_symlink(target, lock_path());
  expect_rejected_and_untouched({lock_path(), target});
  EXPECT_FALSE(snapshot(target).exists) << "the symlink's target was created";
}

TEST_F(DirLockBadInputTest, LockFileFifoIsInvalidArgumentWithoutHanging) {
  ASSERT_EQ(::mkfifo(lock_path().c_str(), 0640), 0) << std::strerror(errno);
  const FileSnapshot before = snapshot(lock_path());
  std::future<absl::StatusOr<DirLock>> opened =
      std::async(std::launch::async, [this] { return DirLock::open(dir()); });
  if (opened.wait_for(kTimeout) != std::future_status::ready) {
    ADD_FAILURE() << "DirLock::open hung on a FIFO";
    // Unblock an open() waiting for a writer so the thread can finish.
    int fd = ::open(lock_path().c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) ::close(fd);
  }
  absl::StatusOr<DirLock> lock = opened.get();
  EXPECT_TRUE(IsError(lock.status(), absl::StatusCode::kInvalidArgument,
                      lock_path().string()));
  EXPECT_EQ(snapshot(lock_path()), before);
}

TEST_F(DirLockBadInputTest, LockFileDirectoryIsInvalidArgument) {
  std::filesystem::create_directory(lock_path());
  write_file(lock_path() / "content", "x", 0644);
  ::chmod(lock_path().c_str(), 0750);
  expect_rejected_and_untouched({lock_path(), lock_path() / "content"});
}

TEST_F(DirLockBadInputTest, LockFileSocketIsInvalidArgument) {
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(s, 0) << std::strerror(errno);
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  const std::string path = lock_path().string();
  ASSERT_LT(path.size(), sizeof addr.sun_path)
      << "temp path too long for a socket";
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int rc =
      ::bind(s, reinterpret_cast<const struct sockaddr*>(&addr), sizeof addr);
  int err = errno;
  ::close(s);
  ASSERT_EQ(rc, 0) << std::strerror(err);
  ASSERT_EQ(snapshot(lock_path()).type, 's');
  expect_rejected_and_untouched({lock_path()});
}

TEST_F(DirLockBadInputTest, LockFileCharacterDeviceIsInvalidArgument) {
  // Same numbers as /dev/null: opening it would succeed, so only the fstat
  // check can reject it.
  if (::mknod(lock_path().c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0) {
    GTEST_SKIP() << "mknod not permitted here: " << std::strerror(errno);
  }
  expect_rejected_and_untouched({lock_path()});
}

// ------------------------------------------------------------- permissions

TEST_F(DirLockBadInputTest, NoPermissionIsPermissionDenied) {
  // A directory the (unprivileged) caller may enter but not write: the lock
  // file cannot be created.
  const auto ws = dir() / "ws";
  std::filesystem::create_directory(ws);
  ASSERT_EQ(::chmod(dir().c_str(), 0755), 0);
  const bool root = ::geteuid() == 0;
  ASSERT_EQ(::chmod(ws.c_str(), root ? 0755 : 0555), 0);
  ChildOutcome child = run_in_child([&ws, root]() -> std::string {
    if (root) {
      std::string err = drop_privileges();
      if (!err.empty()) return err;
    }
    absl::StatusOr<DirLock> lock = DirLock::open(ws);
    ::testing::AssertionResult r = IsError(
        lock.status(), absl::StatusCode::kPermissionDenied, ws.string());
    if (!r) return r.message();
    return "";
  });
  if (child.skipped()) GTEST_SKIP() << child.message;
  EXPECT_TRUE(child.ok()) << child.message;
  EXPECT_FALSE(snapshot(ws / ".lock").exists);
}

TEST_F(DirLockBadInputTest,
       ExistingLockFileInReadOnlyDirectoryLocksExclusively) {
  // The caller can neither create nor write the lock file (directory 0555;
  // file owned by root, or 0444): tierlock opens it read-only, and flock
  // works on read-only descriptors.
  const auto ws = dir() / "ro";
  std::filesystem::create_directory(ws);
  const bool root = ::geteuid() == 0;
  write_file(ws / ".lock", "holder record\n", root ? 0644 : 0444);
  ASSERT_EQ(::chmod(ws.c_str(), 0555), 0);
  ASSERT_EQ(::chmod(dir().c_str(), 0755), 0);
  const FileSnapshot before = snapshot(ws / ".lock");

  Process child = fork_unprivileged_holder(ws, [](const DirLock& lock) {
    std::shared_ptr<tierlock::internal::LockEntry> entry = entry_of(lock);
    return entry != nullptr && entry->file().read_only()
               ? std::string()
               : std::string("the lock file was not opened read-only");
  });
  std::optional<std::string> first = child.read_line();
  ASSERT_TRUE(first.has_value()) << child.wait().describe();
  if (first->rfind(kChildSkip, 0) == 0) {
    child.wait();
    GTEST_SKIP() << *first;
  }
  ASSERT_EQ(*first, "locked");
  // The read-only hold is a real exclusive lock.
  EXPECT_EQ(try_in_other_process(ws), kBusy);
  EXPECT_EQ(try_in_other_process(ws, Mode::kShared), kBusy);
  ASSERT_TRUE(child.write_line("release"));
  EXPECT_EQ(child.wait().code, 0);
  EXPECT_EQ(try_in_other_process(ws), kAcquired);
  EXPECT_EQ(snapshot(ws / ".lock"), before);
}

// ------------------------------------------------------ resource limits

// In a child: lowers RLIMIT_NOFILE and fills the descriptor table, so the
// next open fails with EMFILE. Give the descriptors back (close_all) before
// doing anything elaborate: sanitizer runtimes need a descriptor or two to
// report (UBSan's vptr check probes memory through a pipe).
class DescriptorExhaustion {
 public:
  // Returns "" once the table is full, or why it could not be filled.
  std::string start() {
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return "getrlimit failed";
    rl.rlim_cur = 64;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      return std::string("setrlimit: ") + std::strerror(errno);
    }
    fds_.reserve(256);
    for (int i = 0; i < 256; ++i) {
      int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE) return "";
        return std::string("open /dev/null: ") + std::strerror(errno);
      }
      fds_.push_back(fd);
    }
    return "could not exhaust descriptors";
  }
  void close_all() {
    for (int fd : fds_) ::close(fd);
    fds_.clear();
  }

 private:
  std::vector<int> fds_;
};

TEST_F(DirLockBadInputTest, OutOfDescriptorsIsResourceExhausted) {
  const std::filesystem::path d = dir();
  ChildOutcome child = run_in_child([&d]() -> std::string {
    DescriptorExhaustion full;
    std::string err = full.start();
    if (!err.empty()) return err;
    absl::StatusOr<DirLock> lock = DirLock::open(d);
    full.close_all();
    ::testing::AssertionResult r = IsError(
        lock.status(), absl::StatusCode::kResourceExhausted, d.string());
    if (!r) return r.message();
    return "";
  });
  EXPECT_TRUE(child.ok()) << child.message;
}

TEST_F(DirLockBadInputTest,
       OutOfDescriptorsForChildsOwnDescriptorIsResourceExhausted) {
  // After fork the child's acquire must open its own descriptor; with none
  // left it must fail, never fall back to the parent's.
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ChildOutcome child = run_in_child([&lock]() -> std::string {
    DescriptorExhaustion full;
    std::string err = full.start();
    if (!err.empty()) return err;
    absl::StatusOr<std::optional<Guard>> g = lock.try_acquire();
    full.close_all();
    if (g.ok()) return "try_acquire succeeded without a descriptor of its own";
    ::testing::AssertionResult r =
        IsError(g.status(), absl::StatusCode::kResourceExhausted);
    if (!r) return r.message();
    return "";
  });
  EXPECT_TRUE(child.ok()) << child.message;
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

// ----------------------------------------------------- injected faults

class DirLockFaultTest : public TierlockTest {};

std::atomic<int> g_fault_errno{0};
std::atomic<int> g_fault_remaining{0};  // < 0: fail forever
std::atomic<int> g_flock_calls{0};

bool take_fault() {
  int n = g_fault_remaining.load();
  while (n != 0) {
    if (n < 0) return true;
    if (g_fault_remaining.compare_exchange_weak(n, n - 1)) return true;
  }
  return false;
}

int faulty_openat(int dirfd, const char* path, int flags, mode_t mode) {
  if (take_fault()) {
    errno = g_fault_errno.load();
    return -1;
  }
  return tierlock::internal::real_posix_sys().openat(dirfd, path, flags, mode);
}

// Fails locking operations (never LOCK_UN) as configured.
int faulty_flock(int fd, int op) {
  ++g_flock_calls;
  if ((op & LOCK_UN) == 0 && take_fault()) {
    errno = g_fault_errno.load();
    return -1;
  }
  return tierlock::internal::real_posix_sys().flock(fd, op);
}

void arm(int err, int times) {
  g_fault_errno = err;
  g_fault_remaining = times;
  g_flock_calls = 0;
}

TEST_F(DirLockFaultTest, OpenatEmfileIsResourceExhausted) {
  ScopedSysOverride fault;
  arm(EMFILE, -1);
  fault.sys().openat = faulty_openat;
  absl::StatusOr<DirLock> lock = DirLock::open(dir());
  EXPECT_TRUE(IsError(lock.status(), absl::StatusCode::kResourceExhausted,
                      dir().string()));
}

TEST_F(DirLockFaultTest, OpenatEaccesIsPermissionDenied) {
  ScopedSysOverride fault;
  arm(EACCES, -1);
  fault.sys().openat = faulty_openat;
  absl::StatusOr<DirLock> lock = DirLock::open(dir());
  EXPECT_TRUE(IsError(lock.status(), absl::StatusCode::kPermissionDenied,
                      dir().string()));
}

void expect_flock_failure_is_an_error(const std::filesystem::path& dir,
                                      int err) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir));
  {
    ScopedSysOverride fault;
    arm(err, -1);
    fault.sys().flock = faulty_flock;
    for (Mode mode : {Mode::kExclusive, Mode::kShared}) {
      SCOPED_TRACE(std::string(tierlock::mode_name(mode)));
      absl::StatusOr<Guard> g = lock.acquire(mode);
      EXPECT_FALSE(g.ok()) << "acquire reported success while flock failed";
      if (!g.ok()) {
        EXPECT_NE(g.status().message().find(lock.lock_file().string()),
                  std::string_view::npos)
            << g.status();
      }
      absl::StatusOr<std::optional<Guard>> t = lock.try_acquire(mode);
      EXPECT_FALSE(t.ok()) << "try_acquire returned "
                           << (t.ok() && t->has_value() ? "acquired" : "busy")
                           << " while flock failed";
    }
    EXPECT_GT(g_flock_calls.load(), 0)
        << "flock was not called through the seam";
  }
  // Nothing is held, and the handle works once the fault is gone.
  EXPECT_EQ(try_in_other_process(dir), kAcquired);
  std::shared_ptr<tierlock::internal::LockEntry> entry = entry_of(lock);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->waiting(), 0u);
  EXPECT_EQ(entry->holders(), 0u);
  EXPECT_FALSE(entry->kernel_held());
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_EQ(try_in_other_process(dir), kBusy);
}

TEST_F(DirLockFaultTest, FlockEnolckIsAnErrorNeverAcquired) {
  expect_flock_failure_is_an_error(dir(), ENOLCK);
}

TEST_F(DirLockFaultTest, FlockEopnotsuppIsAnErrorNeverAcquired) {
  expect_flock_failure_is_an_error(dir(), EOPNOTSUPP);
}

TEST_F(DirLockFaultTest, FlockEintrOnceIsRetriedByAcquire) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ScopedSysOverride fault;
  arm(EINTR, 1);
  fault.sys().flock = faulty_flock;
  ASSERT_OK_AND_ASSIGN(Guard g, lock.acquire());
  EXPECT_EQ(g_fault_remaining.load(), 0) << "the fault was never hit";
  EXPECT_GE(g_flock_calls.load(), 2);
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
}

TEST_F(DirLockFaultTest, FlockEintrOnceIsRetriedByTryAcquire) {
  ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
  ScopedSysOverride fault;
  arm(EINTR, 1);
  fault.sys().flock = faulty_flock;
  ASSERT_OK_AND_ASSIGN(std::optional<Guard> g, lock.try_acquire(Mode::kShared));
  EXPECT_EQ(g_fault_remaining.load(), 0) << "the fault was never hit";
  ASSERT_TRUE(g.has_value()) << "EINTR was taken for contention";
  EXPECT_EQ(try_in_other_process(dir()), kBusy);
  EXPECT_EQ(try_in_other_process(dir(), Mode::kShared), kAcquired);
}

}  // namespace

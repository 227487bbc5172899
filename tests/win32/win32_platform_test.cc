// tests/win32/win32_platform_test.cc
//
// The Windows platform seam (src/platform/win32_*.cc) directly: handles,
// identities, reopen, the interruptible wait, error conversion, and what
// cannot be known on Windows (who holds a lock).
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "platform/platform.h"
#include "platform/win32_util.h"
#include "support/win32_child.h"
#include "tierlock/tierlock.h"

namespace {

using namespace std::chrono_literals;
namespace platform = tierlock::internal::platform;
using tierlock::Mode;
using tierlock::testing::Win32TempDir;

// An open lock file, closed at the end.
struct Opened {
  explicit Opened(const std::filesystem::path& dir) {
    absl::StatusOr<platform::OpenedLockFile> f =
        platform::open_lock_file(dir, ".lock", false);
    EXPECT_TRUE(f.ok()) << f.status();
    if (f.ok()) file = *f;
  }
  ~Opened() { platform::close_handle(file.handle); }
  platform::OpenedLockFile file;
};

TEST(Win32PlatformTest, TwoHandlesOntoOneFileExcludeEachOther) {
  Win32TempDir tmp;
  Opened a(tmp.path()), b(tmp.path());
  EXPECT_EQ(a.file.id, b.file.id);
  EXPECT_FALSE(a.file.read_only);
  EXPECT_EQ(*platform::try_lock(a.file.handle, Mode::kExclusive, "a"), true);
  EXPECT_EQ(*platform::try_lock(b.file.handle, Mode::kExclusive, "b"), false);
  EXPECT_EQ(*platform::try_lock(b.file.handle, Mode::kShared, "b"), false);
  ASSERT_TRUE(platform::unlock(a.file.handle, "a").ok());
  EXPECT_EQ(*platform::try_lock(a.file.handle, Mode::kShared, "a"), true);
  EXPECT_EQ(*platform::try_lock(b.file.handle, Mode::kShared, "b"), true);
  EXPECT_TRUE(platform::unlock(a.file.handle, "a").ok());
  EXPECT_TRUE(platform::unlock(b.file.handle, "b").ok());
}

// flock converts the lock held through one descriptor; LockFileEx would
// stack a second lock (or conflict with its own). One unlock must always
// leave the handle holding nothing.
TEST(Win32PlatformTest, RelockingOneHandleConvertsAndNeverStacks) {
  Win32TempDir tmp;
  Opened a(tmp.path()), b(tmp.path());
  for (Mode first : {Mode::kExclusive, Mode::kShared}) {
    for (Mode second : {Mode::kExclusive, Mode::kShared}) {
      ASSERT_EQ(*platform::try_lock(a.file.handle, first, "a"), true);
      ASSERT_EQ(*platform::try_lock(a.file.handle, second, "a"), true);
      // Now held in `second` mode only.
      EXPECT_EQ(*platform::try_lock(b.file.handle, Mode::kShared, "b"),
                second == Mode::kShared);
      if (second == Mode::kShared) {
        ASSERT_TRUE(platform::unlock(b.file.handle, "b").ok());
      }
      ASSERT_TRUE(platform::unlock(a.file.handle, "a").ok());
      EXPECT_EQ(*platform::try_lock(b.file.handle, Mode::kExclusive, "b"), true)
          << "a lock was left behind";
      ASSERT_TRUE(platform::unlock(b.file.handle, "b").ok());
    }
  }
}

TEST(Win32PlatformTest, UnlockWithoutALockIsAnErrorNamingThePath) {
  Win32TempDir tmp;
  Opened a(tmp.path());
  absl::Status st = platform::unlock(a.file.handle, a.file.lock_file);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("unlock '"), std::string_view::npos) << st;
  EXPECT_NE(st.message().find(".lock'"), std::string_view::npos) << st;
  EXPECT_NE(st.message().find("Windows error 158"), std::string_view::npos)
      << st;
}

// On Windows the read-only attribute denies GENERIC_WRITE and the file is
// opened for reading only (read_only); Wine running as root (CI) grants
// write access anyway, so there this checks only that locking works.
TEST(Win32PlatformTest, ReadOnlyLockFileStillLocks) {
  Win32TempDir tmp;
  const std::filesystem::path file = tmp.path() / L".lock";
  HANDLE h = ::CreateFileW(file.c_str(), GENERIC_WRITE, 0, nullptr, CREATE_NEW,
                           FILE_ATTRIBUTE_READONLY, nullptr);
  ASSERT_NE(h, INVALID_HANDLE_VALUE);
  ::CloseHandle(h);
  {
    Opened a(tmp.path()), b(tmp.path());
    EXPECT_EQ(*platform::try_lock(a.file.handle, Mode::kExclusive, "a"), true);
    EXPECT_EQ(*platform::try_lock(b.file.handle, Mode::kShared, "b"), false);
    EXPECT_TRUE(platform::unlock(a.file.handle, "a").ok());
  }
  ASSERT_TRUE(::SetFileAttributesW(file.c_str(), FILE_ATTRIBUTE_NORMAL));
}

TEST(Win32PlatformTest, StatAndProbeFindTheSameIdentity) {
  Win32TempDir tmp;
  Opened a(tmp.path());
  absl::StatusOr<platform::FileId> id =
      platform::stat_lock_file(tmp.path(), ".lock");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, a.file.id);
  absl::StatusOr<platform::ProbedLockFile> probed =
      platform::probe_lock_file(tmp.path(), ".lock");
  ASSERT_TRUE(probed.ok()) << probed.status();
  EXPECT_EQ(probed->id, a.file.id);
  EXPECT_EQ(probed->directory, tmp.path());
  absl::StatusOr<platform::ProbedLockFile> none =
      platform::probe_lock_file(tmp.path(), "other");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->id.has_value());
  EXPECT_EQ(platform::stat_lock_file(tmp.path(), "other").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(Win32PlatformTest, ReopenGivesAnIndependentHandleOntoTheSameFile) {
  Win32TempDir tmp;
  Opened a(tmp.path());
  absl::StatusOr<platform::NativeHandle> b =
      platform::reopen(a.file.handle, a.file.lock_file);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*platform::try_lock(a.file.handle, Mode::kExclusive, "a"), true);
  EXPECT_EQ(*platform::try_lock(*b, Mode::kExclusive, "b"), false);
  ASSERT_TRUE(platform::unlock(a.file.handle, "a").ok());
  EXPECT_EQ(*platform::try_lock(*b, Mode::kExclusive, "b"), true);
  platform::close_handle(*b);
  // Closing the handle dropped its lock.
  EXPECT_EQ(*platform::try_lock(a.file.handle, Mode::kExclusive, "a"), true);
}

TEST(Win32PlatformTest, InterruptEndsAWaitAndNothingIsHeld) {
  Win32TempDir tmp;
  Opened holder(tmp.path()), waiter(tmp.path()), probe(tmp.path());
  ASSERT_EQ(*platform::try_lock(holder.file.handle, Mode::kExclusive, "h"),
            true);
  platform::InterruptibleWait wait(std::nullopt);
  std::future<absl::StatusOr<platform::InterruptibleWait::Result>> r =
      std::async(std::launch::async, [&] {
        return wait.lock(waiter.file.handle, Mode::kExclusive, "w");
      });
  EXPECT_EQ(r.wait_for(100ms), std::future_status::timeout);
  const auto start = std::chrono::steady_clock::now();
  wait.interrupt();
  ASSERT_EQ(r.wait_for(30s), std::future_status::ready);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
  absl::StatusOr<platform::InterruptibleWait::Result> got = r.get();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, platform::InterruptibleWait::Result::kInterrupted);
  ASSERT_TRUE(platform::unlock(holder.file.handle, "h").ok());
  EXPECT_EQ(*platform::try_lock(probe.file.handle, Mode::kExclusive, "p"),
            true);
}

TEST(Win32PlatformTest, WaitEndsAtItsDeadlineOrWhenTheLockIsFree) {
  Win32TempDir tmp;
  Opened holder(tmp.path()), waiter(tmp.path());
  ASSERT_EQ(*platform::try_lock(holder.file.handle, Mode::kShared, "h"), true);
  {
    platform::InterruptibleWait wait(std::chrono::steady_clock::now() + 50ms);
    absl::StatusOr<platform::InterruptibleWait::Result> r =
        wait.lock(waiter.file.handle, Mode::kExclusive, "w");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(*r, platform::InterruptibleWait::Result::kDeadline);
  }
  {
    // Shared with a shared holder: granted at once.
    platform::InterruptibleWait wait(std::chrono::steady_clock::now() + 30s);
    absl::StatusOr<platform::InterruptibleWait::Result> r =
        wait.lock(waiter.file.handle, Mode::kShared, "w");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(*r, platform::InterruptibleWait::Result::kLocked);
  }
}

TEST(Win32PlatformTest, WhoHoldsALockCannotBeKnownAndSaysSo) {
  Win32TempDir tmp;
  Opened a(tmp.path());
  absl::StatusOr<std::vector<platform::KernelHolder>> k =
      platform::read_kernel_holders(a.file.id);
  EXPECT_EQ(k.status().code(), absl::StatusCode::kUnavailable);
  absl::StatusOr<tierlock::LockState> state =
      tierlock::inspect_lock(tmp.path());
  EXPECT_EQ(state.status().code(), absl::StatusCode::kUnavailable)
      << state.status();
  Win32TempDir empty;
  absl::StatusOr<tierlock::LockState> none =
      tierlock::inspect_lock(empty.path());
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->lock_file_exists);
  absl::StatusOr<tierlock::DirLock> lock = tierlock::DirLock::open(tmp.path());
  ASSERT_TRUE(lock.ok());
  EXPECT_EQ(lock->holders().status().code(), absl::StatusCode::kUnavailable);
}

TEST(Win32PlatformTest, ProcessInfoNamesThisProgram) {
  platform::ProcessInfo self = platform::process_info(platform::current_pid());
  EXPECT_TRUE(self.start_time.has_value());
  EXPECT_NE(self.program.find("win32_platform_test"), std::string::npos)
      << self.program;
  std::optional<platform::SelfIdentity> id = platform::self_identity();
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->pid, platform::current_pid());
  EXPECT_TRUE(id->boot_id.empty());  // so no holder records are written
  EXPECT_EQ(platform::current_tid(),
            static_cast<std::int64_t>(::GetCurrentThreadId()));
}

TEST(Win32PlatformTest, OnlyTheNoSignalInterruptSettingExists) {
  EXPECT_TRUE(tierlock::set_wait_interrupt_signal(0).ok());
  EXPECT_EQ(tierlock::set_wait_interrupt_signal(10).code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(platform::interrupt_signal(), 0);
}

TEST(Win32PlatformTest, Win32ErrorsMapToTierlockCodes) {
  const std::filesystem::path p = L"C:\\x\\.lock";
  struct Case {
    DWORD err;
    absl::StatusCode code;
  };
  for (Case c :
       {Case{ERROR_FILE_NOT_FOUND, absl::StatusCode::kNotFound},
        Case{ERROR_PATH_NOT_FOUND, absl::StatusCode::kNotFound},
        Case{ERROR_ACCESS_DENIED, absl::StatusCode::kPermissionDenied},
        Case{ERROR_TOO_MANY_OPEN_FILES, absl::StatusCode::kResourceExhausted},
        Case{ERROR_DISK_FULL, absl::StatusCode::kResourceExhausted},
        Case{ERROR_SHARING_VIOLATION, absl::StatusCode::kUnavailable},
        Case{ERROR_NOT_SUPPORTED, absl::StatusCode::kUnimplemented},
        Case{ERROR_INVALID_NAME, absl::StatusCode::kInvalidArgument}}) {
    absl::Status st = platform::win32::win32_status(c.err, "open", p);
    EXPECT_EQ(st.code(), c.code) << st;
    EXPECT_EQ(st.message().rfind("open 'C:\\x\\.lock': ", 0), 0U) << st;
  }
  // The "\\?\" form is never shown.
  absl::Status st = platform::win32::win32_status(ERROR_FILE_NOT_FOUND, "open",
                                                  L"\\\\?\\C:\\x\\.lock");
  EXPECT_EQ(st.message().rfind("open 'C:\\x\\.lock': ", 0), 0U) << st;
}

TEST(Win32PlatformTest, ExtendedPathsAreAbsoluteNormalAndPrefixed) {
  namespace w = platform::win32;
  EXPECT_EQ(w::extended_path(L"C:\\a\\.\\b\\..\\c").native(),
            L"\\\\?\\C:\\a\\c");
  EXPECT_EQ(w::extended_path(L"C:/a/b/").native(), L"\\\\?\\C:\\a\\b");
  EXPECT_EQ(w::extended_path(L"\\\\server\\share\\d").native(),
            L"\\\\?\\UNC\\server\\share\\d");
  EXPECT_EQ(w::extended_path(L"\\\\?\\C:\\x").native(), L"\\\\?\\C:\\x");
  EXPECT_EQ(w::display_path(L"\\\\?\\UNC\\server\\share").native(),
            L"\\\\server\\share");
}

// Wine 8 cannot make a reparse point (CreateSymbolicLinkW claims success
// and creates nothing; FSCTL_SET_REPARSE_POINT is ERROR_NOT_SUPPORTED; a
// Unix symlink to a file shows no reparse attribute), so the refusal is
// tested here on the attributes it decides on (docs/design.md, "Windows").
TEST(Win32PlatformTest, ReparsePointsDirectoriesAndDevicesAreNotLockFiles) {
  namespace w = platform::win32;
  EXPECT_NE(w::describe_attributes(FILE_ATTRIBUTE_REPARSE_POINT |
                                   FILE_ATTRIBUTE_ARCHIVE)
                .find("reparse point"),
            std::string_view::npos);
  // A symlink to a directory is refused as a reparse point, not entered.
  EXPECT_NE(w::describe_attributes(FILE_ATTRIBUTE_REPARSE_POINT |
                                   FILE_ATTRIBUTE_DIRECTORY)
                .find("reparse point"),
            std::string_view::npos);
  EXPECT_NE(w::describe_attributes(FILE_ATTRIBUTE_DIRECTORY).find("directory"),
            std::string_view::npos);
  EXPECT_NE(w::describe_attributes(FILE_ATTRIBUTE_DEVICE).find("device"),
            std::string_view::npos);
  EXPECT_TRUE(w::describe_attributes(FILE_ATTRIBUTE_ARCHIVE).empty());
  EXPECT_TRUE(w::describe_attributes(FILE_ATTRIBUTE_NORMAL).empty());
}

}  // namespace

// tests/win32/win32_dir_lock_test.cc
//
// DirLock on Windows (LockFileEx), against other Windows processes
// (tl_win32_helper.exe): exclusion, shared mode, try, blocking waits,
// timeouts and cancels that leave nothing held, a holder's death, bad inputs
// and long paths. Runs under wine64 in CI (docs/design.md, "Windows").
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
#include <optional>
#include <stop_token>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "support/win32_child.h"
#include "tierlock/tierlock.h"

namespace {

using namespace std::chrono_literals;
using tierlock::DirLock;
using tierlock::Guard;
using tierlock::Mode;
using tierlock::testing::run_helper;
using tierlock::testing::Win32Child;
using tierlock::testing::Win32TempDir;

constexpr long kAcquired = 0;
constexpr long kBusy = 1;

// A helper process holding `dir` (exclusively or shared) until released.
class Holder {
 public:
  Holder(const std::filesystem::path& dir, bool shared)
      : child_(shared ? std::vector<std::wstring>{L"hold", dir.native(),
                                                  L"--shared"}
                      : std::vector<std::wstring>{L"hold", dir.native()}) {
    EXPECT_EQ(child_.read_line(), "locked");
  }
  // Lets the helper release and exit; checks it did.
  void release() {
    child_.close_stdin();
    EXPECT_EQ(child_.read_line(), "released");
    EXPECT_EQ(child_.wait(30s), 0UL);
  }
  void kill() { child_.kill(); }

 private:
  Win32Child child_;
};

long helper_try(const std::filesystem::path& dir, bool shared = false) {
  return shared ? run_helper({L"try", dir.native(), L"--shared"})
                : run_helper({L"try", dir.native()});
}

long raw_try(const std::filesystem::path& dir) {
  return run_helper({L"raw-try", (dir / L".lock").native()});
}

TEST(DirLockWin32Test, ExclusiveHolderInAnotherProcessExcludesTry) {
  Win32TempDir tmp;
  Holder holder(tmp.path(), /*shared=*/false);
  absl::StatusOr<DirLock> lock = DirLock::open(tmp.path());
  ASSERT_TRUE(lock.ok()) << lock.status();
  absl::StatusOr<std::optional<Guard>> ex = lock->try_acquire(Mode::kExclusive);
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_FALSE(ex->has_value());
  absl::StatusOr<std::optional<Guard>> sh = lock->try_acquire(Mode::kShared);
  ASSERT_TRUE(sh.ok()) << sh.status();
  EXPECT_FALSE(sh->has_value());
  holder.release();
  absl::StatusOr<std::optional<Guard>> after = lock->try_acquire();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(after->has_value());
}

TEST(DirLockWin32Test, OurExclusiveHoldExcludesOtherProcesses) {
  Win32TempDir tmp;
  absl::StatusOr<DirLock> lock = DirLock::open(tmp.path());
  ASSERT_TRUE(lock.ok()) << lock.status();
  {
    absl::StatusOr<Guard> guard = lock->acquire();
    ASSERT_TRUE(guard.ok()) << guard.status();
    EXPECT_EQ(helper_try(tmp.path()), kBusy);
    EXPECT_EQ(helper_try(tmp.path(), /*shared=*/true), kBusy);
    // Plain LockFileEx on byte 0 (what msvcrt.locking does) sees it too.
    EXPECT_EQ(raw_try(tmp.path()), kBusy);
  }
  EXPECT_EQ(helper_try(tmp.path()), kAcquired);
  EXPECT_EQ(raw_try(tmp.path()), kAcquired);
}

TEST(DirLockWin32Test, SharedHoldersCoexistAndExcludeExclusive) {
  Win32TempDir tmp;
  Holder reader(tmp.path(), /*shared=*/true);
  absl::StatusOr<DirLock> lock = DirLock::open(tmp.path());
  ASSERT_TRUE(lock.ok()) << lock.status();
  absl::StatusOr<std::optional<Guard>> sh = lock->try_acquire(Mode::kShared);
  ASSERT_TRUE(sh.ok()) << sh.status();
  ASSERT_TRUE(sh->has_value());
  // Two shared holders (the helper and us): a third process may share,
  // nobody may take it exclusively.
  EXPECT_EQ(helper_try(tmp.path(), /*shared=*/true), kAcquired);
  EXPECT_EQ(helper_try(tmp.path()), kBusy);
  reader.release();
  EXPECT_EQ(helper_try(tmp.path()), kBusy);  // we still hold it shared
  sh->reset();
  EXPECT_EQ(helper_try(tmp.path()), kAcquired);
}

TEST(DirLockWin32Test, BlockingAcquireIsGrantedWhenTheOtherProcessReleases) {
  Win32TempDir tmp;
  Holder holder(tmp.path(), /*shared=*/false);
  absl::StatusOr<DirLock> lock = DirLock::open(tmp.path());
  ASSERT_TRUE(lock.ok()) << lock.status();
  std::future<absl::StatusOr<Guard>> waiter = std::async(
      std::launch::async, [&] { return lock->acquire(Mode::kExclusive); });
  // Still waiting while the holder holds (a bounded check, not a sleep: the
  // outcome is checked either way below).
  EXPECT_EQ(waiter.wait_for(200ms), std::future_status::timeout);
  holder.release();
  ASSERT_EQ(waiter.wait_for(30s), std::future_status::ready);
  absl::StatusOr<Guard> guard = waiter.get();
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_EQ(helper_try(tmp.path()), kBusy);
}

TEST(DirLockWin32Test, TimeoutReturnsDeadlineExceededAndLeavesNothingHeld) {
  Win32TempDir tmp;
  Holder holder(tmp.path(), /*shared=*/false);
  absl::StatusOr<DirLock> lock = DirLock::open(tmp.path());
  ASSERT_TRUE(lock.ok()) << lock.status();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<Guard> guard = lock->acquire_for(200ms);
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(guard.status().code(), absl::StatusCode::kDeadlineExceeded)
      << guard.status();
  EXPECT_NE(guard.status().message().find(".lock"), std::string_view::npos)
      << guard.status();
  // No lock table on Windows: the holder is unknown, not "nobody".
  EXPECT_NE(guard.status().message().find("held by another process"),
            std::string_view::npos)
      << guard.status();
  EXPECT_NE(guard.status().message().find("cannot be known"),
            std::string_view::npos)
      << guard.status();
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 2000ms);  // ten times the timeout
  holder.release();
  // Nothing held by this process, in the kernel or the registry.
  EXPECT_EQ(raw_try(tmp.path()), kAcquired);
  EXPECT_EQ(helper_try(tmp.path()), kAcquired);
  absl::StatusOr<std::optional<Guard>> again = lock->try_acquire();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->has_value());
}

TEST(DirLockWin32Test, ZeroTimeoutIsOneTry) {
  Win32TempDir tmp;
  Holder holder(tmp.path(), /*shared=*/false);
  absl::StatusOr<DirLock> lock = DirLock::open(tmp.path());
  ASSERT_TRUE(lock.ok()) << lock.status();
  absl::StatusOr<Guard> guard = lock->acquire_for(0ms);
  EXPECT_EQ(guard.status().code(), absl::StatusCode::kDeadlineExceeded);
  holder.release();
}

TEST(DirLockWin32Test, StopTokenCancelsTheWaitAndLeavesNothingHeld) {
  Win32TempDir tmp;
  Holder holder(tmp.path(), /*shared=*/false);
  absl::StatusOr<DirLock> lock = DirLock::open(tmp.path());
  ASSERT_TRUE(lock.ok()) << lock.status();
  std::stop_source stop;
  std::future<absl::StatusOr<Guard>> waiter =
      std::async(std::launch::async, [&] {
        tierlock::AcquireOptions options;
        options.stop = stop.get_token();
        return lock->acquire(options);
      });
  EXPECT_EQ(waiter.wait_for(200ms), std::future_status::timeout);
  const auto start = std::chrono::steady_clock::now();
  stop.request_stop();
  ASSERT_EQ(waiter.wait_for(30s), std::future_status::ready);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1000ms);
  absl::StatusOr<Guard> guard = waiter.get();
  EXPECT_EQ(guard.status().code(), absl::StatusCode::kCancelled)
      << guard.status();
  holder.release();
  EXPECT_EQ(raw_try(tmp.path()), kAcquired);
  EXPECT_EQ(helper_try(tmp.path()), kAcquired);
}

TEST(DirLockWin32Test, AlreadyStoppedTokenCancelsAtOnce) {
  Win32TempDir tmp;
  absl::StatusOr<DirLock> lock = DirLock::open(tmp.path());
  ASSERT_TRUE(lock.ok()) << lock.status();
  std::stop_source stop;
  stop.request_stop();
  tierlock::AcquireOptions options;
  options.stop = stop.get_token();
  EXPECT_EQ(lock->acquire(options).status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(raw_try(tmp.path()), kAcquired);
}

TEST(DirLockWin32Test, AsyncAcquireCompletesWhenTheOtherProcessReleases) {
  Win32TempDir tmp;
  Holder holder(tmp.path(), /*shared=*/false);
  absl::StatusOr<DirLock> lock = DirLock::open(tmp.path());
  ASSERT_TRUE(lock.ok()) << lock.status();
  std::future<absl::StatusOr<Guard>> later = lock->acquire_async();
  EXPECT_EQ(later.wait_for(200ms), std::future_status::timeout);
  holder.release();
  ASSERT_EQ(later.wait_for(30s), std::future_status::ready);
  absl::StatusOr<Guard> guard = later.get();
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_EQ(helper_try(tmp.path()), kBusy);
}

TEST(DirLockWin32Test, HolderDeathReleasesTheLock) {
  Win32TempDir tmp;
  Holder holder(tmp.path(), /*shared=*/false);
  EXPECT_EQ(helper_try(tmp.path()), kBusy);
  holder.kill();
  absl::StatusOr<DirLock> lock = DirLock::open(tmp.path());
  ASSERT_TRUE(lock.ok()) << lock.status();
  absl::StatusOr<Guard> guard = lock->acquire_for(30s);
  EXPECT_TRUE(guard.ok()) << guard.status();
}

TEST(DirLockWin32Test, ThreadsOfOneProcessExcludeEachOther) {
  Win32TempDir tmp;
  absl::StatusOr<DirLock> a = DirLock::open(tmp.path());
  absl::StatusOr<DirLock> b = DirLock::open(tmp.path() / L".");
  ASSERT_TRUE(a.ok() && b.ok());
  absl::StatusOr<Guard> held = a->acquire();
  ASSERT_TRUE(held.ok()) << held.status();
  std::optional<bool> got;
  std::thread([&] {
    absl::StatusOr<std::optional<Guard>> g = b->try_acquire();
    got = g.ok() && g->has_value();
  }).join();
  EXPECT_EQ(got, false);
  ASSERT_TRUE(held->release().ok());
  absl::StatusOr<std::optional<Guard>> now = b->try_acquire();
  ASSERT_TRUE(now.ok());
  EXPECT_TRUE(now->has_value());
}

TEST(DirLockWin32Test, MissingDirectoryIsNotFoundAndNamed) {
  Win32TempDir tmp;
  const std::filesystem::path missing = tmp.path() / L"no-such-dir";
  absl::StatusOr<DirLock> lock = DirLock::open(missing);
  ASSERT_EQ(lock.status().code(), absl::StatusCode::kNotFound) << lock.status();
  EXPECT_NE(lock.status().message().find("no-such-dir"), std::string_view::npos)
      << lock.status();
  EXPECT_FALSE(std::filesystem::exists(missing));
}

TEST(DirLockWin32Test, CreateDirectoryCreatesOneLevel) {
  Win32TempDir tmp;
  tierlock::LockOptions options;
  options.create_directory = true;
  absl::StatusOr<DirLock> lock = DirLock::open(tmp.path() / L"new", options);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_TRUE(std::filesystem::is_regular_file(tmp.path() / L"new" / L".lock"));
  EXPECT_EQ(DirLock::open(tmp.path() / L"a" / L"b", options).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(DirLockWin32Test, LockFileThatIsADirectoryIsRefused) {
  Win32TempDir tmp;
  std::filesystem::create_directory(tmp.path() / L".lock");
  absl::StatusOr<DirLock> lock = DirLock::open(tmp.path());
  ASSERT_EQ(lock.status().code(), absl::StatusCode::kInvalidArgument)
      << lock.status();
  EXPECT_NE(lock.status().message().find("is a directory"),
            std::string_view::npos)
      << lock.status();
}

TEST(DirLockWin32Test, DirectoryThatIsAFileIsRefused) {
  Win32TempDir tmp;
  const std::filesystem::path file = tmp.path() / L"file";
  HANDLE h = ::CreateFileW(file.c_str(), GENERIC_WRITE, 0, nullptr, CREATE_NEW,
                           0, nullptr);
  ASSERT_NE(h, INVALID_HANDLE_VALUE);
  ::CloseHandle(h);
  absl::StatusOr<DirLock> lock = DirLock::open(file);
  ASSERT_FALSE(lock.ok());
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kInvalidArgument)
      << lock.status();
}

TEST(DirLockWin32Test, LockFileNamesWin32CannotSpellAreRefused) {
  Win32TempDir tmp;
  for (const char* name : {"a\\b", "a/b", "x:stream", "", ".", "..", "x.", "x ",
                           "NUL", "con", "Com1.lock", "lpt9"}) {
    tierlock::LockOptions options;
    options.lock_file_name = name;
    absl::StatusOr<DirLock> lock = DirLock::open(tmp.path(), options);
    EXPECT_EQ(lock.status().code(), absl::StatusCode::kInvalidArgument)
        << name << ": " << lock.status();
  }
  // Near misses are ordinary names.
  for (const char* name : {"COM10", "console", "nul-lock", ".lock"}) {
    tierlock::LockOptions options;
    options.lock_file_name = name;
    absl::StatusOr<DirLock> lock = DirLock::open(tmp.path(), options);
    EXPECT_TRUE(lock.ok()) << name << ": " << lock.status();
  }
}

TEST(DirLockWin32Test, ExistingContentIsNeverTruncated) {
  Win32TempDir tmp;
  const std::filesystem::path file = tmp.path() / L".lock";
  HANDLE h = ::CreateFileW(file.c_str(), GENERIC_WRITE, 0, nullptr, CREATE_NEW,
                           0, nullptr);
  ASSERT_NE(h, INVALID_HANDLE_VALUE);
  DWORD n = 0;
  ASSERT_TRUE(::WriteFile(h, "keep", 4, &n, nullptr));
  ::CloseHandle(h);
  {
    absl::StatusOr<DirLock> lock = DirLock::open(tmp.path());
    ASSERT_TRUE(lock.ok()) << lock.status();
    absl::StatusOr<Guard> guard = lock->acquire();
    ASSERT_TRUE(guard.ok()) << guard.status();
  }
  EXPECT_EQ(std::filesystem::file_size(file), 4U);
}

TEST(DirLockWin32Test, LongPathsBeyondMaxPathWork) {
  Win32TempDir tmp;
  std::wstring deep = L"\\\\?\\" + tmp.path().native();
  for (wchar_t c : {L'a', L'b', L'c'}) {
    deep += L"\\" + std::wstring(100, c);
    ASSERT_TRUE(::CreateDirectoryW(deep.c_str(), nullptr));
  }
  // Given without the prefix, as a program would: well over MAX_PATH (260).
  const std::filesystem::path dir = std::wstring(deep.substr(4));
  ASSERT_GT(dir.native().size(), 300U);
  absl::StatusOr<DirLock> lock = DirLock::open(dir);
  ASSERT_TRUE(lock.ok()) << lock.status();
  absl::StatusOr<Guard> guard = lock->acquire();
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_EQ(lock->directory(), dir);
  EXPECT_EQ(helper_try(dir), kBusy);
  ASSERT_TRUE(guard->release().ok());
  EXPECT_EQ(helper_try(dir), kAcquired);
  // Errors name the whole long path.
  absl::StatusOr<DirLock> missing = DirLock::open(dir / L"missing");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(std::string(100, 'c')),
            std::string_view::npos)
      << missing.status();
}

TEST(DirLockWin32Test, NonAsciiPathsRoundTrip) {
  Win32TempDir tmp;
  const std::filesystem::path dir = tmp.path() / L"\u00e9t\u00e9-\u65e5\u672c";
  ASSERT_TRUE(std::filesystem::create_directory(dir));
  absl::StatusOr<DirLock> lock = DirLock::open(dir);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_EQ(lock->directory(), dir);
  absl::StatusOr<Guard> guard = lock->acquire();
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_EQ(helper_try(dir), kBusy);
  // Messages carry the path as UTF-8.
  absl::StatusOr<DirLock> missing = DirLock::open(dir / L"x");
  EXPECT_NE(missing.status().message().find("\xc3\xa9t\xc3\xa9-"),
            std::string_view::npos)
      << missing.status();
}

}  // namespace

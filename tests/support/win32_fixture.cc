// Windows implementation of tests/support/fixture.h and temp_dir.h: the
// same checks at the end of each test, by Windows means (handle and thread
// counts; "no kernel lock left" by locking byte 0 of the lock file from a
// fresh handle, since Windows has no lock table to read).
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
// After <windows.h>, which it needs.
#include <tlhelp32.h>

#include <atomic>
#include <chrono>
#include <system_error>
#include <thread>

#include "support/fixture.h"
#include "support/temp_dir.h"
#include "support/wait.h"

namespace tierlock::testing {
namespace {

// True if nobody holds a LockFileEx lock on byte 0 of `lock_file` (or it
// does not exist).
bool unlocked(const std::filesystem::path& lock_file) {
  HANDLE h =
      ::CreateFileW(lock_file.c_str(), GENERIC_READ,
                    FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                    nullptr, OPEN_EXISTING, 0, nullptr);
  if (h == INVALID_HANDLE_VALUE) return true;
  OVERLAPPED ov = {};
  const BOOL ok = ::LockFileEx(
      h, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ov);
  ::CloseHandle(h);  // drops the probe's own lock
  return ok != 0;
}

}  // namespace

int count_open_fds() {
  DWORD n = 0;
  ::GetProcessHandleCount(::GetCurrentProcess(), &n);
  return static_cast<int>(n);
}

int count_threads() {
  HANDLE snap = ::CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
  if (snap == INVALID_HANDLE_VALUE) return -1;
  const DWORD self = ::GetCurrentProcessId();
  THREADENTRY32 e = {};
  e.dwSize = sizeof e;
  int n = 0;
  for (BOOL ok = ::Thread32First(snap, &e); ok; ok = ::Thread32Next(snap, &e)) {
    if (e.th32OwnerProcessID == self) ++n;
  }
  ::CloseHandle(snap);
  return n;
}

void TierlockTest::SetUp() { count_baseline(); }

void TierlockTest::TearDown() {
  expect_nothing_left("handles");
  const std::filesystem::path lock = dir() / ".lock";
  EXPECT_TRUE(wait_until([&] { return unlocked(lock); }, kSettle))
      << "the test left " << lock.string() << " locked";
}

TempDir::TempDir() {
  static std::atomic<unsigned> counter{0};
  std::error_code ec;
  const std::filesystem::path base = std::filesystem::temp_directory_path(ec);
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::filesystem::path p =
        base / (L"tierlock-test-" + std::to_wstring(::GetCurrentProcessId()) +
                L"-" + std::to_wstring(counter.fetch_add(1)));
    if (::CreateDirectoryW(p.c_str(), nullptr)) {
      path_ = std::filesystem::canonical(p);
      return;
    }
  }
  throw std::system_error(static_cast<int>(::GetLastError()),
                          std::system_category(), "TempDir");
}

TempDir::~TempDir() { remove_tree(path_); }

void remove_tree(const std::filesystem::path& path) noexcept {
  std::error_code ec;
  std::filesystem::remove_all(L"\\\\?\\" + path.native(), ec);
}

}  // namespace tierlock::testing

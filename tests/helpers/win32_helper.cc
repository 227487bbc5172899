// tests/helpers/win32_helper.cc
//
// tl_win32_helper.exe: "another process" for the Windows tests (the
// counterpart of tl_helper, which needs fork+exec). Subcommands:
//
//   hold DIR [--shared] [--name N]
//                         acquire (blocking) with tierlock, print "locked",
//                         wait for a line or EOF on stdin, release, print
//                         "released", exit 0
//   try DIR [--shared] [--name N]
//                         try_acquire with tierlock: print "acquired" and exit
//                         0, or print "busy" and exit 1
// (the same protocol as tl_helper's hold and try, so tests/support/helpers.h
// drives either; --name is the lock file name)
//   raw-try FILE          without tierlock: CreateFileW + LockFileEx
//                         (exclusive, LOCKFILE_FAIL_IMMEDIATELY) on byte 0 of
//                         FILE: exit 0 if it could be locked, 1 if another
//                         handle holds it, 2 on error
//
// Errors print "tl_win32_helper: <reason>" on stderr and exit 2; bad usage
// exits 64.
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>

#include "tierlock/tierlock.h"

namespace {

int fail(std::string_view what) {
  std::cerr << "tl_win32_helper: " << what << "\n";
  return 2;
}

void wait_for_line() {
  std::string line;
  std::getline(std::cin, line);
}

int run(int argc, wchar_t** argv) {
  if (argc < 3) return 64;
  const std::wstring cmd = argv[1];
  const std::filesystem::path target = argv[2];
  bool shared = false;
  tierlock::LockOptions options;
  for (int i = 3; i < argc; ++i) {
    const std::wstring arg = argv[i];
    if (arg == L"--shared") {
      shared = true;
    } else if (arg == L"--name" && i + 1 < argc) {
      options.lock_file_name = std::filesystem::path(argv[++i]).string();
    } else {
      return 64;
    }
  }
  const tierlock::Mode mode =
      shared ? tierlock::Mode::kShared : tierlock::Mode::kExclusive;
  if (cmd == L"raw-try") {
    HANDLE h =
        ::CreateFileW(target.c_str(), GENERIC_READ | GENERIC_WRITE,
                      FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                      nullptr, OPEN_EXISTING, 0, nullptr);
    if (h == INVALID_HANDLE_VALUE) return fail("raw-try: cannot open");
    OVERLAPPED ov = {};
    const BOOL ok = ::LockFileEx(
        h, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ov);
    const DWORD err = ::GetLastError();
    ::CloseHandle(h);
    if (ok) return 0;
    return err == ERROR_LOCK_VIOLATION ? 1 : fail("raw-try: LockFileEx");
  }
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(target, options);
  if (!lock.ok()) return fail(lock.status().ToString());
  if (cmd == L"hold") {
    absl::StatusOr<tierlock::Guard> guard = lock->acquire(mode);
    if (!guard.ok()) return fail(guard.status().ToString());
    std::cout << "locked" << std::endl;
    wait_for_line();
    if (absl::Status st = guard->release(); !st.ok())
      return fail(st.ToString());
    std::cout << "released" << std::endl;
    return 0;
  }
  if (cmd == L"try") {
    absl::StatusOr<std::optional<tierlock::Guard>> guard =
        lock->try_acquire(mode);
    if (!guard.ok()) return fail(guard.status().ToString());
    std::cout << (guard->has_value() ? "acquired" : "busy") << std::endl;
    return guard->has_value() ? 0 : 1;
  }
  return 64;
}

}  // namespace

int wmain(int argc, wchar_t** argv) { return run(argc, argv); }

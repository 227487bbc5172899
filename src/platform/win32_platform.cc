// Windows implementation of the platform seam (src/platform/platform.h):
// opening lock files with CreateFileW and locking them with LockFileEx.
//
// The lock is LockFileEx on byte 0 (one byte) of the lock file, exclusive or
// shared: the byte Python's msvcrt.locking and filelock lock, and inside the
// whole-file range other tools lock, so they all exclude each other. Windows
// byte-range locks are mandatory for I/O on that byte; the lock file is
// empty and never read or written, so that costs nothing. Like flock, the
// lock belongs to the handle (its file object) and goes away when the handle
// is closed or the process dies.
#include <algorithm>
#include <cerrno>
#include <string>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "base/string_util.h"
#include "platform/platform.h"
#include "platform/win32_util.h"
// clang-format off
// After <windows.h> (win32_util.h): NtCreateFile, RtlNtStatusToDosError.
#include <winternl.h>
// clang-format on

namespace tierlock::internal::platform {
namespace win32 {
namespace {

absl::StatusCode code_for_win32(DWORD err) {
  switch (err) {
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
    case ERROR_INVALID_DRIVE:
    case ERROR_BAD_NETPATH:
    case ERROR_BAD_NET_NAME:
    case ERROR_BAD_PATHNAME:
      return absl::StatusCode::kNotFound;
    case ERROR_ACCESS_DENIED:
    case ERROR_WRITE_PROTECT:
    case ERROR_PRIVILEGE_NOT_HELD:
      return absl::StatusCode::kPermissionDenied;
    case ERROR_TOO_MANY_OPEN_FILES:
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
    case ERROR_DISK_FULL:
    case ERROR_HANDLE_DISK_FULL:
    case ERROR_NO_SYSTEM_RESOURCES:
    case ERROR_NOT_ENOUGH_QUOTA:
      return absl::StatusCode::kResourceExhausted;
    case ERROR_SHARING_VIOLATION:
    case ERROR_LOCK_VIOLATION:
      return absl::StatusCode::kUnavailable;
    case ERROR_NOT_SUPPORTED:
    case ERROR_INVALID_FUNCTION:
      return absl::StatusCode::kUnimplemented;
    case ERROR_NOT_LOCKED:
      return absl::StatusCode::kFailedPrecondition;
    case ERROR_DIRECTORY:
    case ERROR_INVALID_NAME:
    case ERROR_FILENAME_EXCED_RANGE:
    case ERROR_INVALID_PARAMETER:
    case ERROR_INVALID_HANDLE:
    case ERROR_CANT_ACCESS_FILE:
    case ERROR_CANT_RESOLVE_FILENAME:
      return absl::StatusCode::kInvalidArgument;
    default:
      return absl::StatusCode::kUnknown;
  }
}

// The system's text for `err`, in UTF-8, without the trailing ".\r\n".
std::string reason(DWORD err) {
  wchar_t* buf = nullptr;
  const DWORD n = ::FormatMessageW(
      FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM |
          FORMAT_MESSAGE_IGNORE_INSERTS,
      nullptr, err, MAKELANGID(LANG_NEUTRAL, SUBLANG_DEFAULT),
      reinterpret_cast<wchar_t*>(&buf), 0, nullptr);
  std::string text;
  if (n > 0 && buf != nullptr) {
    text = path_text(std::filesystem::path(std::wstring(buf, n)));
  }
  if (buf != nullptr) ::LocalFree(buf);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' ||
                           text.back() == ' ' || text.back() == '.')) {
    text.pop_back();
  }
  if (text.empty()) text = "error";
  return absl::StrCat(text, " (Windows error ", err, ")");
}

}  // namespace

absl::Status win32_status(DWORD err, std::string_view op,
                          const std::filesystem::path& path) {
  return absl::Status(
      code_for_win32(err),
      absl::StrCat(to_absl(op), " '", path_text(display_path(path)),
                   "': ", reason(err)));
}

absl::Status win32_kind_status(std::string_view op,
                               const std::filesystem::path& path,
                               std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      to_absl(op), " '", path_text(display_path(path)), "': ", to_absl(what)));
}

std::filesystem::path extended_path(const std::filesystem::path& p) {
  const std::wstring& s = p.native();
  if (s.rfind(L"\\\\?\\", 0) == 0 || s.rfind(L"\\\\.\\", 0) == 0) return p;
  const bool unc = s.size() > 2 && (s[0] == L'\\' || s[0] == L'/') &&
                   (s[1] == L'\\' || s[1] == L'/');
  if (unc) {
    // "\\server\share\..." is absolute; normalised as a relative path
    // after the two separators (libstdc++'s lexically_normal would fold
    // them, and Wine's GetFullPathNameW maps UNC paths onto a drive).
    std::wstring rest = std::filesystem::path(s.substr(2))
                            .lexically_normal()
                            .make_preferred()
                            .native();
    while (!rest.empty() && rest.back() == L'\\') rest.pop_back();
    return L"\\\\?\\UNC\\" + rest;
  }
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(p, ec);
  if (ec) abs = p;
  std::wstring text = abs.lexically_normal().make_preferred().native();
  while (text.size() > 3 && text.back() == L'\\') text.pop_back();
  return L"\\\\?\\" + text;
}

std::filesystem::path display_path(const std::filesystem::path& p) {
  const std::wstring& s = p.native();
  if (s.rfind(L"\\\\?\\UNC\\", 0) == 0) return L"\\\\" + s.substr(8);
  if (s.rfind(L"\\\\?\\", 0) == 0) return s.substr(4);
  return p;
}

std::filesystem::path utf8_path(std::string_view name) {
  return std::filesystem::path(std::u8string(name.begin(), name.end()));
}

absl::StatusOr<HANDLE> open_directory(const std::filesystem::path& dir,
                                      bool create) {
  const std::filesystem::path ext = extended_path(dir);
  auto open = [&] {
    // FILE_FLAG_BACKUP_SEMANTICS is what lets CreateFileW open a directory.
    return ::CreateFileW(ext.c_str(), FILE_READ_ATTRIBUTES,
                         FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                         nullptr, OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS,
                         nullptr);
  };
  HANDLE h = open();
  if (h == INVALID_HANDLE_VALUE && create &&
      (::GetLastError() == ERROR_FILE_NOT_FOUND)) {
    if (!::CreateDirectoryW(ext.c_str(), nullptr) &&
        ::GetLastError() != ERROR_ALREADY_EXISTS) {
      return win32_status(::GetLastError(), "create directory", dir);
    }
    h = open();
  }
  if (h == INVALID_HANDLE_VALUE) {
    const DWORD err = ::GetLastError();
    if (err == ERROR_DIRECTORY) {
      return win32_kind_status("open directory", dir, "Not a directory");
    }
    return win32_status(err, "open directory", dir);
  }
  HandleCloser closer(h);
  BY_HANDLE_FILE_INFORMATION info;
  if (!::GetFileInformationByHandle(h, &info)) {
    return win32_status(::GetLastError(), "open directory", dir);
  }
  if ((info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) == 0) {
    return win32_kind_status("open directory", dir, "Not a directory");
  }
  return closer.release();
}

absl::StatusOr<std::filesystem::path> final_path(
    HANDLE h, const std::filesystem::path& for_messages) {
  std::wstring buf(512, L'\0');
  for (;;) {
    const DWORD n = ::GetFinalPathNameByHandleW(
        h, buf.data(), static_cast<DWORD>(buf.size()),
        FILE_NAME_NORMALIZED | VOLUME_NAME_DOS);
    if (n == 0) {
      const DWORD err = ::GetLastError();
      // Windows returns the size needed; Wine returns 0 with ERROR_MORE_DATA.
      if (err == ERROR_MORE_DATA && buf.size() < 65536) {
        buf.resize(buf.size() * 2);
        continue;
      }
      if (err == ERROR_MORE_DATA) {
        // Wine 8 fails this way for any path longer than MAX_PATH, however
        // large the buffer. Fall back to the absolute, normalised path:
        // what Win32 itself makes of it, short of resolving reparse points.
        return display_path(extended_path(for_messages));
      }
      return win32_status(err, "resolve", for_messages);
    }
    if (n < buf.size()) {
      buf.resize(n);
      return display_path(std::filesystem::path(buf));
    }
    buf.resize(n + 1);
  }
}

absl::StatusOr<std::pair<FileId, DWORD>> file_id_of(
    HANDLE h, const std::filesystem::path& for_messages) {
  BY_HANDLE_FILE_INFORMATION info;
  if (!::GetFileInformationByHandle(h, &info)) {
    return win32_status(::GetLastError(), "stat", for_messages);
  }
  FileId id{info.dwVolumeSerialNumber,
            (std::uint64_t{info.nFileIndexHigh} << 32) | info.nFileIndexLow};
  return std::pair(id, info.dwFileAttributes);
}

std::string_view describe_attributes(DWORD attributes) {
  if ((attributes & FILE_ATTRIBUTE_REPARSE_POINT) != 0) {
    return "is a reparse point (a symbolic link or junction; refusing to "
           "follow it)";
  }
  if ((attributes & FILE_ATTRIBUTE_DIRECTORY) != 0) {
    return "is a directory, not a lock file";
  }
  if ((attributes & FILE_ATTRIBUTE_DEVICE) != 0) {
    return "is a device, not a regular file";
  }
  return {};
}

}  // namespace win32

using win32::HandleCloser;

namespace {

// Opens the lock file `name` inside the directory open at `dir` (relative
// to the handle, as openat does on POSIX: a directory swapped after it was
// opened is not followed) for locking: never following a reparse point
// (FILE_OPEN_REPARSE_POINT), never a directory (FILE_NON_DIRECTORY_FILE),
// never truncating (FILE_OPEN_IF / FILE_OPEN), shared for read, write and
// delete so no other program is locked out, synchronous, not inheritable:
// what CreateFileW would do, through NtCreateFile, which takes a root
// directory handle. On failure GetLastError() is the Win32 error.
HANDLE open_in_directory(HANDLE dir, const std::wstring& name, DWORD access,
                         ULONG disposition) {
  UNICODE_STRING uname;
  uname.Buffer = const_cast<wchar_t*>(name.c_str());
  uname.Length = static_cast<USHORT>(name.size() * sizeof(wchar_t));
  uname.MaximumLength = uname.Length;
  OBJECT_ATTRIBUTES attributes;
  InitializeObjectAttributes(&attributes, &uname, OBJ_CASE_INSENSITIVE, dir,
                             nullptr);
  IO_STATUS_BLOCK io = {};
  HANDLE h = INVALID_HANDLE_VALUE;
  const NTSTATUS status = ::NtCreateFile(
      &h, access | SYNCHRONIZE | FILE_READ_ATTRIBUTES, &attributes, &io,
      nullptr, FILE_ATTRIBUTE_NORMAL,
      FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, disposition,
      FILE_NON_DIRECTORY_FILE | FILE_SYNCHRONOUS_IO_NONALERT |
          FILE_OPEN_REPARSE_POINT,
      nullptr, 0);
  if (status < 0) {
    ::SetLastError(::RtlNtStatusToDosError(status));
    return INVALID_HANDLE_VALUE;
  }
  return h;
}

}  // namespace

namespace win32 {

BOOL convert_lock(HANDLE h, DWORD flags) {
  // flock converts a lock held through the same descriptor; LockFileEx
  // stacks instead (a shared lock is granted over the handle's own
  // exclusive one, and one unlock then leaves the other held) or conflicts
  // with itself (exclusive over its own shared). The registry converts only
  // while no thread of the process holds the lock, so dropping ours first
  // exposes nothing; unlike Linux's atomic downgrade, another process may
  // take the lock in between, and then this try fails like any other.
  OVERLAPPED unlock_ov = {};
  (void)::UnlockFileEx(h, 0, 1, 0, &unlock_ov);  // nothing held: a no-op
  OVERLAPPED ov = {};  // offset 0; the handle is synchronous
  return ::LockFileEx(h, flags | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ov);
}

}  // namespace win32

namespace {

DWORD lock_flags(Mode mode) {
  return mode == Mode::kExclusive ? LOCKFILE_EXCLUSIVE_LOCK : 0;
}

}  // namespace

absl::StatusOr<FileId> stat_lock_file(const std::filesystem::path& dir,
                                      std::string_view name) {
  const std::filesystem::path path = dir / win32::utf8_path(name);
  const std::filesystem::path ext = win32::extended_path(path);
  // No access rights needed for the identity; the reparse point itself.
  HandleCloser h(::CreateFileW(
      ext.c_str(), FILE_READ_ATTRIBUTES,
      FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
      OPEN_EXISTING, FILE_FLAG_OPEN_REPARSE_POINT | FILE_FLAG_BACKUP_SEMANTICS,
      nullptr));
  if (!h.valid()) return win32::win32_status(::GetLastError(), "stat", path);
  absl::StatusOr<std::pair<FileId, DWORD>> id =
      win32::file_id_of(h.get(), path);
  if (!id.ok()) return id.status();
  if (std::string_view what = win32::describe_attributes(id->second);
      !what.empty()) {
    return win32::win32_kind_status("open", path, what);
  }
  return id->first;
}

// Windows has ACLs, not owner and mode bits: which users may delete the lock
// file is a question for its and its directory's DACL (and the directory's
// FILE_DELETE_CHILD), which tierlock does not evaluate. The file is opened
// with FILE_SHARE_DELETE (so that it stays deletable like a POSIX file), so
// "empty" here means "not checked", and docs/design.md says so.
std::string unsafe_reason_of(const std::filesystem::path&,
                             const std::filesystem::path&) {
  return {};
}

absl::StatusOr<PathCheck> check_path(NativeHandle,
                                     const std::filesystem::path& lock_file,
                                     const FileId& id, const FileId&) {
  // One CreateFileW of the name (attributes only, the reparse point itself).
  // A file deleted with POSIX semantics has no name any more (not found); a
  // delete-pending one (legacy semantics) cannot be opened, nor created anew
  // by anyone while we keep it open, and is reported as the error it gives.
  // Directory moves are not told apart here (kReplaced: reopened at the path).
  absl::StatusOr<FileId> now =
      stat_lock_file(lock_file.parent_path(), path_text(lock_file.filename()));
  if (now.ok()) return *now == id ? PathCheck::kNamesIt : PathCheck::kReplaced;
  if (now.status().code() == absl::StatusCode::kNotFound) {
    return PathCheck::kReplaced;
  }
  return now.status();
}

absl::StatusOr<OpenedLockFile> open_lock_file(const std::filesystem::path& dir,
                                              std::string_view name,
                                              bool create_directory) {
  if (absl::Status st = validate_lock_file_name(dir, name); !st.ok()) {
    return st;
  }
  absl::StatusOr<HANDLE> dir_handle =
      win32::open_directory(dir, create_directory);
  if (!dir_handle.ok()) return dir_handle.status();
  HandleCloser dir_closer(*dir_handle);
  absl::StatusOr<std::filesystem::path> canonical =
      win32::final_path(dir_closer.get(), dir);
  if (!canonical.ok()) return canonical.status();

  OpenedLockFile out;
  out.directory = *std::move(canonical);
  out.lock_file = out.directory / win32::utf8_path(name);
  const std::filesystem::path ext = win32::extended_path(out.lock_file);

  // Look before opening, so a directory or reparse point gets a precise
  // message; the check on the open handle below is what makes it safe.
  const DWORD attributes = ::GetFileAttributesW(ext.c_str());
  if (attributes != INVALID_FILE_ATTRIBUTES) {
    if (std::string_view what = win32::describe_attributes(attributes);
        !what.empty()) {
      return win32::win32_kind_status("open", out.lock_file, what);
    }
  }

  const std::wstring wname = win32::utf8_path(name).native();
  HANDLE h = open_in_directory(dir_closer.get(), wname,
                               GENERIC_READ | GENERIC_WRITE, FILE_OPEN_IF);
  if (h == INVALID_HANDLE_VALUE && ::GetLastError() == ERROR_ACCESS_DENIED) {
    // A read-only file or directory: an existing lock file is still
    // lockable with read access only.
    const DWORD create_err = ::GetLastError();
    h = open_in_directory(dir_closer.get(), wname, GENERIC_READ, FILE_OPEN);
    out.read_only = h != INVALID_HANDLE_VALUE;
    if (h == INVALID_HANDLE_VALUE && ::GetLastError() == ERROR_FILE_NOT_FOUND) {
      return win32::win32_status(create_err, "create", out.lock_file);
    }
  }
  if (h == INVALID_HANDLE_VALUE) {
    const DWORD err = ::GetLastError();
    // A directory appearing between the look and the open.
    const DWORD now = ::GetFileAttributesW(ext.c_str());
    if (now != INVALID_FILE_ATTRIBUTES) {
      if (std::string_view what = win32::describe_attributes(now);
          !what.empty()) {
        return win32::win32_kind_status("open", out.lock_file, what);
      }
    }
    return win32::win32_status(err, "open", out.lock_file);
  }
  HandleCloser file(h);
  if (::GetFileType(h) != FILE_TYPE_DISK) {
    return win32::win32_kind_status("open", out.lock_file,
                                    "is not a regular file");
  }
  absl::StatusOr<std::pair<FileId, DWORD>> id =
      win32::file_id_of(h, out.lock_file);
  if (!id.ok()) return id.status();
  if (std::string_view what = win32::describe_attributes(id->second);
      !what.empty()) {
    return win32::win32_kind_status("open", out.lock_file, what);
  }
  out.id = id->first;
  out.handle = file.release();
  return out;
}

absl::StatusOr<NativeHandle> reopen(NativeHandle handle,
                                    const std::filesystem::path& lock_file) {
  absl::StatusOr<std::pair<FileId, DWORD>> want =
      win32::file_id_of(handle, lock_file);
  if (!want.ok()) return want.status();
  constexpr DWORD kShare =
      FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;
  // ReOpenFile reaches the very file we have open, whatever its path is now.
  HANDLE h = ::ReOpenFile(handle, GENERIC_READ | GENERIC_WRITE, kShare,
                          FILE_FLAG_OPEN_REPARSE_POINT);
  if (h == INVALID_HANDLE_VALUE && ::GetLastError() == ERROR_ACCESS_DENIED) {
    h = ::ReOpenFile(handle, GENERIC_READ, kShare,
                     FILE_FLAG_OPEN_REPARSE_POINT);
  }
  if (h == INVALID_HANDLE_VALUE) {
    return win32::win32_status(::GetLastError(), "reopen", lock_file);
  }
  HandleCloser file(h);
  absl::StatusOr<std::pair<FileId, DWORD>> got =
      win32::file_id_of(h, lock_file);
  if (!got.ok()) return got.status();
  if (got->first != want->first) {
    return absl::FailedPreconditionError(
        absl::StrCat("reopen '", path_text(lock_file),
                     "': the lock file was replaced since it was opened"));
  }
  return file.release();
}

absl::StatusOr<std::filesystem::path> canonical_directory(
    const std::filesystem::path& dir) {
  absl::StatusOr<HANDLE> h = win32::open_directory(dir, /*create=*/false);
  if (!h.ok()) return h.status();
  HandleCloser closer(*h);
  return win32::final_path(closer.get(), dir);
}

// Never parks the thread in a blocking LockFileEx: on a synchronous handle
// Windows serialises I/O per file object, so a blocked LockFileEx would
// hold up the tries and unlocks other threads make on the same handle
// meanwhile. It polls instead (see InterruptibleWait).
absl::Status lock(NativeHandle handle, Mode mode,
                  const std::filesystem::path& lock_file) {
  InterruptibleWait wait(std::nullopt);
  absl::StatusOr<InterruptibleWait::Result> r =
      wait.lock(handle, mode, lock_file);
  if (!r.ok()) return r.status();
  return absl::OkStatus();  // no deadline, never interrupted: kLocked
}

absl::StatusOr<bool> try_lock(NativeHandle handle, Mode mode,
                              const std::filesystem::path& lock_file) {
  if (win32::convert_lock(handle, lock_flags(mode))) return true;
  const DWORD err = ::GetLastError();
  if (err == ERROR_LOCK_VIOLATION || err == ERROR_IO_PENDING) return false;
  return win32::win32_status(err, "LockFileEx", lock_file);
}

absl::Status unlock(NativeHandle handle,
                    const std::filesystem::path& lock_file) {
  OVERLAPPED ov = {};
  if (!::UnlockFileEx(handle, 0, 1, 0, &ov)) {
    DWORD err = ::GetLastError();
    // Nothing locked through this handle: Windows says ERROR_NOT_LOCKED,
    // Wine ERROR_LOCK_VIOLATION; both mean the same here.
    if (err == ERROR_LOCK_VIOLATION) err = ERROR_NOT_LOCKED;
    return win32::win32_status(err, "unlock", lock_file);
  }
  return absl::OkStatus();
}

void close_handle(NativeHandle handle) {
  if (handle != kInvalidHandle && handle != nullptr) ::CloseHandle(handle);
}

void register_fork_handlers(void (*)(), void (*)(), void (*)()) {
  // No fork() on Windows: a child process never inherits a registry entry
  // (lock handles are not inheritable either).
}

}  // namespace tierlock::internal::platform

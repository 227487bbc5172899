// src/platform/win32_util.h
//
// Helpers shared by the Windows platform files (internal; includes
// <windows.h>, so only src/platform/win32_*.cc may include it).
//   HandleCloser     - closes a HANDLE at scope exit unless released.
//   win32_status     - a Status from a GetLastError() code: "op 'path':
//   reason". win32_kind_status- kInvalidArgument "op 'path': what" (wrong kind
//   of file). extended_path    - the "\\?\" form of an absolute path (no
//   MAX_PATH limit). display_path     - a "\\?\" path from the system without
//   the prefix. utf8_path        - a UTF-8 file name as a path. open_directory
//   - a handle onto a directory (optionally creating it). final_path       -
//   the canonical path of an open handle. file_id_of       - the identity
//   (volume serial, file index) of a handle.
#ifndef TIERLOCK_SRC_PLATFORM_WIN32_UTIL_H_
#define TIERLOCK_SRC_PLATFORM_WIN32_UTIL_H_

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <filesystem>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "platform/platform.h"

namespace tierlock::internal::platform::win32 {

class HandleCloser {
 public:
  explicit HandleCloser(HANDLE h = INVALID_HANDLE_VALUE) : h_(h) {}
  ~HandleCloser() {
    if (valid()) ::CloseHandle(h_);
  }
  HandleCloser(const HandleCloser&) = delete;
  HandleCloser& operator=(const HandleCloser&) = delete;
  HANDLE get() const { return h_; }
  bool valid() const { return h_ != INVALID_HANDLE_VALUE && h_ != nullptr; }
  HANDLE release() { return std::exchange(h_, INVALID_HANDLE_VALUE); }

 private:
  HANDLE h_;
};

// Returns a Status for Win32 error `err` from `op` on `path`, with the
// message "op 'path': <system text> (Windows error N)" and tierlock's code
// for it: file/path not found -> kNotFound, access denied / write protected
// -> kPermissionDenied, out of handles/memory/disk -> kResourceExhausted,
// sharing or lock violation -> kUnavailable, not supported ->
// kUnimplemented, bad name / wrong kind of file -> kInvalidArgument.
absl::Status win32_status(DWORD err, std::string_view op,
                          const std::filesystem::path& path);

// Returns kInvalidArgument "op 'path': what".
absl::Status win32_kind_status(std::string_view op,
                               const std::filesystem::path& path,
                               std::string_view what);

// Returns `p` made absolute, lexically normalised (as Win32 itself would)
// and prefixed "\\?\" (or "\\?\UNC\"), so that no MAX_PATH limit applies
// and no further normalisation happens.
std::filesystem::path extended_path(const std::filesystem::path& p);

// Returns `p` without a leading "\\?\" ("\\?\UNC\x" becomes "\\x").
std::filesystem::path display_path(const std::filesystem::path& p);

// Returns the UTF-8 file name `name` as a path.
std::filesystem::path utf8_path(std::string_view name);

// Opens `dir` for reading its attributes only (following a reparse point,
// as POSIX follows a symlinked directory), creating it first (one level)
// if asked. kNotFound if missing; kInvalidArgument "Not a directory".
absl::StatusOr<HANDLE> open_directory(const std::filesystem::path& dir,
                                      bool create);

// Returns the canonical path of the file or directory open at `h`
// (GetFinalPathNameByHandleW, without the "\\?\" prefix).
absl::StatusOr<std::filesystem::path> final_path(
    HANDLE h, const std::filesystem::path& for_messages);

// Returns the identity of the file open at `h`, and its attributes.
absl::StatusOr<std::pair<FileId, DWORD>> file_id_of(
    HANDLE h, const std::filesystem::path& for_messages);

// Takes the lock on byte 0 of `h` with `flags` (exclusive or not), never
// waiting, after releasing any lock `h` already holds there: the
// conversion flock does on one descriptor, but not atomic. Returns
// LockFileEx's result (GetLastError() tells why on failure).
BOOL convert_lock(HANDLE h, DWORD flags);

// Names what a non-regular file (by its attributes) is, for messages;
// empty if it is a plain file.
std::string_view describe_attributes(DWORD attributes);

}  // namespace tierlock::internal::platform::win32

#endif  // TIERLOCK_SRC_PLATFORM_WIN32_UTIL_H_

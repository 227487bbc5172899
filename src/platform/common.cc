// The platform seam's platform-neutral part (src/platform/platform.h): how an
// errno becomes a status, and which lock file names are refused. One copy,
// with the Windows-only rules under _WIN32, so both platforms word their
// errors alike.
#include <cerrno>
#include <string>
#include <string_view>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/error_kind.h"
#include "base/string_util.h"
#include "platform/platform.h"

namespace tierlock::internal::platform {
namespace {

// The mapping platform.h documents at errno_status. Codes a C library lacks
// (MinGW has no EDQUOT, for one) are left to absl's default mapping.
absl::StatusCode code_for_errno(int err) {
  switch (err) {
    case ENOENT:
      return absl::StatusCode::kNotFound;
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::StatusCode::kPermissionDenied;
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case ENOSPC:
#ifdef EDQUOT
    case EDQUOT:
#endif
      return absl::StatusCode::kResourceExhausted;
    case ENOLCK:
      return absl::StatusCode::kUnavailable;
#ifdef EOPNOTSUPP
    case EOPNOTSUPP:
#if defined(ENOTSUP) && ENOTSUP != EOPNOTSUPP
    case ENOTSUP:
#endif
      return absl::StatusCode::kUnimplemented;
#endif
    case ENOTDIR:
    case EISDIR:
#ifdef ELOOP
    case ELOOP:
#endif
    case ENXIO:
    case ENAMETOOLONG:
    case EINVAL:
    case EBADF:
      return absl::StatusCode::kInvalidArgument;
    default:
      return absl::ErrnoToStatusCode(err);
  }
}

#if defined(_WIN32)
// True for the DOS device names Win32 paths map to devices in every
// directory: CON, PRN, AUX, NUL, COM1-9, LPT1-9, with or without an
// extension, in any case.
bool is_reserved_device_name(std::string_view name) {
  std::string base(name.substr(0, name.find('.')));
  while (!base.empty() && base.back() == ' ') base.pop_back();
  for (char& c : base) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  if (base == "CON" || base == "PRN" || base == "AUX" || base == "NUL") {
    return true;
  }
  return base.size() == 4 &&
         (base.starts_with("COM") || base.starts_with("LPT")) &&
         base[3] >= '1' && base[3] <= '9';
}
#endif

// Why `name` cannot be a lock file name here, or empty if it can.
std::string_view name_problem(std::string_view name) {
  if (name.empty()) return "the lock file name is empty";
  if (name == "." || name == "..") {
    return "the lock file name must name a file, not '.' or '..'";
  }
#if defined(_WIN32)
  if (name.find_first_of("/\\") != std::string_view::npos) {
    return "the lock file name must be a plain file name without '/' or '\\'";
  }
  if (name.find(':') != std::string_view::npos) {
    // "name:stream" would name an alternate data stream of another file.
    return "the lock file name must not contain ':' (a stream name)";
  }
#else
  if (name.find('/') != std::string_view::npos) {
    return "the lock file name must be a plain file name without '/'";
  }
#endif
  if (name.find('\0') != std::string_view::npos) {
    return "the lock file name contains a NUL byte";
  }
#if defined(_WIN32)
  if (name.back() == '.' || name.back() == ' ') {
    // Win32 paths drop trailing dots and spaces: other programs could not
    // name the file tierlock opens.
    return "the lock file name must not end in '.' or ' '";
  }
  if (is_reserved_device_name(name)) {
    return "the lock file name is a reserved device name (CON, NUL, COM1, "
           "...)";
  }
#endif
  return {};
}

}  // namespace

absl::Status errno_status(int err, std::string_view op,
                          const std::filesystem::path& path) {
  return absl::Status(
      code_for_errno(err),
      absl::StrCat(to_absl(op), " '", path_text(path), "': ",
                   std::error_code(err, std::generic_category()).message()));
}

std::string describe_unsafe(const std::filesystem::path& dir,
                            Ownership directory,
                            const std::filesystem::path& lock_file,
                            Ownership file, std::uint32_t caller) {
  // The bits are POSIX's (S_IWGRP 020, S_IWOTH 02, S_ISVTX 01000), spelled
  // out so this compiles where <sys/stat.h> lacks them (MinGW).
  constexpr std::uint32_t kGroupOrOtherWrite = 020 | 02;
  constexpr std::uint32_t kSticky = 01000;
  const bool shared_write = (directory.mode & kGroupOrOtherWrite) != 0;
  const bool sticky = (directory.mode & kSticky) != 0;
  const std::string mode = absl::StrFormat("%04o", directory.mode & 07777);
  const char* const who =
      (directory.mode & 02) != 0 ? "every user" : "its group";
  if (shared_write && !sticky) {
    return absl::StrCat("directory '", path_text(dir), "' (mode ", mode,
                        ", owner uid ", directory.uid, ") is writable by ", who,
                        " without the sticky bit: any of them can delete "
                        "or replace '",
                        path_text(lock_file), "' while it is held");
  }
  if (directory.uid != caller && directory.uid != 0) {
    return absl::StrCat("directory '", path_text(dir), "' (mode ", mode,
                        ") is owned by uid ", directory.uid,
                        ", neither the caller (uid ", caller,
                        ") nor root: its owner can delete or replace '",
                        path_text(lock_file), "' while it is held");
  }
  if (shared_write && file.uid != caller && file.uid != 0) {
    return absl::StrCat("'", path_text(lock_file), "' is owned by uid ",
                        file.uid, ", neither the caller (uid ", caller,
                        ") nor root, in the sticky directory '", path_text(dir),
                        "' (mode ", mode, ", writable by ", who,
                        "): its owner can delete it while it is held");
  }
  return {};
}

absl::Status validate_lock_file_name(const std::filesystem::path& dir,
                                     std::string_view name) {
  const std::string_view why = name_problem(name);
  if (why.empty()) return absl::OkStatus();
  return with_kind(absl::InvalidArgumentError(
                       absl::StrCat("open lock file '", to_absl(name), "' in '",
                                    path_text(dir), "': ", to_absl(why))),
                   ErrorKind::kBadLockFileName);
}

}  // namespace tierlock::internal::platform

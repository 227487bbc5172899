// Windows: what the system says about processes, and looking at a lock file
// without opening it for locking. Holder records are not written on Windows
// (docs/design.md, "Windows"): nothing could read them usefully without a
// lock table to say which processes hold the lock, so self_identity() has
// no boot id and HolderRecordFile never creates one.
#include <string>

#include "absl/strings/str_cat.h"
#include "base/string_util.h"
#include "platform/platform.h"
#include "platform/win32_util.h"

namespace tierlock::internal::platform {
namespace {

std::string utf8(const std::wstring& w) {
  return path_text(std::filesystem::path(w));
}

}  // namespace

ProcessInfo process_info(std::int64_t pid) {
  ProcessInfo info;
  win32::HandleCloser process(::OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION,
                                            FALSE, static_cast<DWORD>(pid)));
  if (!process.valid()) return info;
  FILETIME created, exited, kernel, user;
  if (::GetProcessTimes(process.get(), &created, &exited, &kernel, &user)) {
    // 100 ns ticks since 1601: unique per pid at a time, as a start time
    // needs to be.
    info.start_time =
        (std::uint64_t{created.dwHighDateTime} << 32) | created.dwLowDateTime;
  }
  std::wstring name(32768, L'\0');
  DWORD size = static_cast<DWORD>(name.size());
  if (::QueryFullProcessImageNameW(process.get(), 0, name.data(), &size)) {
    name.resize(size);
    info.program = utf8(name);
  }
  return info;
}

const std::string& boot_id() {
  static const std::string empty;  // Windows has no boot id to read
  return empty;
}

namespace {

std::optional<SelfIdentity> read_self_identity() {
  const std::int64_t pid = current_pid();
  ProcessInfo info = process_info(pid);
  if (!info.start_time.has_value()) return std::nullopt;
  SelfIdentity self;
  self.pid = pid;
  self.start_time = *info.start_time;
  self.program = std::move(info.program);
  wchar_t host[MAX_COMPUTERNAME_LENGTH + 1] = {};
  DWORD host_size = MAX_COMPUTERNAME_LENGTH + 1;
  if (::GetComputerNameW(host, &host_size)) {
    self.host = utf8(std::wstring(host, host_size));
  }
  return self;  // boot_id empty: no records (see the file comment)
}

}  // namespace

std::optional<SelfIdentity> self_identity() {
  // Read once: there is no fork() on Windows, so the process never changes.
  static const std::optional<SelfIdentity> self = read_self_identity();
  return self;
}

absl::StatusOr<MappedRecord> create_record(
    const std::filesystem::path& lock_file, std::string_view,
    std::string_view) {
  return absl::UnimplementedError(absl::StrCat("holder record for '",
                                               path_text(lock_file),
                                               "': not written on Windows"));
}

void unmap_record(const MappedRecord&) noexcept {}

void remove_record(const std::filesystem::path&, std::string_view,
                   const MappedRecord&) noexcept {}

std::optional<RecordFile> read_record(const std::filesystem::path&,
                                      std::string_view, std::size_t) {
  return std::nullopt;
}

// No lock table names holders on Windows, so there is no holder to verify
// or to look for.
OpenState process_has_open(std::int64_t, const FileId&) {
  return OpenState::kUnknown;
}

DescriptionScan find_description_holders(const FileId&) { return {}; }

absl::StatusOr<ProbedLockFile> probe_lock_file(const std::filesystem::path& dir,
                                               std::string_view name) {
  if (absl::Status st = validate_lock_file_name(dir, name); !st.ok()) return st;
  absl::StatusOr<HANDLE> dir_handle = win32::open_directory(dir, false);
  if (!dir_handle.ok()) return dir_handle.status();
  win32::HandleCloser dir_closer(*dir_handle);
  absl::StatusOr<std::filesystem::path> canonical =
      win32::final_path(dir_closer.get(), dir);
  if (!canonical.ok()) return canonical.status();
  ProbedLockFile out;
  out.directory = *std::move(canonical);
  const std::filesystem::path path = out.directory / win32::utf8_path(name);
  const std::filesystem::path ext = win32::extended_path(path);
  win32::HandleCloser h(::CreateFileW(
      ext.c_str(), FILE_READ_ATTRIBUTES,
      FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
      OPEN_EXISTING, FILE_FLAG_OPEN_REPARSE_POINT | FILE_FLAG_BACKUP_SEMANTICS,
      nullptr));
  if (!h.valid()) {
    const DWORD err = ::GetLastError();
    if (err == ERROR_FILE_NOT_FOUND) return out;
    return win32::win32_status(err, "stat", path);
  }
  absl::StatusOr<std::pair<FileId, DWORD>> id =
      win32::file_id_of(h.get(), path);
  if (!id.ok()) return id.status();
  if (!win32::describe_attributes(id->second).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "inspect '", path_text(path),
        "': not a regular file (refusing to look at it as a lock file)"));
  }
  out.id = id->first;
  return out;
}

}  // namespace tierlock::internal::platform

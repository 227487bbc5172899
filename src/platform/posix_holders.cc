// POSIX: holder record files (create, map, remove, read, clean up) and what
// /proc says about processes. See src/holder_record.h for the format.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "platform/platform.h"
#include "platform/posix_sys.h"
#include "string_util.h"

namespace tierlock::internal::platform {
namespace {

constexpr std::size_t kMaxCmdline = 4096;
constexpr int kMaxCleanupScan = 256;

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

int openat_retry(int dirfd, const char* path, int flags, mode_t mode = 0) {
  int fd;
  do {
    fd = ::openat(dirfd, path, flags, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// Reads at most `max` bytes of a small file (a /proc file); nullopt on error.
std::optional<std::string> read_small(const char* path, std::size_t max) {
  Fd fd(openat_retry(AT_FDCWD, path, O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) return std::nullopt;
  std::string out;
  char buf[4096];
  while (out.size() < max) {
    ssize_t n = ::read(fd.get(), buf, std::min(sizeof buf, max - out.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

// Field 22 of /proc/PID/stat. Field 2 is "(comm)", which may itself contain
// spaces and parentheses: count from the last ')'.
std::optional<std::uint64_t> parse_start_time(std::string_view stat) {
  const std::size_t close = stat.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  std::vector<absl::string_view> f = absl::StrSplit(
      to_absl(stat.substr(close + 1)), ' ', absl::SkipEmpty());
  // f[0] is field 3 (state), so field 22 is f[19].
  std::uint64_t start;
  if (f.size() < 20 || !absl::SimpleAtoi(f[19], &start)) return std::nullopt;
  return start;
}

std::string cmdline_text(std::string raw) {
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  for (char& c : raw) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\0') {
      c = ' ';
    } else if (u < 0x20 || u == 0x7f) {
      c = '?';
    }
  }
  return raw;
}

std::filesystem::path records_dir(const std::filesystem::path& lock_file) {
  std::filesystem::path dir = lock_file;
  dir += ".holders";
  return dir;
}

// "<pid>-<start>-<16 hex>": returns pid and start if `name` has that shape
// and its boot part is `boot16`.
bool parse_record_name(std::string_view name, std::string_view boot16,
                       std::int64_t* pid, std::uint64_t* start) {
  std::vector<absl::string_view> parts =
      absl::StrSplit(to_absl(name), '-');
  if (parts.size() != 3 || parts[2].size() != 16 || parts[2] != to_absl(boot16)) {
    return false;
  }
  for (char c : parts[0]) {
    if (c < '0' || c > '9') return false;
  }
  for (char c : parts[1]) {
    if (c < '0' || c > '9') return false;
  }
  return absl::SimpleAtoi(parts[0], pid) && absl::SimpleAtoi(parts[1], start) &&
         *pid > 0;
}

std::string boot16(std::string_view boot) {
  std::string out;
  for (char c : boot) {
    if (out.size() == 16) break;
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) out.push_back(c);
  }
  return out;
}

// Removes records of dead processes of this boot from the records directory
// open at `dirfd`. A record's process is dead if its pid is gone, or is
// alive with another start time (the pid was reused). Only regular files
// owned by us whose name has the record shape are removed.
void remove_dead_records(int dirfd, const SelfIdentity& self) {
  const std::string boot = boot16(self.boot_id);
  if (boot.size() != 16) return;
  int scan_fd = openat_retry(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (scan_fd < 0) return;
  DIR* d = ::fdopendir(scan_fd);
  if (d == nullptr) {
    ::close(scan_fd);
    return;
  }
  const uid_t me = ::geteuid();
  int scanned = 0;
  // readdir is safe on a DIR stream this thread alone uses.
  while (const struct dirent* e = ::readdir(d)) {  // NOLINT(concurrency-mt-unsafe)
    if (++scanned > kMaxCleanupScan) break;
    std::int64_t pid;
    std::uint64_t start;
    if (!parse_record_name(e->d_name, boot, &pid, &start)) continue;
    if (pid == self.pid) continue;
    bool dead = false;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      dead = true;
    } else {
      ProcessInfo info = process_info(pid);
      dead = info.start_time.has_value() && *info.start_time != start;
    }
    if (!dead) continue;
    struct stat st;
    if (::fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!S_ISREG(st.st_mode) || st.st_uid != me) continue;
    (void)::unlinkat(dirfd, e->d_name, 0);
  }
  ::closedir(d);
}

// Rate limit for remove_dead_records: at most once a second per process.
std::atomic<std::int64_t> g_last_cleanup_s{-1};

bool cleanup_due() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  std::int64_t last = g_last_cleanup_s.load(std::memory_order_relaxed);
  if (last >= 0 && ts.tv_sec - last < 1) return false;
  return g_last_cleanup_s.compare_exchange_strong(last, ts.tv_sec,
                                                  std::memory_order_relaxed);
}

}  // namespace

ProcessInfo process_info(std::int64_t pid) {
  ProcessInfo info;
  const std::string base = absl::StrCat("/proc/", pid);
  if (std::optional<std::string> stat =
          read_small(absl::StrCat(base, "/stat").c_str(), 4096)) {
    info.start_time = parse_start_time(*stat);
  }
  if (std::optional<std::string> cmd =
          read_small(absl::StrCat(base, "/cmdline").c_str(), kMaxCmdline)) {
    info.program = cmdline_text(*std::move(cmd));
  }
  return info;
}

const std::string& boot_id() {
  static const std::string id = [] {
    std::string s =
        read_small("/proc/sys/kernel/random/boot_id", 64).value_or("");
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }();
  return id;
}

std::optional<SelfIdentity> self_identity() {
  static std::mutex mu;
  static std::optional<SelfIdentity> cached;
  const std::int64_t pid = ::getpid();
  std::lock_guard<std::mutex> lk(mu);
  if (cached.has_value() && cached->pid == pid) return cached;
  ProcessInfo info = process_info(pid);
  if (!info.start_time.has_value()) return std::nullopt;
  SelfIdentity self;
  self.pid = pid;
  self.start_time = *info.start_time;
  self.boot_id = boot_id();
  self.program = std::move(info.program);
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) self.host = host;
  cached = self;
  return self;
}

absl::StatusOr<MappedRecord> create_record(const std::filesystem::path& lock_file,
                                           std::string_view name,
                                           std::string_view bytes) {
  const std::filesystem::path dir_path = records_dir(lock_file);
  const std::string dir_name = dir_path.filename().native();
  const std::string file_name(name);
  Fd parent(openat_retry(AT_FDCWD, lock_file.parent_path().c_str(),
                         O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (parent.get() < 0) return errno_status(errno, "open directory", lock_file.parent_path());
  Fd fd;
  Fd dir;
  // Another process may remove the (empty) records directory between our
  // mkdir and our create: try again a few times.
  for (int attempt = 0; attempt < 3 && fd.get() < 0; ++attempt) {
    if (::mkdirat(parent.get(), dir_name.c_str(), 0777) != 0 && errno != EEXIST) {
      return errno_status(errno, "create directory", dir_path);
    }
    dir.reset(openat_retry(parent.get(), dir_name.c_str(),
                           O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (dir.get() < 0) {
      if (errno == ENOENT) continue;
      return errno_status(errno, "open directory", dir_path);
    }
    fd.reset(openat_retry(dir.get(), file_name.c_str(),
                          O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC |
                              O_NONBLOCK | O_NOCTTY,
                          0644));
    if (fd.get() < 0 && errno != ENOENT) {
      return errno_status(errno, "create", dir_path / file_name);
    }
  }
  if (fd.get() < 0) return errno_status(ENOENT, "create", dir_path / file_name);
  const std::filesystem::path path = dir_path / file_name;
  struct stat st;
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::pwrite(fd.get(), bytes.data() + done, bytes.size() - done,
                         static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      absl::Status st_err = errno_status(n < 0 ? errno : ENOSPC, "write", path);
      (void)::unlinkat(dir.get(), file_name.c_str(), 0);
      return st_err;
    }
    done += static_cast<std::size_t>(n);
  }
  void* base = MAP_FAILED;
  if (::fstat(fd.get(), &st) == 0) {
    base = ::mmap(nullptr, bytes.size(), PROT_READ | PROT_WRITE, MAP_SHARED,
                  fd.get(), 0);
  }
  if (base == MAP_FAILED) {
    absl::Status err = errno_status(errno, "map", path);
    (void)::unlinkat(dir.get(), file_name.c_str(), 0);
    return err;
  }
  MappedRecord out;
  out.base = static_cast<char*>(base);
  out.size = bytes.size();
  out.id = FileId{static_cast<std::uint64_t>(st.st_dev),
                  static_cast<std::uint64_t>(st.st_ino)};
  if (cleanup_due()) {
    if (std::optional<SelfIdentity> self = self_identity()) {
      remove_dead_records(dir.get(), *self);
    }
  }
  return out;
}

void unmap_record(const MappedRecord& record) noexcept {
  if (record.base != nullptr) ::munmap(record.base, record.size);
}

void remove_record(const std::filesystem::path& lock_file, std::string_view name,
                   const MappedRecord& record) noexcept {
  unmap_record(record);
  const std::filesystem::path dir_path = records_dir(lock_file);
  // O_NOFOLLOW: a records directory swapped for a symlink is not entered.
  Fd dir(openat_retry(AT_FDCWD, dir_path.c_str(),
                      O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (dir.get() < 0) return;
  const std::string file_name(name);
  struct stat st;
  // Only our own file: the name alone could have been replaced.
  if (::fstatat(dir.get(), file_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
      S_ISREG(st.st_mode) && st.st_uid == ::geteuid() &&
      static_cast<std::uint64_t>(st.st_dev) == record.id.dev &&
      static_cast<std::uint64_t>(st.st_ino) == record.id.ino) {
    (void)::unlinkat(dir.get(), file_name.c_str(), 0);
  }
  // The records directory stays: creating and removing a directory on every
  // run of a short-lived process (the tierlock command) cost it ~10 % of
  // its run time on ext4 (inode allocation), for one directory entry.
}

std::optional<std::string> read_record(const std::filesystem::path& lock_file,
                                       std::string_view name, std::size_t size) {
  const std::filesystem::path dir_path = records_dir(lock_file);
  Fd dir(openat_retry(AT_FDCWD, dir_path.c_str(),
                      O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (dir.get() < 0) return std::nullopt;
  const std::string file_name(name);
  struct stat st;
  // Look first, so a device node or FIFO planted there is never opened.
  if (::fstatat(dir.get(), file_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
      !S_ISREG(st.st_mode)) {
    return std::nullopt;
  }
  Fd fd(openat_retry(dir.get(), file_name.c_str(),
                     O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
      st.st_size != static_cast<off_t>(size)) {
    return std::nullopt;
  }
  auto read_once = [&]() -> std::optional<std::string> {
    std::string out(size, '\0');
    std::size_t done = 0;
    while (done < size) {
      ssize_t n = ::pread(fd.get(), out.data() + done, size - done,
                          static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      done += static_cast<std::size_t>(n);
    }
    return out;
  };
  std::optional<std::string> last;
  for (int i = 0; i < 4; ++i) {
    std::optional<std::string> a = read_once();
    if (!a.has_value()) return std::nullopt;
    if (last.has_value() && *last == *a) return a;
    last = std::move(a);
  }
  return last;  // still changing: the parser decides what it can use
}

absl::StatusOr<ProbedLockFile> probe_lock_file(const std::filesystem::path& dir,
                                               std::string_view name) {
  if (absl::Status st = validate_lock_file_name(dir, name); !st.ok()) return st;
  Fd dirfd(openat_retry(AT_FDCWD, dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (dirfd.get() < 0) {
    if (errno == ENOTDIR) {
      return absl::InvalidArgumentError(
          absl::StrCat("open directory '", dir.native(), "': Not a directory"));
    }
    return errno_status(errno, "open directory", dir);
  }
  ProbedLockFile out;
  std::string link = absl::StrCat("/proc/self/fd/", dirfd.get());
  char buf[4097];
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  if (n > 0 && buf[0] == '/') {
    out.directory = std::string(buf, static_cast<std::size_t>(n));
  } else {
    absl::StatusOr<std::filesystem::path> canonical = canonical_directory(dir);
    if (!canonical.ok()) return canonical.status();
    out.directory = *std::move(canonical);
  }
  const std::string name_str(name);
  struct stat st;
  if (::fstatat(dirfd.get(), name_str.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return out;
    return errno_status(errno, "stat", out.directory / name_str);
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "inspect '", (out.directory / name_str).native(),
        "': not a regular file (refusing to look at it as a lock file)"));
  }
  out.id = FileId{static_cast<std::uint64_t>(st.st_dev),
                  static_cast<std::uint64_t>(st.st_ino)};
  return out;
}

}  // namespace tierlock::internal::platform

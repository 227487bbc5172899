// POSIX: holder record files (create, map, remove, read, clean up) and what
// /proc says about processes. See src/holders/holder_record.h for the format.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/string_util.h"
#include "platform/platform.h"
#include "platform/posix_sys.h"

namespace tierlock::internal::platform {
namespace {

constexpr std::size_t kMaxCmdline = 4096;
constexpr int kMaxCleanupScan = 256;
// Bounds of find_description_holders: it runs only when the kernel's pid for
// a lock is not a live holder, on the status and timeout paths. The time
// budget is for a loaded machine: 200 ms was seen to run out with ~140
// processes on 2 busy cores, and the scan runs only in the rare case of a
// lock whose taker has exited.
constexpr int kMaxScanProcesses = 65536;
constexpr std::chrono::milliseconds kScanBudget{1000};

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

// Reads at most `max` bytes of a small file (a /proc file) at `path`,
// relative to `dirfd`; nullopt on error.
std::optional<std::string> read_small_at(int dirfd, const char* path,
                                         std::size_t max) {
  Fd fd(openat_retry(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY));
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

std::optional<std::string> read_small(const char* path, std::size_t max) {
  return read_small_at(AT_FDCWD, path, max);
}

// Field 22 of /proc/PID/stat. Field 2 is "(comm)", which may itself contain
// spaces and parentheses: count from the last ')'.
std::optional<std::uint64_t> parse_start_time(std::string_view stat) {
  const std::size_t close = stat.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  std::vector<absl::string_view> f =
      absl::StrSplit(to_absl(stat.substr(close + 1)), ' ', absl::SkipEmpty());
  // f[0] is field 3 (state), so field 22 is f[19].
  std::uint64_t start;
  if (f.size() < 20 || !absl::SimpleAtoi(f[19], &start)) return std::nullopt;
  return start;
}

// The exact bytes, NUL separators as spaces: whoever prints it escapes it
// (tierlock/text.h), and machine-readable output can stay exact.
std::string cmdline_text(std::string raw) {
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  std::replace(raw.begin(), raw.end(), '\0', ' ');
  return raw;
}

// The 4th field of the "Uid:" line of /proc/PID/status (real, effective,
// saved, filesystem): the uid that owns the files the process creates.
std::optional<std::uint32_t> parse_fs_uid(std::string_view status) {
  for (absl::string_view line : absl::StrSplit(to_absl(status), '\n')) {
    if (!absl::ConsumePrefix(&line, "Uid:")) continue;
    std::vector<absl::string_view> f =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    std::uint32_t uid;
    if (f.size() != 4 || !absl::SimpleAtoi(f[3], &uid)) return std::nullopt;
    return uid;
  }
  return std::nullopt;
}

// "MM:mm:ino" as /proc/locks and fdinfo "lock:" lines name a file.
std::string lock_line_id(const FileId& id) {
  const dev_t dev = static_cast<dev_t>(id.dev);
  return absl::StrCat(absl::Hex(major(dev), absl::kZeroPad2), ":",
                      absl::Hex(minor(dev), absl::kZeroPad2), ":", id.ino);
}

// Whether the descriptor `name` in the /proc/PID/fd directory open at
// `fd_dir` refers to `id`. statx follows the magic link to the open file;
// AT_STATX_DONT_SYNC keeps network and FUSE filesystems from being asked
// (a hung mount must not hang a scan); dev and ino come from the inode.
bool descriptor_is(int fd_dir, const char* name, const FileId& id) {
  struct statx stx;
  if (::statx(fd_dir, name, AT_STATX_DONT_SYNC, STATX_INO, &stx) != 0) {
    return false;
  }
  return stx.stx_ino == id.ino &&
         static_cast<std::uint64_t>(
             ::makedev(stx.stx_dev_major, stx.stx_dev_minor)) == id.dev;
}

bool all_digits(const char* s) {
  if (*s == '\0') return false;
  for (; *s != '\0'; ++s) {
    if (*s < '0' || *s > '9') return false;
  }
  return true;
}

// Calls `fn(name)` for each descriptor of the process whose /proc/PID
// directory is open at `pid_dir`, until it returns false. Returns false
// with errno set if the descriptor list cannot be read (EACCES: another
// user's process; ENOENT/ESRCH: it exited).
template <typename Fn>
bool for_each_descriptor(int pid_dir, int* fd_dir_out, Fn&& fn) {
  const int fd_dir =
      openat_retry(pid_dir, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_dir < 0) return false;
  DIR* d = ::fdopendir(fd_dir);
  if (d == nullptr) {
    const int err = errno;
    ::close(fd_dir);
    errno = err;
    return false;
  }
  *fd_dir_out = fd_dir;
  // readdir is safe on a DIR stream this thread alone uses.
  while (const struct dirent* e =
             ::readdir(d)) {  // NOLINT(concurrency-mt-unsafe)
    if (!all_digits(e->d_name)) continue;
    if (!fn(e->d_name)) break;
  }
  ::closedir(d);
  return true;
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
  std::vector<absl::string_view> parts = absl::StrSplit(to_absl(name), '-');
  if (parts.size() != 3 || parts[2].size() != 16 ||
      parts[2] != to_absl(boot16)) {
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
  while (const struct dirent* e =
             ::readdir(d)) {  // NOLINT(concurrency-mt-unsafe)
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

// The mode of a new records directory in a directory of mode `parent`:
// 0755, and where the lock's directory lets group or others create files
// (a shared directory), the same write bits and the sticky bit, so every
// user that can lock can add its own record and none can remove or replace
// another's (only the records directory's owner still can).
mode_t records_dir_mode(mode_t parent) {
  const mode_t write = parent & (S_IWGRP | S_IWOTH);
  return 0755 | write | (write != 0 ? S_ISVTX : 0);
}

// A records directory we may write our record into: not ours or root's
// only if sticky, since otherwise its owner (or anyone, if it is writable
// by others) could unlink our record and put another in its place. (Readers
// would not believe the replacement, which is owned by someone else; we
// just do not offer the chance.)
absl::Status check_records_dir(const struct stat& st, uid_t me,
                               const std::filesystem::path& path) {
  if (!S_ISDIR(st.st_mode)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "create holder record in '", path_text(path), "': not a directory"));
  }
  const bool owned = st.st_uid == me || st.st_uid == 0;
  if (!owned && (st.st_mode & S_ISVTX) == 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("create holder record in '", path_text(path),
                     "': owned by uid ", st.st_uid,
                     " and not sticky (another user could replace records; "
                     "no record written)"));
  }
  return absl::OkStatus();
}

// The records directory sits beside the lock file, in a directory users
// often keep in git: a `.gitignore` of `*` inside it (which ignores itself
// too) keeps `git status` showing only the lock file, as with flock(1). Only
// in a directory we own, only if absent (never rewritten: O_EXCL), never
// through a symlink. Best effort: records work without it. Readers and the
// cleanup look only at names shaped like records, so it is never read as
// one nor removed.
void add_ignore_rule(int dirfd) {
  static constexpr std::string_view kRule =
      "# tierlock holder records: nothing here belongs in version control\n*\n";
  Fd fd(openat_retry(dirfd, ".gitignore",
                     O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC |
                         O_NONBLOCK | O_NOCTTY,
                     0644));
  if (fd.get() < 0) return;
  (void)!::write(fd.get(), kRule.data(), kRule.size());
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
  if (pid <= 0) return info;
  // One directory descriptor for all reads: it stays bound to this process,
  // so if the pid is reused meanwhile the reads fail instead of mixing two
  // processes (a start time from one, a uid from another).
  Fd dir(openat_retry(AT_FDCWD, absl::StrCat("/proc/", pid).c_str(),
                      O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) return info;
  if (std::optional<std::string> stat =
          read_small_at(dir.get(), "stat", 4096)) {
    info.start_time = parse_start_time(*stat);
  }
  if (std::optional<std::string> cmd =
          read_small_at(dir.get(), "cmdline", kMaxCmdline)) {
    info.program = cmdline_text(*std::move(cmd));
  }
  if (std::optional<std::string> status =
          read_small_at(dir.get(), "status", 16384)) {
    info.fs_uid = parse_fs_uid(*status);
  }
  return info;
}

OpenState process_has_open(std::int64_t pid, const FileId& id) {
  if (pid <= 0) return OpenState::kGone;
  Fd dir(openat_retry(AT_FDCWD, absl::StrCat("/proc/", pid).c_str(),
                      O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) {
    return errno == ENOENT ? OpenState::kGone : OpenState::kUnknown;
  }
  bool found = false;
  int fd_dir = -1;
  if (!for_each_descriptor(dir.get(), &fd_dir, [&](const char* name) {
        found = descriptor_is(fd_dir, name, id);
        return !found;
      })) {
    return errno == ENOENT || errno == ESRCH ? OpenState::kGone
                                             : OpenState::kUnknown;
  }
  return found ? OpenState::kOpen : OpenState::kNotOpen;
}

DescriptionScan find_description_holders(const FileId& id) {
  DescriptionScan out;
  const auto deadline = std::chrono::steady_clock::now() + kScanBudget;
  const std::string want = lock_line_id(id);
  Fd proc_fd(
      openat_retry(AT_FDCWD, "/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (proc_fd.get() < 0) {
    out.truncated = true;
    return out;
  }
  DIR* proc = ::fdopendir(proc_fd.get());
  if (proc == nullptr) {
    out.truncated = true;
    return out;
  }
  const int proc_dir = proc_fd.release();  // owned by `proc` now
  int processes = 0;
  while (const struct dirent* e =
             ::readdir(proc)) {  // NOLINT(concurrency-mt-unsafe)
    if (!all_digits(e->d_name)) continue;
    if (++processes > kMaxScanProcesses ||
        ((processes & 15) == 0 &&
         std::chrono::steady_clock::now() > deadline)) {
      out.truncated = true;
      break;
    }
    Fd pid_dir(
        openat_retry(proc_dir, e->d_name, O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (pid_dir.get() < 0) continue;  // exited
    std::int64_t pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
    int fd_dir = -1;
    const bool listed =
        for_each_descriptor(pid_dir.get(), &fd_dir, [&](const char* name) {
          if (!descriptor_is(fd_dir, name, id)) return true;
          // fdinfo lists the locks of this open file description only:
          // "lock:\t1: FLOCK  ADVISORY  WRITE 7380 fe:00:10953061 0 EOF".
          std::optional<std::string> info = read_small_at(
              pid_dir.get(), absl::StrCat("fdinfo/", name).c_str(), 16384);
          if (!info.has_value()) return true;
          for (absl::string_view line : absl::StrSplit(*info, '\n')) {
            if (!absl::ConsumePrefix(&line, "lock:")) continue;
            std::vector<absl::string_view> f =
                absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
            // ordinal, type, advisory, access, pid, dev:ino, start, end
            if (f.size() < 6 || f[1] != "FLOCK" || f[5] != want) continue;
            DescriptionHolder h;
            h.pid = pid;
            if (!absl::SimpleAtoi(f[4], &h.kernel_pid)) continue;
            h.mode = f[3] == "WRITE" ? Mode::kExclusive : Mode::kShared;
            const bool seen = std::any_of(
                out.holders.begin(), out.holders.end(),
                [&](const DescriptionHolder& o) {
                  return o.pid == h.pid && o.kernel_pid == h.kernel_pid &&
                         o.mode == h.mode;
                });
            if (seen) continue;
            if (std::optional<std::string> stat =
                    read_small_at(pid_dir.get(), "stat", 4096)) {
              h.start_time = parse_start_time(*stat).value_or(0);
            }
            out.holders.push_back(h);
          }
          return true;
        });
    if (!listed && errno == EACCES) ++out.unreadable;
  }
  ::closedir(proc);
  std::stable_sort(out.holders.begin(), out.holders.end(),
                   [](const DescriptionHolder& a, const DescriptionHolder& b) {
                     return a.start_time < b.start_time;
                   });
  return out;
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

absl::StatusOr<MappedRecord> create_record(
    const std::filesystem::path& lock_file, std::string_view name,
    std::string_view bytes) {
  const std::filesystem::path dir_path = records_dir(lock_file);
  const std::string dir_name = dir_path.filename().native();
  const std::string file_name(name);
  Fd parent(openat_retry(AT_FDCWD, lock_file.parent_path().c_str(),
                         O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (parent.get() < 0)
    return errno_status(errno, "open directory", lock_file.parent_path());
  struct stat parent_st;
  if (::fstat(parent.get(), &parent_st) != 0) {
    return errno_status(errno, "stat", lock_file.parent_path());
  }
  const mode_t dir_mode = records_dir_mode(parent_st.st_mode);
  const uid_t me = ::geteuid();
  Fd fd;
  Fd dir;
  // Another process may remove the (empty) records directory between our
  // mkdir and our create: try again a few times.
  for (int attempt = 0; attempt < 3 && fd.get() < 0; ++attempt) {
    bool created = true;
    if (::mkdirat(parent.get(), dir_name.c_str(), dir_mode) != 0) {
      if (errno != EEXIST)
        return errno_status(errno, "create directory", dir_path);
      created = false;
    }
    dir.reset(openat_retry(parent.get(), dir_name.c_str(),
                           O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (dir.get() < 0) {
      if (errno == ENOENT) continue;
      if (errno == ELOOP || errno == ENOTDIR) {
        return absl::PermissionDeniedError(absl::StrCat(
            "create holder record in '", path_text(dir_path),
            "': not a directory (a symlink or a file; no record written)"));
      }
      return errno_status(errno, "open directory", dir_path);
    }
    struct stat dir_st;
    if (::fstat(dir.get(), &dir_st) != 0)
      return errno_status(errno, "stat", dir_path);
    if (created && dir_st.st_uid == me &&
        (dir_st.st_mode & 07777) != dir_mode) {
      // The umask narrowed it: in a shared directory every user that can
      // lock must be able to add its record.
      (void)::fchmod(dir.get(), dir_mode);
    } else if (dir_st.st_uid == me && (dir_st.st_mode & 022) != 0 &&
               (dir_st.st_mode & S_ISVTX) == 0) {
      // Ours, shared, not sticky (made by an older tierlock): others could
      // remove each other's records. Make it sticky.
      (void)::fchmod(dir.get(), (dir_st.st_mode & 07777) | S_ISVTX);
    }
    if (absl::Status trusted = check_records_dir(dir_st, me, dir_path);
        !trusted.ok()) {
      return trusted;
    }
    if (dir_st.st_uid == me) add_ignore_rule(dir.get());
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
  // Readers believe a record only if its owner is the process's uid and no
  // one else can write it. O_CREAT's mode (0644) already bounds what a
  // default ACL of the directory grants (the ACL mask); check, not assume.
  if (::fstat(fd.get(), &st) != 0 || st.st_uid != me ||
      (st.st_mode & 022) != 0) {
    (void)::unlinkat(dir.get(), file_name.c_str(), 0);
    return absl::PermissionDeniedError(absl::StrCat(
        "create holder record '", path_text(path),
        "': not owned by us or writable by others (no record written)"));
  }
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

void remove_record(const std::filesystem::path& lock_file,
                   std::string_view name, const MappedRecord& record) noexcept {
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

std::optional<RecordFile> read_record(const std::filesystem::path& lock_file,
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
  Fd fd(
      openat_retry(dir.get(), file_name.c_str(),
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
  RecordFile out;
  // Of the descriptor read, not of the name: the file cannot be swapped.
  out.owner_uid = static_cast<std::uint32_t>(st.st_uid);
  out.mode = static_cast<std::uint32_t>(st.st_mode & 07777);
  std::optional<std::string> last;
  for (int i = 0; i < 4; ++i) {
    std::optional<std::string> a = read_once();
    if (!a.has_value()) return std::nullopt;
    if (last.has_value() && *last == *a) break;
    last = std::move(a);
  }
  // Still changing after four reads: the parser decides what it can use.
  out.bytes = *std::move(last);
  return out;
}

absl::StatusOr<ProbedLockFile> probe_lock_file(const std::filesystem::path& dir,
                                               std::string_view name) {
  if (absl::Status st = validate_lock_file_name(dir, name); !st.ok()) return st;
  Fd dirfd(
      openat_retry(AT_FDCWD, dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
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

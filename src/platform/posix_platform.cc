// POSIX implementation of the platform seam (src/platform/platform.h).
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "base/error_kind.h"
#include "base/string_util.h"
#include "platform/platform.h"
#include "platform/posix_sys.h"

namespace tierlock::internal::platform {
namespace {

absl::Status kind_status(std::string_view op, const std::filesystem::path& path,
                         std::string_view what,
                         ErrorKind kind = ErrorKind::kNotARegularFile) {
  return with_kind(absl::InvalidArgumentError(absl::StrCat(
                       to_absl(op), " '", path.native(), "': ", to_absl(what))),
                   kind);
}

// Names what a non-regular file is, for messages.
std::string_view describe_non_regular(mode_t mode) {
  if (S_ISLNK(mode)) return "is a symbolic link (refusing to follow it)";
  if (S_ISDIR(mode)) return "is a directory, not a lock file";
  if (S_ISFIFO(mode)) return "is a FIFO, not a regular file";
  if (S_ISSOCK(mode)) return "is a socket, not a regular file";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "is a device, not a regular file";
  return "is not a regular file";
}

FileId file_id(const struct stat& st) {
  return FileId{static_cast<std::uint64_t>(st.st_dev),
                static_cast<std::uint64_t>(st.st_ino)};
}

// Closes a descriptor when it goes out of scope unless released.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) posix_sys().close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

int openat_retry(int dirfd, const char* path, int flags, mode_t mode) {
  int fd;
  do {
    fd = posix_sys().openat(dirfd, path, flags, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// Opens `dir` as a search-only handle (O_PATH: no read permission needed),
// creating it first if asked.
absl::StatusOr<int> open_directory(const std::filesystem::path& dir,
                                   bool create) {
  constexpr int kFlags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  int fd = openat_retry(AT_FDCWD, dir.c_str(), kFlags, 0);
  if (fd < 0 && errno == ENOENT && create) {
    if (posix_sys().mkdirat(AT_FDCWD, dir.c_str(), 0777) != 0 &&
        errno != EEXIST) {
      return errno_status(errno, "create directory", dir);
    }
    fd = openat_retry(AT_FDCWD, dir.c_str(), kFlags, 0);
  }
  if (fd < 0) {
    int err = errno;
    if (err == ENOTDIR) {
      return kind_status("open directory", dir, "Not a directory",
                         ErrorKind::kNotADirectory);
    }
    return errno_status(err, "open directory", dir);
  }
  return fd;
}

// The canonical path of the directory open at `dirfd`: what /proc says the
// descriptor refers to (one readlink, and exactly the directory we opened);
// realpath(dir) where /proc is not mounted.
absl::StatusOr<std::filesystem::path> directory_path(
    int dirfd, const std::filesystem::path& dir) {
  std::string link = absl::StrCat("/proc/self/fd/", dirfd);
  char buf[PATH_MAX + 1];
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  if (n > 0 && buf[0] == '/') {
    return std::filesystem::path(std::string(buf, static_cast<size_t>(n)));
  }
  return canonical_directory(dir);
}

}  // namespace

absl::StatusOr<FileId> stat_lock_file(const std::filesystem::path& dir,
                                      std::string_view name) {
  std::filesystem::path path = dir / name;
  struct stat st;
  if (posix_sys().fstatat(AT_FDCWD, path.c_str(), &st, AT_SYMLINK_NOFOLLOW) !=
      0) {
    return errno_status(errno, "stat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    return kind_status("open", path, describe_non_regular(st.st_mode));
  }
  return file_id(st);
}

absl::StatusOr<OpenedLockFile> open_lock_file(const std::filesystem::path& dir,
                                              std::string_view name,
                                              bool create_directory) {
  if (absl::Status st = validate_lock_file_name(dir, name); !st.ok()) {
    return st;
  }
  absl::StatusOr<int> dirfd_or = open_directory(dir, create_directory);
  if (!dirfd_or.ok()) return dirfd_or.status();
  FdCloser dirfd(*dirfd_or);

  absl::StatusOr<std::filesystem::path> canonical =
      directory_path(dirfd.get(), dir);
  if (!canonical.ok()) return canonical.status();
  OpenedLockFile out;
  out.directory = *std::move(canonical);
  out.lock_file = out.directory / name;
  const std::string name_str(name);

  // Look before opening, so that an existing device node, FIFO or socket is
  // never opened at all. The fstat after opening is what makes it race-free.
  struct stat st;
  if (posix_sys().fstatat(dirfd.get(), name_str.c_str(), &st,
                          AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISREG(st.st_mode)) {
      return kind_status("open", out.lock_file,
                         describe_non_regular(st.st_mode));
    }
  } else if (errno != ENOENT) {
    return errno_status(errno, "stat", out.lock_file);
  }

  // O_NONBLOCK: a FIFO swapped in after the check cannot block the open.
  // O_NOFOLLOW: never follow a symlink at the last component. No O_TRUNC, ever.
  constexpr int kBase = O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
  int fd = openat_retry(dirfd.get(), name_str.c_str(), O_RDWR | O_CREAT | kBase,
                        0666);
  if (fd < 0 && (errno == EACCES || errno == EPERM || errno == EROFS)) {
    // A read-only or sticky directory, a read-only file or filesystem: an
    // existing lock file is still lockable (flock needs no write access).
    const int create_err = errno;
    fd = openat_retry(dirfd.get(), name_str.c_str(), O_RDWR | kBase, 0);
    if (fd < 0 && (errno == EACCES || errno == EPERM || errno == EROFS)) {
      fd = openat_retry(dirfd.get(), name_str.c_str(), O_RDONLY | kBase, 0);
      out.read_only = fd >= 0;
    }
    if (fd < 0 && errno == ENOENT) {
      return errno_status(create_err, "create", out.lock_file);
    }
  } else if (fd < 0 && errno == ENOENT) {
    // The directory is open, so ENOENT from O_CREAT means either that it was
    // removed meanwhile (not found, truly) or that its filesystem does not
    // create files on request (/proc, sysfs): not a missing directory.
    struct stat dir_st;
    if (posix_sys().fstat(dirfd.get(), &dir_st) == 0 && dir_st.st_nlink > 0) {
      return absl::UnimplementedError(absl::StrCat(
          "create lock file '", out.lock_file.native(),
          "': No such file or directory (the directory exists, but its "
          "filesystem does not allow creating the file)"));
    }
    return errno_status(ENOENT, "create lock file", out.lock_file);
  }
  if (fd < 0) {
    const int err = errno;
    if (err == ELOOP) {
      return kind_status("open", out.lock_file,
                         "is a symbolic link (refusing to follow it)");
    }
    if (err == EISDIR) {
      return kind_status("open", out.lock_file,
                         "is a directory, not a lock file");
    }
    if (err == ENXIO) {
      return kind_status("open", out.lock_file, "is not a regular file");
    }
    return errno_status(err, "open", out.lock_file);
  }
  FdCloser file(fd);
  if (posix_sys().fstat(fd, &st) != 0) {
    return errno_status(errno, "fstat", out.lock_file);
  }
  if (!S_ISREG(st.st_mode)) {
    return kind_status("open", out.lock_file, describe_non_regular(st.st_mode));
  }
  out.id = file_id(st);
  // Who else could unlink it: the directory's owner and mode against the
  // file's owner. One more fstat, of the directory we hold open.
  struct stat dir_st;
  if (posix_sys().fstat(dirfd.get(), &dir_st) != 0) {
    return errno_status(errno, "stat directory", out.directory);
  }
  out.directory_id = file_id(dir_st);
  out.unsafe_reason = describe_unsafe(
      out.directory, Ownership{dir_st.st_uid, dir_st.st_mode}, out.lock_file,
      Ownership{st.st_uid, st.st_mode}, ::geteuid());
  out.handle = file.release();
  return out;
}

std::string unsafe_reason_of(const std::filesystem::path& dir,
                             const std::filesystem::path& lock_file) {
  struct stat dir_st, st;
  if (posix_sys().fstatat(AT_FDCWD, dir.c_str(), &dir_st, 0) != 0 ||
      posix_sys().fstatat(AT_FDCWD, lock_file.c_str(), &st,
                          AT_SYMLINK_NOFOLLOW) != 0) {
    return {};
  }
  return describe_unsafe(dir, Ownership{dir_st.st_uid, dir_st.st_mode},
                         lock_file, Ownership{st.st_uid, st.st_mode},
                         ::geteuid());
}

absl::StatusOr<PathCheck> check_path(NativeHandle handle,
                                     const std::filesystem::path& lock_file,
                                     const FileId& id,
                                     const FileId& directory_id) {
  struct stat st;
  if (posix_sys().fstatat(AT_FDCWD, lock_file.c_str(), &st,
                          AT_SYMLINK_NOFOLLOW) == 0) {
    if (file_id(st) == id) [[likely]]
      return PathCheck::kNamesIt;
  } else if (errno != ENOENT && errno != ENOTDIR) {
    return errno_status(errno, "stat", lock_file);
  }
  // Not our file at the path. Is the directory at the path still ours? If
  // not (renamed, replaced by a symlink), the lock is where the directory
  // went, as long as the file still has a name there.
  const std::filesystem::path dir = lock_file.parent_path();
  struct stat dir_st;
  if (posix_sys().fstatat(AT_FDCWD, dir.c_str(), &dir_st,
                          AT_SYMLINK_NOFOLLOW) == 0 &&
      file_id(dir_st) == directory_id) {
    return PathCheck::kReplaced;
  }
  if (posix_sys().fstat(handle, &st) != 0) {
    return errno_status(errno, "fstat", lock_file);
  }
  return st.st_nlink > 0 ? PathCheck::kNamesIt : PathCheck::kGone;
}

absl::StatusOr<NativeHandle> reopen(NativeHandle handle,
                                    const std::filesystem::path& lock_file) {
  struct stat want;
  if (posix_sys().fstat(handle, &want) != 0) {
    return errno_status(errno, "fstat", lock_file);
  }
  // /proc/self/fd/N reaches the very inode we have open even if the path
  // has since been replaced; it is our own magic link, so following it is
  // safe (O_NOFOLLOW would refuse it).
  constexpr int kBase = O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
  std::string self = absl::StrCat("/proc/self/fd/", handle);
  int fd = openat_retry(AT_FDCWD, self.c_str(), O_RDWR | kBase, 0);
  if (fd < 0 && (errno == EACCES || errno == EROFS)) {
    fd = openat_retry(AT_FDCWD, self.c_str(), O_RDONLY | kBase, 0);
  }
  if (fd < 0 && errno == ENOENT) {
    // No /proc: fall back to the path, and insist it is still our inode.
    fd = openat_retry(AT_FDCWD, lock_file.c_str(), O_RDWR | O_NOFOLLOW | kBase,
                      0);
    if (fd < 0 && (errno == EACCES || errno == EROFS)) {
      fd = openat_retry(AT_FDCWD, lock_file.c_str(),
                        O_RDONLY | O_NOFOLLOW | kBase, 0);
    }
  }
  if (fd < 0) return errno_status(errno, "reopen", lock_file);
  FdCloser file(fd);
  struct stat got;
  if (posix_sys().fstat(fd, &got) != 0) {
    return errno_status(errno, "fstat", lock_file);
  }
  if (!S_ISREG(got.st_mode) || file_id(got) != file_id(want)) {
    return absl::FailedPreconditionError(
        absl::StrCat("reopen '", lock_file.native(),
                     "': the lock file was replaced since it was opened"));
  }
  return file.release();
}

absl::StatusOr<std::filesystem::path> canonical_directory(
    const std::filesystem::path& dir) {
  char* resolved = ::realpath(dir.c_str(), nullptr);
  if (resolved == nullptr) return errno_status(errno, "resolve", dir);
  std::filesystem::path out(resolved);
  ::free(resolved);
  return out;
}

namespace {
int flock_retry(int fd, int op) {
  int rc;
  do {
    rc = posix_sys().flock(fd, op);
  } while (rc != 0 && errno == EINTR);
  return rc;
}
int flock_op(Mode mode) { return mode == Mode::kExclusive ? LOCK_EX : LOCK_SH; }
}  // namespace

absl::Status lock(NativeHandle handle, Mode mode,
                  const std::filesystem::path& lock_file) {
  if (flock_retry(handle, flock_op(mode)) != 0) {
    return errno_status(errno, "flock", lock_file);
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> try_lock(NativeHandle handle, Mode mode,
                              const std::filesystem::path& lock_file) {
  if (flock_retry(handle, flock_op(mode) | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return false;
    return errno_status(errno, "flock", lock_file);
  }
  return true;
}

absl::Status unlock(NativeHandle handle,
                    const std::filesystem::path& lock_file) {
  if (flock_retry(handle, LOCK_UN) != 0) {
    return errno_status(errno, "unlock", lock_file);
  }
  return absl::OkStatus();
}

void close_handle(NativeHandle handle) {
  if (handle >= 0) posix_sys().close(handle);
}

void register_fork_handlers(void (*prepare)(), void (*parent)(),
                            void (*child)()) {
  ::pthread_atfork(prepare, parent, child);
}

}  // namespace tierlock::internal::platform

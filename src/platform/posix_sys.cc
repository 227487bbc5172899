#include "platform/posix_sys.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace tierlock::internal {
namespace {

int real_openat(int dirfd, const char* path, int flags, mode_t mode) {
  return ::openat(dirfd, path, flags, mode);
}
int real_fstatat(int dirfd, const char* path, struct stat* st, int flags) {
  return ::fstatat(dirfd, path, st, flags);
}
int real_fstat(int fd, struct stat* st) { return ::fstat(fd, st); }
int real_flock(int fd, int op) { return ::flock(fd, op); }
int real_close(int fd) { return ::close(fd); }
int real_mkdirat(int dirfd, const char* path, mode_t mode) {
  return ::mkdirat(dirfd, path, mode);
}

constexpr PosixSys kReal = {real_openat, real_fstatat, real_fstat,
                            real_flock,  real_close,   real_mkdirat};

}  // namespace

const PosixSys& real_posix_sys() { return kReal; }

constinit PosixSys g_posix_sys = kReal;

}  // namespace tierlock::internal

// src/platform/posix_sys.h
//
// The syscall seam of the POSIX platform layer: every syscall the layer makes
// goes through this table, so tests can inject faults (EINTR, EACCES, ENOLCK,
// EMFILE, ...) into paths a real system rarely reaches. Production code never
// changes it.
#ifndef TIERLOCK_SRC_PLATFORM_POSIX_SYS_H_
#define TIERLOCK_SRC_PLATFORM_POSIX_SYS_H_

#include <sys/stat.h>
#include <sys/types.h>

namespace tierlock::internal {

struct PosixSys {
  int (*openat)(int dirfd, const char* path, int flags, mode_t mode);
  int (*fstatat)(int dirfd, const char* path, struct stat* st, int flags);
  int (*fstat)(int fd, struct stat* st);
  int (*flock)(int fd, int op);
  int (*close)(int fd);
  int (*mkdirat)(int dirfd, const char* path, mode_t mode);
};

// Returns the table in use. Tests may assign members and must restore them
// (see ScopedSysOverride in tests); not synchronised: change it only while no
// other thread uses tierlock.
extern PosixSys g_posix_sys;
inline PosixSys& posix_sys() { return g_posix_sys; }

// The real syscalls.
const PosixSys& real_posix_sys();

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_PLATFORM_POSIX_SYS_H_

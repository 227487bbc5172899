// tests/support/sys_counter.h
//
// Counts the syscalls tierlock makes through its seam
// (src/platform/posix_sys.h), to prove that a path makes none, or makes exactly
// one non-blocking try:
//   SyscallCounter - installs counting wrappers that forward to the table in
//                    use; restores the table on destruction.
// Header-only. One SyscallCounter at a time; install it while no other thread
// is inside tierlock (see ScopedSysOverride).
#ifndef TIERLOCK_TESTS_SUPPORT_SYS_COUNTER_H_
#define TIERLOCK_TESTS_SUPPORT_SYS_COUNTER_H_

#include <sys/file.h>
#include <sys/stat.h>

#include <atomic>

#include "support/internal.h"

namespace tierlock::testing {

class SyscallCounter {
 public:
  SyscallCounter() {
    inner_ = override_.sys();
    flock_ = 0;
    blocking_flock_ = 0;
    openat_ = 0;
    fstatat_ = 0;
    fstat_ = 0;
    close_ = 0;
    mkdirat_ = 0;
    override_.sys().flock = &counting_flock;
    override_.sys().openat = &counting_openat;
    override_.sys().fstatat = &counting_fstatat;
    override_.sys().fstat = &counting_fstat;
    override_.sys().close = &counting_close;
    override_.sys().mkdirat = &counting_mkdirat;
  }
  SyscallCounter(const SyscallCounter&) = delete;
  SyscallCounter& operator=(const SyscallCounter&) = delete;

  int flock_calls() const { return flock_.load(); }
  // flock calls without LOCK_NB (LOCK_UN excluded): the ones that may block.
  int blocking_flock_calls() const { return blocking_flock_.load(); }
  int openat_calls() const { return openat_.load(); }
  int fstatat_calls() const { return fstatat_.load(); }
  int total() const {
    return flock_.load() + openat_.load() + fstatat_.load() + fstat_.load() +
           close_.load() + mkdirat_.load();
  }

 private:
  static int counting_flock(int fd, int op) {
    ++flock_;
    if ((op & LOCK_NB) == 0 && (op & LOCK_UN) == 0) ++blocking_flock_;
    return inner_.flock(fd, op);
  }
  static int counting_openat(int dirfd, const char* path, int flags,
                             mode_t mode) {
    ++openat_;
    return inner_.openat(dirfd, path, flags, mode);
  }
  static int counting_fstatat(int dirfd, const char* path, struct stat* st,
                              int flags) {
    ++fstatat_;
    return inner_.fstatat(dirfd, path, st, flags);
  }
  static int counting_fstat(int fd, struct stat* st) {
    ++fstat_;
    return inner_.fstat(fd, st);
  }
  static int counting_close(int fd) {
    ++close_;
    return inner_.close(fd);
  }
  static int counting_mkdirat(int dirfd, const char* path, mode_t mode) {
    ++mkdirat_;
    return inner_.mkdirat(dirfd, path, mode);
  }

  ScopedSysOverride override_;
  static inline internal::PosixSys inner_ = internal::real_posix_sys();
  static inline std::atomic<int> flock_{0};
  static inline std::atomic<int> blocking_flock_{0};
  static inline std::atomic<int> openat_{0};
  static inline std::atomic<int> fstatat_{0};
  static inline std::atomic<int> fstat_{0};
  static inline std::atomic<int> close_{0};
  static inline std::atomic<int> mkdirat_{0};
};

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_SYS_COUNTER_H_

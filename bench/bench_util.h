// bench/bench_util.h
//
// Small pieces the benchmark binaries share (header-only):
//   errno_message - "OP 'WHAT': strerror(errno)".
//   open_lock_fd  - opens a lock file as a careful caller would (the raw
//                   baselines' descriptor).
//   flock_retry   - flock(2), retried on EINTR.
//   Fd            - a descriptor closed at scope exit.
//   check         - skips a benchmark on an error status.
#ifndef TIERLOCK_BENCH_BENCH_UTIL_H_
#define TIERLOCK_BENCH_BENCH_UTIL_H_

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/status/status.h"

namespace tierlock::bench {

inline std::string errno_message(const char* op, const std::string& what) {
  return std::string(op) + " '" + what + "': " + std::strerror(errno);
}

// O_NOFOLLOW, O_CLOEXEC, created if missing, never truncated.
inline int open_lock_fd(const char* path) {
  int fd;
  do {
    fd = ::open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

inline int flock_retry(int fd, int op) {
  int rc;
  do {
    rc = ::flock(fd, op);
  } while (rc != 0 && errno == EINTR);
  return rc;
}

// A descriptor closed at scope exit (close is never retried on EINTR).
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

// Skips the benchmark with the status's message and returns false when `st`
// is an error.
inline bool check(benchmark::State& state, const absl::Status& st) {
  if (st.ok()) return true;
  state.SkipWithError(std::string(st.message()).c_str());
  return false;
}

}  // namespace tierlock::bench

#endif  // TIERLOCK_BENCH_BENCH_UTIL_H_

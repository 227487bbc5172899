// src/base/mutex.h
//
// std::mutex with clang thread-safety annotations (internal).
//   Mutex      - an annotated std::mutex.
//   UniqueLock - an annotated std::unique_lock, usable with
//   std::condition_variable.
// Why not absl::Mutex: Debian's Abseil is not built with ThreadSanitizer, so
// TSan cannot see absl::Mutex synchronise and reports false races.
#ifndef TIERLOCK_SRC_BASE_MUTEX_H_
#define TIERLOCK_SRC_BASE_MUTEX_H_

#include <mutex>

#include "absl/base/thread_annotations.h"

namespace tierlock::internal {

class ABSL_LOCKABLE Mutex {
 public:
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  std::mutex& native() { return mu_; }

 private:
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE UniqueLock {
 public:
  explicit UniqueLock(Mutex& mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu)
      : lk_(mu.native()) {}
  ~UniqueLock() ABSL_UNLOCK_FUNCTION() = default;
  UniqueLock(const UniqueLock&) = delete;
  UniqueLock& operator=(const UniqueLock&) = delete;

  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { lk_.lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { lk_.unlock(); }
  // For std::condition_variable::wait.
  std::unique_lock<std::mutex>& native() { return lk_; }

 private:
  std::unique_lock<std::mutex> lk_;
};

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_BASE_MUTEX_H_

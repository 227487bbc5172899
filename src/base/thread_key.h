// src/base/thread_key.h
//
// A thread's identity for self-deadlock checks (internal):
//   ThreadKey          - never reused after its thread exits.
//   current_thread_key - the calling thread's key.
#ifndef TIERLOCK_SRC_BASE_THREAD_KEY_H_
#define TIERLOCK_SRC_BASE_THREAD_KEY_H_

#include <cstdint>

namespace tierlock::internal {

// Unlike std::thread::id it is never reused after the thread exits, so a hold
// handed over by a thread that has gone never makes a new thread look like
// its holder. Zero: no thread (an async grant).
struct ThreadKey {
  std::uint64_t value = 0;
  friend bool operator==(ThreadKey, ThreadKey) = default;
};

// Returns the calling thread's key (assigned at its first call).
ThreadKey current_thread_key() noexcept;

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_BASE_THREAD_KEY_H_

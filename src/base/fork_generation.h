// src/base/fork_generation.h
//
// The fork generation (internal): how many fork()s lie between the process's
// start and now, as seen by this process. State made under an older
// generation was inherited from the parent and is inert in the child.
//   fork_generation - reads it (one relaxed load).
#ifndef TIERLOCK_SRC_BASE_FORK_GENERATION_H_
#define TIERLOCK_SRC_BASE_FORK_GENERATION_H_

#include <atomic>
#include <cstdint>

namespace tierlock::internal {

// Written only by the child's atfork handler (queue/registry.cc), while it is
// single-threaded.
extern std::atomic<std::uint64_t> g_fork_generation;

// Returns the number of fork()s between the process's start and now, as seen
// by this process (the child's atfork handler increments it).
inline std::uint64_t fork_generation() {
  return g_fork_generation.load(std::memory_order_relaxed);
}

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_BASE_FORK_GENERATION_H_

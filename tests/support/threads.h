// tests/support/threads.h
//
// What this process's threads are doing right now, from /proc/self/task (so a
// test can see a thread parked in the kernel that the library forgot):
//   ThreadState, read_threads - one thread / every thread of this process
//                      (support/proc.h, shared with the benchmarks).
//   threads_in_flock - the threads blocked in flock(2) now.
//   describe_threads - one line per thread, for failure messages.
// Header-only.
#ifndef TIERLOCK_TESTS_SUPPORT_THREADS_H_
#define TIERLOCK_TESTS_SUPPORT_THREADS_H_

#include <string>
#include <vector>

#include "support/proc.h"

namespace tierlock::testing {

// Returns the threads of this process blocked in flock(2) right now.
inline std::vector<ThreadState> threads_in_flock() {
  std::vector<ThreadState> out;
  for (ThreadState& t : read_threads()) {
    if (t.in_flock()) out.push_back(std::move(t));
  }
  return out;
}

inline std::string describe_threads(const std::vector<ThreadState>& threads) {
  if (threads.empty()) return "(no threads)\n";
  std::string out;
  for (const ThreadState& t : threads) {
    out += std::to_string(t.tid) + " " + t.name + ": syscall [" +
           t.syscall_line.substr(0, 24) + "] wchan " + t.wchan + "\n";
  }
  return out;
}

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_THREADS_H_

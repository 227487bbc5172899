// tests/support/threads.h
//
// What this process's threads are doing right now, from /proc/self/task (so a
// test can see a thread parked in the kernel that the library forgot):
//   ThreadState      - one thread: id, name, the syscall it is blocked in,
//   wchan. read_threads     - every thread of this process. threads_in_flock -
//   the threads blocked in flock(2) now. describe_threads - one line per
//   thread, for failure messages.
// Header-only.
#ifndef TIERLOCK_TESTS_SUPPORT_THREADS_H_
#define TIERLOCK_TESTS_SUPPORT_THREADS_H_

#include <dirent.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace tierlock::testing {

struct ThreadState {
  pid_t tid = 0;
  std::string name;          // /proc/self/task/TID/comm
  long syscall = -2;         // the syscall it is blocked in; -1 blocked outside
                             // one; -2 running or unknown
  std::string syscall_line;  // raw /proc/self/task/TID/syscall
  std::string wchan;         // kernel function it sleeps in ("0" if none)

  // True when the thread is blocked in flock(2): by syscall number where the
  // kernel reports it, else by the wait channel's name.
  bool in_flock() const {
#ifdef SYS_flock
    if (syscall == SYS_flock) return true;
#endif
    return syscall < 0 &&
           (wchan.find("flock") != std::string::npos ||
            wchan.find("locks_lock_inode_wait") != std::string::npos);
  }
};

namespace threads_detail {
inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s;
}
}  // namespace threads_detail

// Returns every thread of this process (empty if /proc is unavailable).
inline std::vector<ThreadState> read_threads() {
  std::vector<ThreadState> out;
  DIR* d = ::opendir("/proc/self/task");
  if (d == nullptr) return out;
  while (const struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    ThreadState t;
    t.tid = static_cast<pid_t>(std::strtol(e->d_name, nullptr, 10));
    const std::string base = std::string("/proc/self/task/") + e->d_name;
    t.name = threads_detail::slurp(base + "/comm");
    t.syscall_line = threads_detail::slurp(base + "/syscall");
    t.wchan = threads_detail::slurp(base + "/wchan");
    if (!t.syscall_line.empty() && t.syscall_line != "running") {
      char* end = nullptr;
      const long nr = std::strtol(t.syscall_line.c_str(), &end, 10);
      if (end != t.syscall_line.c_str()) t.syscall = nr;
    }
    out.push_back(std::move(t));
  }
  ::closedir(d);
  return out;
}

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

#include "support/proc.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string_view>
#include <utility>

namespace tierlock::testing {
namespace {

// A /proc text without its trailing newline or NUL.
std::string read_trimmed(const std::string& path) {
  std::string s = read_proc(path);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s;
}

long parse_syscall(const std::string& line) {
  if (line.empty() || line == "running") return -2;
  char* end = nullptr;
  const long nr = std::strtol(line.c_str(), &end, 10);
  return end != line.c_str() ? nr : -2;
}

char stat_state(const std::string& stat) {
  if (stat.empty()) return '\0';
  // The name in parentheses may itself contain ") ": the state follows the
  // last one.
  const std::size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return '?';
  return stat[paren + 2];
}

}  // namespace

std::string read_proc(const std::string& path) {
  std::string text;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return text;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

std::vector<ProcLock> read_proc_locks() {
  std::vector<ProcLock> out;
  std::istringstream in(read_proc("/proc/locks"));
  std::string line;
  while (std::getline(in, line)) {
    // "1: FLOCK  ADVISORY  WRITE 3668 fe:00:10952878 0 EOF"
    // "1: -> FLOCK  ADVISORY  WRITE 3672 fe:00:10952878 0 EOF"
    std::istringstream ss(line);
    std::string id;
    std::string tok;
    ProcLock e;
    e.line = line;
    if (!(ss >> id >> tok)) continue;
    if (tok == "->") {
      e.waiter = true;
      if (!(ss >> tok)) continue;
    }
    e.kind = tok;
    std::string mode;
    std::string pid;
    std::string dev;
    if (!(ss >> mode >> e.access >> pid >> dev)) continue;
    char* end = nullptr;
    errno = 0;
    const long p = std::strtol(pid.c_str(), &end, 10);
    if (end == pid.c_str() || errno != 0) continue;
    e.pid = static_cast<pid_t>(p);
    unsigned maj = 0;
    unsigned min = 0;
    unsigned long long ino = 0;
    if (std::sscanf(dev.c_str(), "%x:%x:%llu", &maj, &min, &ino) != 3) continue;
    e.dev_major = maj;
    e.dev_minor = min;
    e.inode = ino;
    out.push_back(std::move(e));
  }
  return out;
}

bool has_flock_waiter(pid_t pid, std::uint64_t inode) {
  for (const ProcLock& e : read_proc_locks()) {
    if (e.waiter && e.is_flock() && e.pid == pid && e.inode == inode) {
      return true;
    }
  }
  return false;
}

std::vector<ThreadState> read_threads() {
  std::vector<ThreadState> out;
  DIR* d = ::opendir("/proc/self/task");
  if (d == nullptr) return out;
  while (const struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    ThreadState t;
    t.tid = static_cast<pid_t>(std::strtol(e->d_name, nullptr, 10));
    const std::string base = std::string("/proc/self/task/") + e->d_name;
    t.name = read_trimmed(base + "/comm");
    t.syscall_line = read_trimmed(base + "/syscall");
    t.wchan = read_trimmed(base + "/wchan");
    t.syscall = parse_syscall(t.syscall_line);
    out.push_back(std::move(t));
  }
  ::closedir(d);
  return out;
}

long thread_syscall(pid_t tid) {
  return parse_syscall(
      read_trimmed("/proc/self/task/" + std::to_string(tid) + "/syscall"));
}

char process_state(pid_t pid) {
  return stat_state(read_proc("/proc/" + std::to_string(pid) + "/stat"));
}

char thread_state(pid_t pid, pid_t tid) {
  return stat_state(read_proc("/proc/" + std::to_string(pid) + "/task/" +
                              std::to_string(tid) + "/stat"));
}

}  // namespace tierlock::testing

#include "support/proc_locks.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "support/wait.h"

namespace tierlock::testing {

std::vector<ProcLock> read_proc_locks() {
  std::vector<ProcLock> out;
  std::ifstream in("/proc/locks");
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
    try {
      e.pid = static_cast<pid_t>(std::stol(pid));
    } catch (...) {
      continue;
    }
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

std::vector<ProcLock> locks_on(const std::filesystem::path& file) {
  std::vector<ProcLock> out;
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return out;
  for (ProcLock& e : read_proc_locks()) {
    if (e.is_flock() && e.inode == st.st_ino && e.dev_major == major(st.st_dev) &&
        e.dev_minor == minor(st.st_dev)) {
      out.push_back(std::move(e));
    }
  }
  return out;
}

int count_holders(const std::vector<ProcLock>& entries) {
  int n = 0;
  for (const auto& e : entries) n += e.waiter ? 0 : 1;
  return n;
}

int count_waiters(const std::vector<ProcLock>& entries) {
  int n = 0;
  for (const auto& e : entries) n += e.waiter ? 1 : 0;
  return n;
}

int count_holders_by(const std::vector<ProcLock>& entries, pid_t pid) {
  int n = 0;
  for (const auto& e : entries) n += (!e.waiter && e.pid == pid) ? 1 : 0;
  return n;
}

int count_waiters_by(const std::vector<ProcLock>& entries, pid_t pid) {
  int n = 0;
  for (const auto& e : entries) n += (e.waiter && e.pid == pid) ? 1 : 0;
  return n;
}

bool wait_for_locks(const std::filesystem::path& file,
                    const std::function<bool(const std::vector<ProcLock>&)>& pred,
                    std::chrono::milliseconds timeout, std::string* last) {
  std::vector<ProcLock> seen;
  bool ok = wait_until(
      [&] {
        seen = locks_on(file);
        return pred(seen);
      },
      timeout);
  if (!ok && last != nullptr) *last = describe(seen);
  return ok;
}

std::string describe(const std::vector<ProcLock>& entries) {
  if (entries.empty()) return "(no flock entries)\n";
  std::string out;
  for (const auto& e : entries) out += e.line + "\n";
  return out;
}

}  // namespace tierlock::testing

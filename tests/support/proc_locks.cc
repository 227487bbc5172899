#include "support/proc_locks.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <set>
#include <tuple>

#include "support/wait.h"

namespace tierlock::testing {

namespace {

std::vector<ProcLock> read_locks_on(const struct stat& st) {
  std::vector<ProcLock> out;
  for (ProcLock& e : read_proc_locks()) {
    if (e.is_flock() && e.inode == st.st_ino &&
        e.dev_major == major(st.st_dev) && e.dev_minor == minor(st.st_dev)) {
      out.push_back(std::move(e));
    }
  }
  return out;
}

// The entries' states, ignoring the ordinal ids /proc/locks numbers them with.
std::multiset<std::tuple<bool, std::string, pid_t>> states(
    const std::vector<ProcLock>& entries) {
  std::multiset<std::tuple<bool, std::string, pid_t>> out;
  for (const auto& e : entries) out.emplace(e.waiter, e.access, e.pid);
  return out;
}

}  // namespace

std::vector<ProcLock> locks_on(const std::filesystem::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return {};
  // /proc/locks is a seq_file produced a page at a time: while other
  // processes lock and unlock, one reading can show an entry twice or miss
  // one. Take two readings in a row that agree.
  std::vector<ProcLock> last = read_locks_on(st);
  for (int i = 0; i < 100; ++i) {
    std::vector<ProcLock> next = read_locks_on(st);
    if (states(next) == states(last)) return next;
    last = std::move(next);
  }
  return last;
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

bool wait_for_locks(
    const std::filesystem::path& file,
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

::testing::AssertionResult LocksBecome(
    const std::filesystem::path& file,
    const std::function<bool(const std::vector<ProcLock>&)>& pred,
    std::chrono::milliseconds timeout) {
  std::string table;
  if (wait_for_locks(file, pred, timeout, &table)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "/proc/locks never showed the expected state for " << file
         << "; last seen:\n"
         << table;
}

std::function<bool(const std::vector<ProcLock>&)> no_locks() {
  return [](const std::vector<ProcLock>& e) { return e.empty(); };
}

std::function<bool(const std::vector<ProcLock>&)> held_by(pid_t pid,
                                                          int holders) {
  return [pid, holders](const std::vector<ProcLock>& e) {
    return count_holders_by(e, pid) == holders && count_waiters_by(e, pid) == 0;
  };
}

std::string describe(const std::vector<ProcLock>& entries) {
  if (entries.empty()) return "(no flock entries)\n";
  std::string out;
  for (const auto& e : entries) out += e.line + "\n";
  return out;
}

}  // namespace tierlock::testing

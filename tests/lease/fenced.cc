// tests/lease/fenced.cc -- see fenced.h.
#include "lease/fenced.h"

#include <fstream>

#include "tierlock/dir_lock.h"

namespace tierlock::testing {

absl::StatusOr<bool> fenced_write(const std::filesystem::path& dir,
                                  std::uint64_t token) {
  absl::StatusOr<DirLock> lock =
      DirLock::open(dir, LockOptions{".fence", true, std::nullopt});
  if (!lock.ok()) return lock.status();
  absl::StatusOr<Guard> guard = lock->acquire();
  if (!guard.ok()) return guard.status();
  std::uint64_t highest = 0;
  {
    std::ifstream in(dir / "highest");
    in >> highest;
  }
  if (token < highest) return false;
  {
    std::ofstream out(dir / "highest", std::ios::trunc);
    out << token << "\n";
  }
  std::ofstream log(dir / "writes", std::ios::app);
  log << token << "\n";
  return true;
}

std::vector<std::uint64_t> fenced_history(const std::filesystem::path& dir) {
  std::ifstream in(dir / "writes");
  std::vector<std::uint64_t> out;
  std::uint64_t t;
  while (in >> t) out.push_back(t);
  return out;
}

}  // namespace tierlock::testing

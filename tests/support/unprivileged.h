// tests/support/unprivileged.h
//
// Running checks as an unprivileged user (CI runs as root, and root bypasses
// permission checks):
//   run_unprivileged         - run_in_child, switched to nobody when root.
//   fork_unprivileged_holder - a forked child, switched to nobody when root,
//                              that opens and acquires a directory lock and
//                              holds it until told to release.
// A non-root test run is already unprivileged: the child stays itself.
// Header-only.
#ifndef TIERLOCK_TESTS_SUPPORT_UNPRIVILEGED_H_
#define TIERLOCK_TESTS_SUPPORT_UNPRIVILEGED_H_

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include "support/child.h"
#include "support/subprocess.h"
#include "tierlock/dir_lock.h"

namespace tierlock::testing {

// Runs `body` in a child as nobody (when root) or as this user. The outcome
// is skipped() only when root could not switch.
inline ChildOutcome run_unprivileged(const std::function<std::string()>& body) {
  const bool root = ::geteuid() == 0;
  return run_in_child([&body, root]() -> std::string {
    if (root) {
      std::string err = drop_privileges();
      if (!err.empty()) return err;
    }
    if (::geteuid() == 0) return std::string(kChildSkip) + "still root";
    return body();
  });
}

// Forks a child that becomes unprivileged, opens `dir`'s lock, runs `check`
// on the handle (if given; a non-empty result fails), acquires exclusively and
// prints "locked"; it releases and exits 0 when it reads the line "release".
// Its first line is "locked", an error, or kChildSkip + reason (exit 77).
inline Process fork_unprivileged_holder(
    const std::filesystem::path& dir,
    const std::function<std::string(const DirLock&)>& check = {}) {
  return Process::fork([dir, check](LineChannel& ch) -> int {
    if (::geteuid() == 0) {
      std::string err = drop_privileges();
      if (!err.empty()) {
        ch.write_line(err);
        return 77;
      }
    }
    absl::StatusOr<DirLock> lock = DirLock::open(dir);
    if (!lock.ok()) {
      ch.write_line("open: " + lock.status().ToString());
      return 1;
    }
    if (check) {
      std::string err = check(*lock);
      if (!err.empty()) {
        ch.write_line(err);
        return 1;
      }
    }
    absl::StatusOr<Guard> g = lock->acquire();
    if (!g.ok()) {
      ch.write_line("acquire: " + g.status().ToString());
      return 1;
    }
    ch.write_line("locked");
    if (ch.read_line() != "release") return 2;
    return g->release().ok() ? 0 : 1;
  });
}

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_UNPRIVILEGED_H_

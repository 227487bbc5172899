// tests/support/helpers.h
//
// "Another thread" and "another process" as one-liners for tests:
//   helper_path / flock_path - tl_helper (TIERLOCK_HELPER_PATH) and flock(1)
//                              (TIERLOCK_FLOCK_PATH, empty if not found).
//   try_in_other_thread      - try_acquire from a fresh thread.
//   try_in_other_process     - `tl_helper try` in a fresh process.
//   start_holder             - `tl_helper hold`: a process holding the lock
//   until
//                              told to release.
// Outcomes are strings ("acquired", "busy", or an error) so EXPECT_EQ prints
// them usefully.
#ifndef TIERLOCK_TESTS_SUPPORT_HELPERS_H_
#define TIERLOCK_TESTS_SUPPORT_HELPERS_H_

#include <filesystem>
#include <future>
#include <optional>
#include <string>
#include <vector>

#include "support/subprocess.h"
#include "tierlock/dir_lock.h"

#ifndef TIERLOCK_HELPER_PATH
#error "TIERLOCK_HELPER_PATH must be defined by the test target"
#endif
#ifndef TIERLOCK_FLOCK_PATH
#define TIERLOCK_FLOCK_PATH ""
#endif

namespace tierlock::testing {

inline constexpr char kAcquired[] = "acquired";
inline constexpr char kBusy[] = "busy";

inline std::string helper_path() { return TIERLOCK_HELPER_PATH; }
inline std::string flock_path() { return TIERLOCK_FLOCK_PATH; }

// Describes a try_acquire outcome; the Guard (if any) is released.
inline std::string describe_try(absl::StatusOr<std::optional<Guard>> r) {
  if (!r.ok()) return "error: " + r.status().ToString();
  if (!r->has_value()) return kBusy;
  absl::Status released = (*r)->release();
  if (!released.ok()) return "acquired, release failed: " + released.ToString();
  return kAcquired;
}

// Runs lock.try_acquire(mode) on a new thread (releasing at once on success).
inline std::string try_in_other_thread(DirLock lock,
                                       Mode mode = Mode::kExclusive) {
  return std::async(
             std::launch::async,
             [&lock, mode] { return describe_try(lock.try_acquire(mode)); })
      .get();
}

inline std::vector<std::string> helper_args(const std::string& command,
                                            const std::filesystem::path& dir,
                                            Mode mode,
                                            const std::string& name) {
  std::vector<std::string> argv = {helper_path(), command, dir.string()};
  if (mode == Mode::kShared) argv.push_back("--shared");
  if (!name.empty()) {
    argv.push_back("--name");
    argv.push_back(name);
  }
  return argv;
}

// Runs `tl_helper try` on `dir`: "acquired", "busy" or "error: ...".
inline std::string try_in_other_process(const std::filesystem::path& dir,
                                        Mode mode = Mode::kExclusive,
                                        const std::string& name = "") {
  RunResult r = run(helper_args("try", dir, mode, name));
  if (r.status.code == 0) return kAcquired;
  if (r.status.code == 1) return kBusy;
  return "error: tl_helper try " + r.status.describe() + ", stdout: " + r.out;
}

// Starts `tl_helper hold` on `dir`. It prints "locked" once it holds the lock
// (read it with read_line) and releases when sent a line (or at stdin EOF).
inline Process start_holder(const std::filesystem::path& dir,
                            Mode mode = Mode::kExclusive,
                            const std::string& name = "") {
  return Process::spawn(helper_args("hold", dir, mode, name));
}

// Tells a holder started by start_holder to release, and waits for it.
inline ExitStatus stop_holder(Process& holder) {
  holder.write_line("release");
  return holder.wait();
}

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_HELPERS_H_

// A minimal tierlock user: locks a fresh temporary directory, checks the hold,
// releases it; then checks that lock-order checks work from the installed
// library whatever its build type: the starting mode follows this program's
// own NDEBUG (a Debug application gets kAbort even from a Release library),
// and the learned order catches an ABBA at run time. Built through
// find_package(tierlock) (in this build's type and in the other one) and
// through `pkg-config --cflags --libs tierlock`; exits 0 on success.
#include <stdlib.h>  // mkdtemp

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>

#include "tierlock/tierlock.h"

namespace {

int fail(const std::string& what) {
  std::cerr << "tierlock_consumer: " << what << "\n";
  return 1;
}

int run(const std::filesystem::path& dir) {
  absl::StatusOr<tierlock::DirLock> lock = tierlock::DirLock::open(dir);
  if (!lock.ok()) return fail(std::string(lock.status().message()));

  absl::StatusOr<tierlock::Guard> guard = lock->acquire();
  if (!guard.ok()) return fail(std::string(guard.status().message()));
  if (!guard->held())
    return fail("acquire() returned a guard that is not held");
  std::cout << "locked " << lock->lock_file().string() << "\n";

  if (absl::Status s = guard->release(); !s.ok()) return fail(s.ToString());
  if (guard->held()) return fail("guard still held after release()");
  std::cout << "released\n";
  return 0;
}

int check_order(const std::filesystem::path& dir) {
  using tierlock::TierCheckMode;
#ifdef NDEBUG
  const TierCheckMode want = tierlock::tier_debug_checks()
                                 ? TierCheckMode::kAbort
                                 : TierCheckMode::kIgnore;
#else
  const TierCheckMode want =
      TierCheckMode::kAbort;  // this program is a Debug build
#endif
  if (std::getenv("TIERLOCK_CHECKS") == nullptr &&
      tierlock::tier_check_mode() != want) {
    return fail("starting tier-check mode " +
                std::to_string(static_cast<int>(tierlock::tier_check_mode())) +
                ", expected " + std::to_string(static_cast<int>(want)));
  }
  tierlock::set_tier_check_mode(TierCheckMode::kFail);
  // The report's call site crosses the library's ABI (SourceLocation in every
  // acquire's signature and in HeldLock): this program may be built by
  // another compiler than the library (consumer.other_compiler).
  tierlock::SourceLocation reported;
  tierlock::set_tier_violation_handler(
      [&reported](const tierlock::TierViolation& v) {
        reported = v.acquiring.where;
      });
  std::filesystem::create_directories(dir / "a");
  std::filesystem::create_directories(dir / "b");
  absl::StatusOr<tierlock::DirLock> a = tierlock::DirLock::open(dir / "a");
  absl::StatusOr<tierlock::DirLock> b = tierlock::DirLock::open(dir / "b");
  if (!a.ok() || !b.ok()) return fail("open a/b");
  {
    absl::StatusOr<tierlock::Guard> ga = a->acquire();
    absl::StatusOr<tierlock::Guard> gb = b->acquire();
    if (!ga.ok() || !gb.ok()) return fail("a then b was refused");
  }
  absl::StatusOr<tierlock::Guard> gb = b->acquire();
  if (!gb.ok()) return fail("b alone was refused");
  const unsigned acquire_line = __LINE__ + 1;
  absl::StatusOr<tierlock::Guard> ga = a->acquire();
  if (ga.ok() || ga.status().code() != absl::StatusCode::kFailedPrecondition) {
    return fail(
        "b then a (after a then b) was not refused by the learned order");
  }
  tierlock::set_tier_violation_handler(nullptr);
  const std::string file = reported.file_name();
  if (file.find("main.cc") == std::string::npos ||
      reported.line() != acquire_line ||
      std::string(reported.function_name()) != "check_order") {
    return fail("the report's call site is '" + file + ":" +
                std::to_string(reported.line()) + " in " +
                reported.function_name() + "', expected main.cc:" +
                std::to_string(acquire_line) + " in check_order");
  }
  std::cout << "lock order checked\n";
  return 0;
}

}  // namespace

int main() {
  std::string tmpl =
      (std::filesystem::temp_directory_path() / "tierlock-consumer-XXXXXX")
          .string();
  if (mkdtemp(tmpl.data()) == nullptr) return fail("mkdtemp failed");
  const std::filesystem::path dir = tmpl;
  int rc = run(dir);
  if (rc == 0) rc = check_order(dir);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}

// A minimal tierlock user: locks a fresh temporary directory, checks the hold,
// releases it. Built both through find_package(tierlock) and through
// `pkg-config --cflags --libs tierlock`; exits 0 on success.
#include <stdlib.h>  // mkdtemp

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
  if (!guard->held()) return fail("acquire() returned a guard that is not held");
  std::cout << "locked " << lock->lock_file().string() << "\n";

  if (absl::Status s = guard->release(); !s.ok()) return fail(s.ToString());
  if (guard->held()) return fail("guard still held after release()");
  std::cout << "released\n";
  return 0;
}

}  // namespace

int main() {
  std::string tmpl =
      (std::filesystem::temp_directory_path() / "tierlock-consumer-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) return fail("mkdtemp failed");
  const std::filesystem::path dir = tmpl;
  const int rc = run(dir);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}

#include "support/fixture.h"

#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "support/proc_locks.h"
#include "support/wait.h"

namespace tierlock::testing {
namespace {

int count_entries(const char* dir) {
  DIR* d = ::opendir(dir);
  if (d == nullptr) return -1;
  int n = 0;
  while (const struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

}  // namespace

int count_open_fds() { return count_entries("/proc/self/fd"); }
int count_threads() { return count_entries("/proc/self/task"); }

void TierlockTest::SetUp() {
  // ThreadSanitizer starts a background thread of its own with the process's
  // first extra thread; start (and join) one now so it is not counted as ours.
  static const bool warmed_up = [] {
    std::thread([] {}).join();
    return true;
  }();
  (void)warmed_up;
  count_baseline();
}

void TierlockTest::TearDown() {
  expect_nothing_left("descriptors");
  const pid_t self = ::getpid();
  std::vector<ProcLock> mine;
  // A single reading of /proc/locks may be torn; a real leftover persists.
  wait_until(
      [&] {
        mine.clear();
        for (ProcLock& e : read_proc_locks()) {
          if (e.pid == self) mine.push_back(std::move(e));
        }
        return mine.empty();
      },
      kSettle);
  EXPECT_TRUE(mine.empty()) << "the test left kernel locks held or waiting:\n"
                            << describe(mine);
  const std::filesystem::path lock = dir() / ".lock";
  EXPECT_TRUE(LocksBecome(lock, no_locks(), kSettle)) << "locks remain";
}

}  // namespace tierlock::testing

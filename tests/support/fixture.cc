#include "support/fixture.h"

#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "support/proc_locks.h"
#include "support/wait.h"
#include "tierlock/registry.h"

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
  registry_size_ = Registry::global().size();
  fds_ = count_open_fds();
  threads_ = count_threads();
}

void TierlockTest::TearDown() {
  // Everything below should already hold; the short waits only absorb threads
  // that are still exiting after signalling completion.
  constexpr std::chrono::milliseconds kSettle{5'000};
  EXPECT_EQ(Registry::global().size(), registry_size_)
      << "the test left registry entries behind";
  // Fewer than at the start is no leak: a thread that was already exiting
  // when SetUp counted (e.g. a pool worker of an earlier step) may be gone.
  wait_until([&] { return count_threads() <= threads_; }, kSettle);
  EXPECT_LE(count_threads(), threads_) << "the test left threads behind";
  wait_until([&] { return count_open_fds() <= fds_; }, kSettle);
  EXPECT_LE(count_open_fds(), fds_) << "the test left descriptors open";
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

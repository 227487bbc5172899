// The platform-neutral half of TierlockTest (tests/support/fixture.h): what
// is counted at the start and checked at the end on every platform. The
// platform files (fixture.cc, win32_fixture.cc) add their own kernel-lock
// checks.
#include <chrono>

#include "support/fixture.h"
#include "support/wait.h"
#include "tierlock/registry.h"

namespace tierlock::testing {

void TierlockTest::count_baseline() {
  registry_size_ = Registry::global().size();
  fds_ = count_open_fds();
  threads_ = count_threads();
}

void TierlockTest::expect_nothing_left(const char* descriptors) {
  // Everything below should already hold; the short waits only absorb threads
  // that are still exiting after signalling completion.
  EXPECT_EQ(Registry::global().size(), registry_size_)
      << "the test left registry entries behind";
  // Fewer than at the start is no leak: a thread that was already exiting
  // when SetUp counted (e.g. a pool worker of an earlier step) may be gone.
  wait_until([&] { return count_threads() <= threads_; }, kSettle);
  EXPECT_LE(count_threads(), threads_) << "the test left threads behind";
  wait_until([&] { return count_open_fds() <= fds_; }, kSettle);
  EXPECT_LE(count_open_fds(), fds_)
      << "the test left " << descriptors << " open";
}

}  // namespace tierlock::testing

// tests/support/fixture.h
//
// The base fixture of tierlock's tests:
//   TierlockTest - a fresh temporary directory per test, and at the end, checks
//                  that the test left no registry entry, descriptor, thread or
//                  kernel lock behind.
#ifndef TIERLOCK_TESTS_SUPPORT_FIXTURE_H_
#define TIERLOCK_TESTS_SUPPORT_FIXTURE_H_

#include <chrono>
#include <cstddef>
#include <filesystem>

#include "gtest/gtest.h"
#include "support/temp_dir.h"

namespace tierlock::testing {

// Returns the number of open descriptors of this process.
int count_open_fds();
// Returns the number of threads of this process.
int count_threads();

class TierlockTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // The test's own temporary directory (canonical, absolute, mode 0700).
  const std::filesystem::path& dir() const { return tmp_.path(); }

 private:
  // How long TearDown waits for what a test's threads are still releasing.
  static constexpr std::chrono::milliseconds kSettle{5'000};
  // Counts registry entries, descriptors and threads (SetUp); expects no
  // more of them at the end (TearDown), naming descriptors as the platform
  // does ("descriptors", "handles"). fixture_common.cc.
  void count_baseline();
  void expect_nothing_left(const char* descriptors);

  TempDir tmp_;
  std::size_t registry_size_ = 0;
  int fds_ = 0;
  int threads_ = 0;
};

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_FIXTURE_H_

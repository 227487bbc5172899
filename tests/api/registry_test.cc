// tests/api/registry_test.cc
//
// Registry: one entry per lock-file identity, shared by every spelling of the
// path, pruned when the last handle or guard goes.
#include "tierlock/registry.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/internal.h"
#include "support/status.h"
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"

namespace {

using tierlock::DirLock;
using tierlock::Guard;
using tierlock::Mode;
using tierlock::Registry;
using namespace tierlock::testing;  // NOLINT: test support vocabulary

class RegistryTest : public TierlockTest {};
class RegistryStressTest : public TierlockTest {};

TEST_F(RegistryTest, SizeReturnsToPriorValueAfterHandlesAndGuardsGo) {
  const std::size_t before = Registry::global().size();
  {
    ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
    EXPECT_EQ(Registry::global().size(), before + 1);
    DirLock copy = lock;
    EXPECT_EQ(Registry::global().size(), before + 1);
    ASSERT_OK_AND_ASSIGN(Guard g, copy.acquire());
    EXPECT_EQ(Registry::global().size(), before + 1);
    ASSERT_OK(g.release());
    EXPECT_EQ(Registry::global().size(), before + 1);
  }
  EXPECT_EQ(Registry::global().size(), before);
  // A failed open leaves nothing behind either.
  EXPECT_FALSE(DirLock::open(dir() / "missing").ok());
  EXPECT_EQ(Registry::global().size(), before);
}

TEST_F(RegistryTest, EntryLivesWhileAGuardOutlivesItsHandles) {
  const std::size_t before = Registry::global().size();
  std::optional<Guard> g;
  {
    ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(dir()));
    ASSERT_OK_AND_ASSIGN(g, lock.acquire());
  }
  EXPECT_EQ(Registry::global().size(), before + 1);
  // A new handle finds the same entry: this thread's hold is seen as re-entry.
  {
    ASSERT_OK_AND_ASSIGN(DirLock again, DirLock::open(dir()));
    EXPECT_EQ(Registry::global().size(), before + 1);
    EXPECT_TRUE(IsError(again.try_acquire().status(),
                        absl::StatusCode::kFailedPrecondition));
    EXPECT_EQ(try_in_other_thread(again), kBusy);
  }
  g.reset();
  EXPECT_EQ(Registry::global().size(), before);
}

TEST_F(RegistryTest, DistinctDirectoriesGetDistinctEntries) {
  constexpr int kDirs = 100;
  const std::size_t before = Registry::global().size();
  {
    std::vector<DirLock> locks;
    std::vector<Guard> guards;
    for (int i = 0; i < kDirs; ++i) {
      const auto d = dir() / std::to_string(i);
      std::filesystem::create_directory(d);
      ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(d));
      ASSERT_OK_AND_ASSIGN(
          Guard g, lock.acquire(i % 2 ? Mode::kShared : Mode::kExclusive));
      locks.push_back(std::move(lock));
      guards.push_back(std::move(g));
    }
    EXPECT_EQ(Registry::global().size(), before + kDirs);
    guards.clear();
    EXPECT_EQ(Registry::global().size(), before + kDirs);
  }
  EXPECT_EQ(Registry::global().size(), before);
}

TEST_F(RegistryStressTest, TenThousandDirectoriesLeaveSizeUnchanged) {
  constexpr int kDirs = 10'000;
  const std::size_t before = Registry::global().size();
  for (int i = 0; i < kDirs; ++i) {
    const auto d = dir() / std::to_string(i);
    ASSERT_TRUE(std::filesystem::create_directory(d)) << d;
    ASSERT_OK_AND_ASSIGN(DirLock lock, DirLock::open(d));
    ASSERT_OK_AND_ASSIGN(
        Guard g, lock.acquire(i % 3 == 0 ? Mode::kShared : Mode::kExclusive));
    ASSERT_OK(g.release());
    if (i % 1000 == 0) {
      ASSERT_EQ(Registry::global().size(), before + 1) << i;
    }
  }
  EXPECT_EQ(Registry::global().size(), before);
}

TEST_F(RegistryTest, DifferentSpellingsShareOneEntry) {
  const auto real = dir() / "ws";
  std::filesystem::create_directories(real / "sub");
  std::filesystem::create_directory_symlink(real, dir() / "link");
  const std::filesystem::path relative =
      std::filesystem::relative(real, std::filesystem::current_path());
  ASSERT_TRUE(relative.is_relative()) << relative;

  const std::size_t before = Registry::global().size();
  ASSERT_OK_AND_ASSIGN(DirLock plain, DirLock::open(real));
  EXPECT_EQ(Registry::global().size(), before + 1);
  ASSERT_OK_AND_ASSIGN(DirLock rel, DirLock::open(relative));
  ASSERT_OK_AND_ASSIGN(DirLock dotdot, DirLock::open(real / "sub" / ".."));
  ASSERT_OK_AND_ASSIGN(DirLock via_link, DirLock::open(dir() / "link"));
  EXPECT_EQ(Registry::global().size(), before + 1);
  for (const DirLock* l : {&rel, &dotdot, &via_link}) {
    EXPECT_EQ(l->directory(), real);
    EXPECT_EQ(l->lock_file(), real / ".lock");
  }
  std::shared_ptr<tierlock::internal::LockEntry> entry = entry_of(plain);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry_of(via_link), entry);
}

TEST_F(RegistryTest, DifferentSpellingsExcludeEachOther) {
  const auto real = dir() / "ws";
  std::filesystem::create_directories(real / "sub");
  std::filesystem::create_directory_symlink(real, dir() / "link");
  const std::filesystem::path relative =
      std::filesystem::relative(real, std::filesystem::current_path());

  ASSERT_OK_AND_ASSIGN(DirLock first, DirLock::open(real));
  ASSERT_OK_AND_ASSIGN(Guard g, first.acquire());
  for (const std::filesystem::path& spelling :
       {relative, real / "sub" / "..", dir() / "link"}) {
    SCOPED_TRACE(spelling.string());
    ASSERT_OK_AND_ASSIGN(DirLock second, DirLock::open(spelling));
    // Another thread: the in-process queue says "held".
    EXPECT_EQ(try_in_other_thread(second, Mode::kExclusive), kBusy);
    EXPECT_EQ(try_in_other_thread(second, Mode::kShared), kBusy);
    // The same thread: re-entry.
    EXPECT_TRUE(IsError(second.try_acquire().status(),
                        absl::StatusCode::kFailedPrecondition));
  }
  ASSERT_OK(g.release());
  ASSERT_OK_AND_ASSIGN(DirLock via_link, DirLock::open(dir() / "link"));
  EXPECT_EQ(try_in_other_thread(via_link), kAcquired);
}

TEST_F(RegistryTest, HardLinkedLockFilesShareOneEntry) {
  // registry.h: the identity is the lock file's (device, inode), so a hard
  // link to the same file is the same lock, as it is for the kernel.
  const auto a = dir() / "a";
  const auto b = dir() / "b";
  std::filesystem::create_directory(a);
  std::filesystem::create_directory(b);
  const std::size_t before = Registry::global().size();
  ASSERT_OK_AND_ASSIGN(DirLock la, DirLock::open(a));
  std::filesystem::create_hard_link(a / ".lock", b / ".lock");
  ASSERT_OK_AND_ASSIGN(DirLock lb, DirLock::open(b));
  EXPECT_EQ(Registry::global().size(), before + 1);
  EXPECT_EQ(lb.directory(),
            b);  // each handle reports the path it was opened with
  ASSERT_OK_AND_ASSIGN(Guard g, la.acquire());
  EXPECT_EQ(try_in_other_thread(lb), kBusy);
  EXPECT_EQ(try_in_other_process(b), kBusy);
}

TEST_F(RegistryTest, ConcurrentOpenAcquireReleaseLeavesSizeUnchanged) {
  constexpr int kThreads = 8;
  constexpr int kRounds = 300;
  constexpr int kDirs = 5;
  for (int d = 0; d < kDirs; ++d) {
    std::filesystem::create_directory(dir() / std::to_string(d));
  }
  const std::size_t before = Registry::global().size();
  std::atomic<int> failures{0};
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        const auto d = dir() / std::to_string((t + i) % kDirs);
        absl::StatusOr<DirLock> lock = DirLock::open(d);
        if (!lock.ok()) {
          errors[static_cast<std::size_t>(t)] = lock.status().ToString();
          ++failures;
          return;
        }
        const Mode mode = (i % 4 == 0) ? Mode::kExclusive : Mode::kShared;
        absl::StatusOr<Guard> g = lock->acquire(mode);
        if (!g.ok()) {
          errors[static_cast<std::size_t>(t)] = g.status().ToString();
          ++failures;
          return;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  for (const auto& e : errors) EXPECT_EQ(e, "");
  EXPECT_EQ(Registry::global().size(), before);
}

}  // namespace

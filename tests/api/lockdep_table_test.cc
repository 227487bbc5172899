// tests/api/lockdep_table_test.cc
//
// The lock-order checks held against two reference suites, written anew for
// tierlock: the families of the Linux kernel's lockdep self-test table
// (lib/locking-selftest.c: AA, ABBA, ABBCCA, ABCABC, ABBCCDDA, ABCDBDDA,
// ABCDBCDA, each in exclusive, shared and mixed modes, as its rwsem rows do),
// and the cases of Abseil's deadlock detector (long cycles, many locks,
// safe patterns that must stay quiet). Each nesting runs as its own task and
// lets go before the next one: a cycle is found from the order alone, before
// anything blocks.
#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/fixture.h"
#include "support/status.h"
#include "support/tier_mode.h"
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"
#include "tierlock/lock_context.h"
#include "tierlock/tier.h"

namespace {

using ::testing::HasSubstr;
using tierlock::DirLock;
using tierlock::Guard;
using tierlock::LockContext;
using tierlock::Mode;
using tierlock::TierCheckMode;
using tierlock::TierViolation;
using namespace tierlock::testing;  // NOLINT: test support vocabulary

// Where a sequence of nestings was first refused: (nesting, position).
using Refused = std::optional<std::pair<std::size_t, std::size_t>>;

// How the locks of a family are taken: all exclusive, all shared (lockdep's
// read rows: a shared hold waits behind a queued writer, so it deadlocks
// like an exclusive one), or alternating.
enum class Modes { kExclusive, kShared, kMixed };

class LockdepTableTest : public TierlockTest {
 protected:
  void SetUp() override {
    TierlockTest::SetUp();
    for (char c = 'A'; c <= 'D'; ++c) {
      std::filesystem::path p = dir() / std::string(1, c);
      std::filesystem::create_directories(p);
      absl::StatusOr<DirLock> lock = DirLock::open(p);
      ASSERT_TRUE(lock.ok()) << lock.status();
      locks_.push_back(*std::move(lock));
    }
  }
  void TearDown() override {
    locks_.clear();
    TierlockTest::TearDown();
  }

  // Takes each nesting's locks in order in a task of its own, then releases
  // them; stops at the first refused acquire.
  Refused run(const std::vector<std::string>& nestings, Modes modes) {
    for (std::size_t n = 0; n < nestings.size(); ++n) {
      LockContext task("nesting " + nestings[n]);
      LockContext::Scope bind(task);
      std::vector<Guard> held;
      for (std::size_t i = 0; i < nestings[n].size(); ++i) {
        const Mode mode = modes == Modes::kShared ||
                                  (modes == Modes::kMixed && (n + i) % 2 == 1)
                              ? Mode::kShared
                              : Mode::kExclusive;
        absl::StatusOr<Guard> g =
            locks_[static_cast<std::size_t>(nestings[n][i] - 'A')].acquire(
                mode);
        if (!g.ok()) {
          EXPECT_EQ(g.status().code(), absl::StatusCode::kFailedPrecondition)
              << g.status();
          return std::pair(n, i);
        }
        held.push_back(*std::move(g));
      }
    }
    return std::nullopt;
  }

  std::vector<DirLock> locks_;
  ScopedTierCheckMode mode_{TierCheckMode::kFail};
};

struct Family {
  const char* name;
  std::vector<std::string> nestings;
  std::pair<std::size_t, std::size_t> refused;  // the acquire that closes it
};

// lib/locking-selftest.c, one line each: the nestings, then where the cycle
// closes (the last nesting's second lock).
const Family kFamilies[] = {
    {"ABBA", {"AB", "BA"}, {1, 1}},
    {"ABBCCA", {"AB", "BC", "CA"}, {2, 1}},
    {"ABCABC", {"AB", "CA", "BC"}, {2, 1}},
    {"ABBCCDDA", {"AB", "BC", "CD", "DA"}, {3, 1}},
    {"ABCDBDDA", {"AB", "CD", "BD", "DA"}, {3, 1}},
    {"ABCDBCDA", {"AB", "CD", "BC", "DA"}, {3, 1}},
};

class LockdepFamilyTest
    : public LockdepTableTest,
      public ::testing::WithParamInterface<std::tuple<Family, Modes>> {};

TEST_P(LockdepFamilyTest, CycleIsReportedWhereItCloses) {
  const auto& [family, modes] = GetParam();
  Reports reports;
  EXPECT_EQ(run(family.nestings, modes), Refused(family.refused));
  ASSERT_EQ(reports.seen().size(), 1u);
  const TierViolation v = reports.seen()[0];
  EXPECT_EQ(v.kind, TierViolation::Kind::kLearnedCycle);
  const std::string& last = family.nestings[family.refused.first];
  EXPECT_EQ(v.acquiring.lock_file,
            locks_[static_cast<std::size_t>(last[1] - 'A')].lock_file());
  EXPECT_EQ(v.conflicting.lock_file,
            locks_[static_cast<std::size_t>(last[0] - 'A')].lock_file());
  EXPECT_FALSE(v.earlier.empty());
}

TEST_P(LockdepFamilyTest, SameNestingsAsTriesAreQuiet) {
  // The closing nesting's inner lock taken with a try cannot wait: quiet.
  const auto& [family, modes] = GetParam();
  Reports reports;
  std::vector<std::string> safe(
      family.nestings.begin(),
      family.nestings.begin() +
          static_cast<std::ptrdiff_t>(family.refused.first));
  EXPECT_EQ(run(safe, modes), Refused());
  const std::string& last = family.nestings[family.refused.first];
  ASSERT_OK_AND_ASSIGN(
      Guard outer, locks_[static_cast<std::size_t>(last[0] - 'A')].acquire());
  ASSERT_OK_AND_ASSIGN(
      std::optional<Guard> inner,
      locks_[static_cast<std::size_t>(last[1] - 'A')].try_acquire());
  EXPECT_TRUE(inner.has_value());
  EXPECT_TRUE(reports.seen().empty());
}

std::string family_name(
    const ::testing::TestParamInfo<std::tuple<Family, Modes>>& info) {
  static constexpr const char* kModes[] = {"Exclusive", "Shared", "Mixed"};
  return std::string(std::get<0>(info.param).name) +
         kModes[static_cast<int>(std::get<1>(info.param))];
}

INSTANTIATE_TEST_SUITE_P(Table, LockdepFamilyTest,
                         ::testing::Combine(::testing::ValuesIn(kFamilies),
                                            ::testing::Values(Modes::kExclusive,
                                                              Modes::kShared,
                                                              Modes::kMixed)),
                         family_name);

TEST_F(LockdepTableTest, AAIsTheReentryErrorNotAReport) {
  Reports reports;
  for (Mode mode : {Mode::kExclusive, Mode::kShared}) {
    ASSERT_OK_AND_ASSIGN(Guard a, locks_[0].acquire(mode));
    for (Mode again : {Mode::kExclusive, Mode::kShared}) {
      absl::StatusOr<Guard> g = locks_[0].acquire(again);
      EXPECT_EQ(g.status().code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_THAT(std::string(g.status().message()),
                  HasSubstr("already holds it"));
    }
  }
  EXPECT_TRUE(reports.seen().empty());
}

TEST_F(LockdepTableTest, TieredABBAIsATierOrderReport) {
  static constexpr tierlock::Tier kLow{10, "low"};
  static constexpr tierlock::Tier kHigh{20, "high"};
  std::filesystem::create_directories(dir() / "lo");
  std::filesystem::create_directories(dir() / "hi");
  ASSERT_OK_AND_ASSIGN(DirLock lo, DirLock::open(dir() / "lo", {.tier = kLow}));
  ASSERT_OK_AND_ASSIGN(DirLock hi,
                       DirLock::open(dir() / "hi", {.tier = kHigh}));
  Reports reports;
  {
    ASSERT_OK_AND_ASSIGN(Guard a, lo.acquire());
    ASSERT_OK_AND_ASSIGN(Guard b, hi.acquire(Mode::kShared));
  }
  ASSERT_OK_AND_ASSIGN(Guard b, hi.acquire(Mode::kShared));
  EXPECT_EQ(lo.acquire().status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(reports.seen().size(), 1u);
  EXPECT_EQ(reports.seen()[0].kind, TierViolation::Kind::kTierOrder);
}

// Abseil's detector cases (absl/synchronization/mutex_test.cc), as lock files.
class DetectorTest : public TierlockTest {
 protected:
  std::vector<DirLock> open_many(std::size_t n) {
    std::vector<DirLock> out;
    for (std::size_t i = 0; i < n; ++i) {
      std::filesystem::path p = dir() / ("l" + std::to_string(i));
      std::filesystem::create_directories(p);
      absl::StatusOr<DirLock> lock = DirLock::open(p);
      EXPECT_TRUE(lock.ok()) << lock.status();
      out.push_back(*std::move(lock));
    }
    return out;
  }
  ScopedTierCheckMode mode_{TierCheckMode::kFail};
};

TEST_F(DetectorTest, LongCycleIsReportedWithTheWholeChain) {
  Reports reports;
  std::vector<DirLock> l = open_many(100);
  for (std::size_t i = 0; i + 1 < l.size(); ++i) {
    ASSERT_OK_AND_ASSIGN(Guard a, l[i].acquire());
    ASSERT_OK_AND_ASSIGN(Guard b, l[i + 1].acquire());
  }
  ASSERT_OK_AND_ASSIGN(Guard last, l.back().acquire());
  EXPECT_EQ(l.front().acquire().status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(reports.seen().size(), 1u);
  EXPECT_EQ(reports.seen()[0].earlier.size(), 99u);
}

TEST_F(DetectorTest, ManyLocksInOneGlobalOrderAreQuiet) {
  // Random nestings that all respect one order: a DAG, never a cycle.
  Reports reports;
  std::vector<DirLock> l = open_many(300);
  std::mt19937 rng(42);
  std::uniform_int_distribution<std::size_t> pick(0, l.size() - 1);
  for (int n = 0; n < 2000; ++n) {
    std::size_t i = pick(rng);
    std::size_t j = pick(rng);
    if (i == j) continue;
    if (i > j) std::swap(i, j);
    ASSERT_OK_AND_ASSIGN(Guard a, l[i].acquire());
    ASSERT_OK_AND_ASSIGN(Guard b, l[j].acquire(Mode::kShared));
  }
  EXPECT_TRUE(reports.seen().empty());
}

TEST_F(DetectorTest, ConsistentOrderFromEightThreadsIsQuiet) {
  Reports reports;
  std::vector<DirLock> l = open_many(3);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        absl::StatusOr<Guard> a = l[0].acquire();
        absl::StatusOr<Guard> b = l[1].acquire(Mode::kShared);
        absl::StatusOr<Guard> c = l[2].acquire();
        EXPECT_TRUE(a.ok() && b.ok() && c.ok());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_TRUE(reports.seen().empty());
}

TEST_F(DetectorTest, HandOverHandIsQuiet) {
  Reports reports;
  std::vector<DirLock> l = open_many(6);
  for (int round = 0; round < 3; ++round) {
    ASSERT_OK_AND_ASSIGN(Guard prev, l[0].acquire());
    for (std::size_t i = 1; i < l.size(); ++i) {
      ASSERT_OK_AND_ASSIGN(Guard next, l[i].acquire());
      prev = std::move(next);  // releases the one before
    }
  }
  EXPECT_TRUE(reports.seen().empty());
}

TEST_F(DetectorTest, DiamondIsQuiet) {
  Reports reports;
  std::vector<DirLock> l = open_many(4);  // 0 -> 1 -> 3, 0 -> 2 -> 3
  for (auto [x, y] : {std::pair(0, 1), std::pair(0, 2), std::pair(1, 3),
                      std::pair(2, 3), std::pair(0, 3)}) {
    ASSERT_OK_AND_ASSIGN(Guard a, l[static_cast<std::size_t>(x)].acquire());
    ASSERT_OK_AND_ASSIGN(Guard b, l[static_cast<std::size_t>(y)].acquire());
  }
  EXPECT_TRUE(reports.seen().empty());
}

TEST_F(DetectorTest, ReportModeKeepsReportingEachNewCycle) {
  // Abseil goes on after a report; so does kReport, without a blind spot.
  ScopedTierCheckMode report(TierCheckMode::kReport);
  Reports reports;
  std::vector<DirLock> l = open_many(4);
  auto nest = [&](std::size_t x, std::size_t y) {
    absl::StatusOr<Guard> a = l[x].acquire();
    absl::StatusOr<Guard> b = l[y].acquire();
    EXPECT_TRUE(a.ok() && b.ok());
  };
  nest(0, 1);
  nest(1, 0);  // reported, taken
  EXPECT_EQ(reports.seen().size(), 1u);
  nest(1, 2);
  nest(2, 1);  // a second, unrelated cycle
  EXPECT_EQ(reports.seen().size(), 2u);
  {
    // b, a (reported again: no edge was learned for it), then d under both.
    absl::StatusOr<Guard> b = l[1].acquire();
    absl::StatusOr<Guard> a = l[0].acquire();
    absl::StatusOr<Guard> d = l[3].acquire();
  }
  EXPECT_EQ(reports.seen().size(), 3u);
  // 1 -> 3 is learned too, though `a` (taken in spite of a report) was the
  // newest hold when `d` was taken.
  nest(3, 1);
  EXPECT_EQ(reports.seen().size(), 4u);
}

}  // namespace

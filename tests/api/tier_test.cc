// tests/api/tier_test.cc
//
// Tier ordering (tier.h, lock_context.h): each check mode, same-tier, the
// report, acquire_all, contexts that follow a task across threads, releases on
// other threads, the learned nesting order, and TIERLOCK_HELD.
#include "tierlock/tier.h"

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "queue/lock_entry.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/internal.h"
#include "support/status.h"
#include "support/tier_mode.h"
#include "support/wait.h"
#include "tier/tier_check.h"
#include "tierlock/dir_lock.h"
#include "tierlock/executor.h"
#include "tierlock/guard.h"
#include "tierlock/lock_context.h"

namespace {

using ::testing::HasSubstr;
using tierlock::acquire_all;
using tierlock::AcquireOptions;
using tierlock::DirLock;
using tierlock::Guard;
using tierlock::LockContext;
using tierlock::LockOptions;
using tierlock::Mode;
using tierlock::Tier;
using tierlock::TierCheckMode;
using tierlock::TierViolation;
using namespace tierlock::testing;  // NOLINT: test support vocabulary
using namespace std::chrono_literals;

constexpr Tier kWorkspace{10, "workspace"};
constexpr Tier kPackage{20, "package"};
constexpr Tier kBackend{30, "backend"};

class TierTest : public TierlockTest {
 protected:
  DirLock open_tiered(const std::string& name, std::optional<Tier> tier) {
    std::filesystem::create_directories(dir() / name);
    LockOptions options;
    options.tier = tier;
    absl::StatusOr<DirLock> lock = DirLock::open(dir() / name, options);
    EXPECT_TRUE(lock.ok()) << lock.status();
    return *std::move(lock);
  }
  // Each test sets its mode; the default (kAbort in debug builds) is
  // checked by the death test.
  ScopedTierCheckMode mode_{TierCheckMode::kFail};
};

using TierDeathTest = TierTest;

TEST_F(TierTest, IncreasingTiersAreFineAndRecorded) {
  Reports reports;
  DirLock ws = open_tiered("ws", kWorkspace);
  DirLock pkg = open_tiered("pkg", kPackage);
  ASSERT_OK_AND_ASSIGN(Guard g1, ws.acquire());
  ASSERT_OK_AND_ASSIGN(Guard g2, pkg.acquire(Mode::kShared));
  std::vector<tierlock::HeldLock> held = LockContext::current().held();
  ASSERT_EQ(held.size(), 2u);
  EXPECT_EQ(held[0].lock_file, ws.lock_file());
  EXPECT_EQ(held[0].tier, kWorkspace);
  EXPECT_EQ(held[1].lock_file, pkg.lock_file());
  EXPECT_EQ(held[1].mode, Mode::kShared);
  EXPECT_GT(held[1].where.line(), held[0].where.line());
  EXPECT_THAT(held[0].where.file_name(), HasSubstr("tier_test.cc"));
  g2 = Guard();
  EXPECT_EQ(LockContext::current().held().size(), 1u);
  ASSERT_OK(g1.release());
  EXPECT_TRUE(LockContext::current().held().empty());
  EXPECT_TRUE(reports.seen().empty());
}

TEST_F(TierTest, FailModeRefusesLowerTierWithoutTakingIt) {
  Reports reports;
  DirLock ws = open_tiered("ws", kWorkspace);
  DirLock pkg = open_tiered("pkg", kPackage);
  ASSERT_OK_AND_ASSIGN(Guard g, pkg.acquire());
  absl::StatusOr<Guard> bad = ws.acquire();
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr(ws.lock_file().string()));
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr(pkg.lock_file().string()));
  EXPECT_EQ(try_in_other_process(dir() / "ws"), kAcquired)
      << "a refused acquire must hold nothing";
  ASSERT_EQ(reports.seen().size(), 1u);
  const TierViolation v = reports.seen()[0];
  EXPECT_EQ(v.kind, TierViolation::Kind::kTierOrder);
  EXPECT_EQ(v.acquiring.lock_file, ws.lock_file());
  EXPECT_EQ(v.conflicting.lock_file, pkg.lock_file());
  EXPECT_EQ(LockContext::current().held().size(), 1u);
}

TEST_F(TierTest, AcquireThatTakesNothingLeavesNothingRecorded) {
  // The hold is recorded before the wait (so a release on another thread
  // finds it); a wait that ends without the lock must take the record back.
  Reports reports;
  DirLock ws = open_tiered("ws", kWorkspace);
  DirLock pkg = open_tiered("pkg", kPackage);
  Guard other;
  std::thread([&] {
    absl::StatusOr<Guard> got = pkg.acquire();
    ASSERT_OK(got.status());
    other = *std::move(got);
  }).join();
  ASSERT_OK_AND_ASSIGN(Guard outer, ws.acquire());

  absl::StatusOr<Guard> timed = pkg.acquire_for(20ms);
  EXPECT_EQ(timed.status().code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_EQ(LockContext::current().held().size(), 1u);

  std::stop_source stop;
  stop.request_stop();
  AcquireOptions options;
  options.stop = stop.get_token();
  absl::StatusOr<Guard> cancelled = pkg.acquire(options);
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
  ASSERT_EQ(LockContext::current().held().size(), 1u);
  EXPECT_EQ(LockContext::current().held()[0].lock_file, ws.lock_file());

  // Nothing stale is left to trip the next in-order acquire.
  ASSERT_OK(other.release());
  ASSERT_OK_AND_ASSIGN(Guard inner, pkg.acquire());
  EXPECT_EQ(LockContext::current().held().size(), 2u);
  EXPECT_TRUE(reports.seen().empty());
}

TEST_F(TierTest, ReportModeReportsAndAcquires) {
  ScopedTierCheckMode report(TierCheckMode::kReport);
  Reports reports;
  DirLock ws = open_tiered("ws", kWorkspace);
  DirLock pkg = open_tiered("pkg", kPackage);
  ASSERT_OK_AND_ASSIGN(Guard g, pkg.acquire());
  ASSERT_OK_AND_ASSIGN(Guard g2, ws.acquire());
  EXPECT_TRUE(g2.held());
  EXPECT_EQ(reports.seen().size(), 1u);
}

TEST_F(TierTest, IgnoreModeChecksNothingAndRecordsNothing) {
  ScopedTierCheckMode ignore(TierCheckMode::kIgnore);
  Reports reports;
  DirLock ws = open_tiered("ws", kWorkspace);
  DirLock pkg = open_tiered("pkg", kPackage);
  ASSERT_OK_AND_ASSIGN(Guard g, pkg.acquire());
  ASSERT_OK_AND_ASSIGN(Guard g2, ws.acquire());
  EXPECT_TRUE(reports.seen().empty());
  EXPECT_TRUE(LockContext::current().held().empty());
}

TEST_F(TierDeathTest, AbortModePrintsTheReportAndAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  DirLock ws = open_tiered("ws", kWorkspace);
  DirLock pkg = open_tiered("pkg", kPackage);
  EXPECT_DEATH(
      {
        tierlock::set_tier_check_mode(TierCheckMode::kAbort);
        absl::StatusOr<Guard> g = pkg.acquire();
        absl::StatusOr<Guard> bad = ws.acquire();
      },
      "lock order violation.*tier_test.cc");
}

TEST_F(TierTest, DefaultModeFollowsTheApplicationsBuild) {
  // The fixture changed it here; a fresh process shows the default: kAbort
  // when the helper (built like this test) has no NDEBUG, whatever the
  // library's build; else the library's own default.
#ifdef NDEBUG
  const bool debug_app = false;
#else
  const bool debug_app = true;
#endif
  RunResult r = run({helper_path(), "tier-mode", dir().string()});
  ASSERT_EQ(r.status.code, 0) << r.status.describe() << r.out;
  EXPECT_EQ(r.out, debug_app || tierlock::tier_debug_checks() ? "abort\n"
                                                              : "ignore\n");
}

TEST_F(TierTest, ChecksEnvironmentVariableChoosesTheStartingMode) {
  // Read once at load; it wins over the Debug default.
  for (auto [value, expected] :
       {std::pair("abort", "abort\n"), std::pair("fail", "fail\n"),
        std::pair("report", "report\n"), std::pair("off", "ignore\n")}) {
    ::setenv("TIERLOCK_CHECKS", value, 1);
    RunResult r = run({helper_path(), "tier-mode", dir().string()});
    ::unsetenv("TIERLOCK_CHECKS");
    ASSERT_EQ(r.status.code, 0) << r.status.describe() << r.out;
    EXPECT_EQ(r.out, expected) << "TIERLOCK_CHECKS=" << value;
  }
}

TEST_F(TierTest, SameTierTwiceIsAViolation) {
  Reports reports;
  DirLock a = open_tiered("a", kPackage);
  DirLock b = open_tiered("b", kPackage);
  ASSERT_OK_AND_ASSIGN(Guard g, a.acquire());
  absl::StatusOr<Guard> bad = b.acquire();
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(reports.seen().size(), 1u);
  EXPECT_EQ(reports.seen()[0].kind, TierViolation::Kind::kSameTier);
}

TEST_F(TierTest, UntieredLocksAreNotTierChecked) {
  Reports reports;
  DirLock pkg = open_tiered("pkg", kPackage);
  DirLock plain = open_tiered("plain", std::nullopt);
  DirLock ws = open_tiered("ws", kWorkspace);
  ASSERT_OK_AND_ASSIGN(Guard g1, pkg.acquire());
  ASSERT_OK_AND_ASSIGN(Guard g2, plain.acquire());
  // ...but the untiered lock does not hide the tiered one below it.
  EXPECT_EQ(ws.acquire().status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(reports.seen().size(), 1u);
}

TEST_F(TierTest, ReportNamesTaskBothLocksBothSitesAndTheStack) {
  Reports reports;
  DirLock ws = open_tiered("ws", kWorkspace);
  DirLock pkg = open_tiered("pkg", kPackage);
  DirLock backend = open_tiered("backend", kBackend);
  ASSERT_OK_AND_ASSIGN(Guard g1, ws.acquire());
  const int held_line = __LINE__ + 1;
  ASSERT_OK_AND_ASSIGN(Guard g2, backend.acquire());
  const int bad_line = __LINE__ + 1;
  absl::StatusOr<Guard> bad = pkg.acquire();
  ASSERT_EQ(reports.seen().size(), 1u);
  const std::string text = reports.seen()[0].to_string();
  EXPECT_THAT(text, HasSubstr(LockContext::current().name()));
  EXPECT_THAT(text, HasSubstr(pkg.lock_file().string()));
  EXPECT_THAT(text, HasSubstr(backend.lock_file().string()));
  EXPECT_THAT(text, HasSubstr("tier 20 'package'"));
  EXPECT_THAT(text, HasSubstr("tier 30 'backend'"));
  EXPECT_THAT(text, HasSubstr("tier_test.cc:" + std::to_string(held_line)));
  EXPECT_THAT(text, HasSubstr("tier_test.cc:" + std::to_string(bad_line)));
  EXPECT_THAT(text, HasSubstr("TestBody"));  // the function of each site
  EXPECT_THAT(text, HasSubstr("locks held by task"));
  EXPECT_THAT(text, HasSubstr("#1 '" + backend.lock_file().string()));
  EXPECT_EQ(reports.seen()[0].held.size(), 2u);
}

TEST_F(TierTest, TryInDeclaredTierInversionIsNotCheckedButIsRecorded) {
  // A try cannot wait, so it cannot deadlock: it is never refused for order.
  Reports reports;
  DirLock ws = open_tiered("ws", kWorkspace);
  DirLock pkg = open_tiered("pkg", kPackage);
  ASSERT_OK_AND_ASSIGN(std::optional<Guard> g, pkg.try_acquire());
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(LockContext::current().held().size(), 1u);
  ASSERT_OK_AND_ASSIGN(std::optional<Guard> low, ws.try_acquire());
  EXPECT_TRUE(low.has_value());
  EXPECT_EQ(LockContext::current().held().size(), 2u);
  EXPECT_TRUE(reports.seen().empty());
}

TEST_F(TierTest, ZeroTimeoutAcquireIsATry) {
  Reports reports;
  DirLock ws = open_tiered("ws", kWorkspace);
  DirLock pkg = open_tiered("pkg", kPackage);
  ASSERT_OK_AND_ASSIGN(Guard g, pkg.acquire());
  ASSERT_OK_AND_ASSIGN(Guard low, ws.acquire_for(0ns));
  EXPECT_TRUE(low.held());
  EXPECT_TRUE(reports.seen().empty());
  // A positive timeout can wait: it is checked like any blocking acquire.
  low = Guard();
  EXPECT_EQ(ws.acquire_for(1s).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(reports.seen().size(), 1u);
}

TEST_F(TierTest, LockableTryLockIsNotCheckedForOrder) {
  Reports reports;
  DirLock ws = open_tiered("ws", kWorkspace);
  DirLock pkg = open_tiered("pkg", kPackage);
  std::scoped_lock outer(pkg);
  ASSERT_TRUE(ws.try_lock());
  ws.unlock();
  ASSERT_TRUE(ws.try_lock_shared());
  ws.unlock_shared();
  EXPECT_TRUE(reports.seen().empty());
}

TEST_F(TierTest, ScopedLockInBothOrdersIsNotReported) {
  // std::lock locks one and only tries the others: deadlock-free by
  // construction, whatever the argument order.
  Reports reports;
  DirLock a = open_tiered("a", std::nullopt);
  DirLock b = open_tiered("b", std::nullopt);
  { std::scoped_lock both(a, b); }
  { std::scoped_lock both(b, a); }
  EXPECT_TRUE(reports.seen().empty());
}

TEST_F(TierTest, ScopedLockUnderContentionIsNotReported) {
  // The README example: `b` is held elsewhere, so std::lock takes `a`, fails
  // to try `b`, backs off, waits for `b`, then tries `a`.
  Reports reports;
  DirLock a = open_tiered("a", std::nullopt);
  DirLock b = open_tiered("b", std::nullopt);
  std::shared_ptr<tierlock::internal::LockEntry> entry_b = entry_of(b);
  std::promise<void> holding;
  std::thread h([&] {
    LockContext::Scope own(LockContext("holder"));
    absl::StatusOr<Guard> g = b.acquire();
    holding.set_value();
    // Released once the scoped_lock below waits for it.
    EXPECT_TRUE(wait_until([&] { return entry_b->waiting() > 0; }));
  });
  holding.get_future().wait();
  bool locked = false;
  try {
    std::scoped_lock both(a, b);
    locked = true;
  } catch (const std::system_error& e) {
    ADD_FAILURE() << e.what();
  }
  h.join();
  EXPECT_TRUE(locked);
  EXPECT_TRUE(reports.seen().empty());
}

TEST_F(TierTest, HoldATryBThenBThenAIsNotACycle) {
  Reports reports;
  DirLock a = open_tiered("a", std::nullopt);
  DirLock b = open_tiered("b", std::nullopt);
  {
    ASSERT_OK_AND_ASSIGN(Guard ga, a.acquire());
    ASSERT_OK_AND_ASSIGN(std::optional<Guard> gb, b.try_acquire());
    ASSERT_TRUE(gb.has_value());
  }
  ASSERT_OK_AND_ASSIGN(Guard gb, b.acquire());
  ASSERT_OK_AND_ASSIGN(Guard ga, a.acquire());
  EXPECT_TRUE(reports.seen().empty());
}

TEST_F(TierTest, LockHeldByATryGetsEdgesToLaterBlockingAcquires) {
  // Held after a try, `b` can still be part of a deadlock: the walk back
  // for edges goes past it to `a`, so c -> a is caught as well as c -> b.
  Reports reports;
  DirLock a = open_tiered("a", std::nullopt);
  DirLock b = open_tiered("b", std::nullopt);
  DirLock c = open_tiered("c", std::nullopt);
  {
    ASSERT_OK_AND_ASSIGN(Guard ga, a.acquire());
    ASSERT_OK_AND_ASSIGN(std::optional<Guard> gb, b.try_acquire());
    ASSERT_TRUE(gb.has_value());
    ASSERT_OK_AND_ASSIGN(Guard gc, c.acquire());
  }
  ASSERT_OK_AND_ASSIGN(Guard gc, c.acquire());
  EXPECT_EQ(b.acquire().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.acquire().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(reports.seen().size(), 2u);
}

TEST_F(TierTest, AllowedViolationLeavesNoBlindSpot) {
  // T1: a, b.  T2: b, a (reported, allowed), c.  T3: c, b: b -> c -> b.
  ScopedTierCheckMode report(TierCheckMode::kReport);
  Reports reports;
  DirLock a = open_tiered("a", std::nullopt);
  DirLock b = open_tiered("b", std::nullopt);
  DirLock c = open_tiered("c", std::nullopt);
  std::thread([&] {
    absl::StatusOr<Guard> ga = a.acquire();
    absl::StatusOr<Guard> gb = b.acquire();
    EXPECT_TRUE(ga.ok() && gb.ok());
  }).join();
  std::thread([&] {
    absl::StatusOr<Guard> gb = b.acquire();
    absl::StatusOr<Guard> ga = a.acquire();
    absl::StatusOr<Guard> gc = c.acquire();
    EXPECT_TRUE(gb.ok() && ga.ok() && gc.ok());
  }).join();
  ASSERT_EQ(reports.seen().size(), 1u);
  std::thread([&] {
    absl::StatusOr<Guard> gc = c.acquire();
    absl::StatusOr<Guard> gb = b.acquire();
    EXPECT_TRUE(gc.ok() && gb.ok());
  }).join();
  ASSERT_EQ(reports.seen().size(), 2u);
  const TierViolation v = reports.seen()[1];
  EXPECT_EQ(v.kind, TierViolation::Kind::kLearnedCycle);
  EXPECT_EQ(v.acquiring.lock_file, b.lock_file());
  EXPECT_EQ(v.conflicting.lock_file, c.lock_file());
}

TEST_F(TierTest, ScopeRunOnAThreadRecordsEdgesFromTheThreadsHolds) {
  // The thread cannot release `a` until the task in the Scope is done, so
  // the task taking `b` nests b inside a.
  Reports reports;
  DirLock a = open_tiered("a", std::nullopt);
  DirLock b = open_tiered("b", std::nullopt);
  {
    ASSERT_OK_AND_ASSIGN(Guard ga, a.acquire());
    LockContext task("task");
    LockContext::Scope bind(task);
    ASSERT_OK_AND_ASSIGN(Guard gb, b.acquire());
  }
  std::thread([&] {
    absl::StatusOr<Guard> gb = b.acquire();
    ASSERT_TRUE(gb.ok()) << gb.status();
    absl::StatusOr<Guard> ga = a.acquire_for(5s);
    EXPECT_EQ(ga.status().code(), absl::StatusCode::kFailedPrecondition)
        << ga.status();
  }).join();
  ASSERT_EQ(reports.seen().size(), 1u);
  EXPECT_EQ(reports.seen()[0].kind, TierViolation::Kind::kLearnedCycle);
}

TEST_F(TierTest, TaskAskingAgainFromAnotherThreadGetsTheReentryError) {
  Reports reports;
  DirLock a = open_tiered("a", std::nullopt);
  DirLock pkg = open_tiered("pkg", kPackage);
  LockContext task("task 7");
  Guard ga;
  Guard gp;
  std::thread([&] {
    LockContext::Scope bind(task);
    absl::StatusOr<Guard> g = a.acquire();
    ASSERT_TRUE(g.ok()) << g.status();
    ga = *std::move(g);
    absl::StatusOr<Guard> p = pkg.acquire(Mode::kShared);
    ASSERT_TRUE(p.ok()) << p.status();
    gp = *std::move(p);
  }).join();
  std::thread([&] {
    LockContext::Scope bind(task);
    // Without the check this waits for itself (bounded here).
    absl::StatusOr<Guard> again = a.acquire_for(3s);
    EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition)
        << again.status();
    EXPECT_THAT(std::string(again.status().message()),
                HasSubstr("already holds it"));
    absl::StatusOr<Guard> tiered = pkg.acquire_for(3s, Mode::kShared);
    EXPECT_EQ(tiered.status().code(), absl::StatusCode::kFailedPrecondition)
        << tiered.status();
    EXPECT_THAT(std::string(tiered.status().message()),
                HasSubstr("already holds it"));
  }).join();
  EXPECT_TRUE(reports.seen().empty()) << "re-entry is no lock-order report";
}

TEST_F(TierDeathTest, TieredReentryIsAnErrorEvenInAbortMode) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  DirLock pkg = open_tiered("pkg", kPackage);
  EXPECT_EXIT(
      {
        tierlock::set_tier_check_mode(TierCheckMode::kAbort);
        absl::StatusOr<Guard> g = pkg.acquire();
        absl::StatusOr<Guard> again = pkg.acquire();
        const bool ok =
            g.ok() &&
            again.status().code() == absl::StatusCode::kFailedPrecondition &&
            absl::StrContains(again.status().message(), "already holds it");
        std::_Exit(ok ? 0 : 3);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(TierTest, ReentryIsKeyedOnANeverReusedThreadIdentity) {
  // A Guard handed over by a thread that exited: a new thread that happens
  // to get the same std::thread::id does not hold it.
  DirLock a = open_tiered("a", std::nullopt);
  Guard ga;
  std::thread::id first;
  std::thread t([&] {
    first = std::this_thread::get_id();
    absl::StatusOr<Guard> g = a.acquire();
    ASSERT_TRUE(g.ok()) << g.status();
    ga = *std::move(g);
  });
  t.join();
  bool reused = false;
  for (int i = 0; i < 200 && !reused; ++i) {
    std::thread([&] {
      if (std::this_thread::get_id() != first) return;
      reused = true;
      absl::StatusOr<std::optional<Guard>> g = a.try_acquire();
      ASSERT_TRUE(g.ok()) << g.status();
      EXPECT_FALSE(g->has_value()) << "held by the Guard, not by this thread";
    }).join();
  }
  if (!reused) GTEST_SKIP() << "the system did not reuse the thread id";
}

TEST_F(TierTest, ContextFollowsTheTaskAcrossThreads) {
  Reports reports;
  DirLock pkg = open_tiered("pkg", kPackage);
  DirLock ws = open_tiered("ws", kWorkspace);
  DirLock backend = open_tiered("backend", kBackend);
  LockContext task("task 42");
  Guard held;
  std::thread([&] {
    LockContext::Scope bind(task);
    absl::StatusOr<Guard> g = pkg.acquire();
    ASSERT_TRUE(g.ok()) << g.status();
    held = *std::move(g);
  }).join();
  EXPECT_TRUE(LockContext::current().held().empty())
      << "the test thread's own context holds nothing";
  std::thread([&] {
    LockContext::Scope bind(task);
    EXPECT_EQ(ws.acquire().status().code(),
              absl::StatusCode::kFailedPrecondition);
    absl::StatusOr<Guard> up = backend.acquire();
    EXPECT_TRUE(up.ok()) << up.status();
  }).join();
  // Not bound here: this thread's context holds nothing, so tier 10 is fine.
  ASSERT_OK_AND_ASSIGN(Guard mine, ws.acquire());
  ASSERT_EQ(reports.seen().size(), 1u);
  EXPECT_EQ(reports.seen()[0].task, "task 42");
  EXPECT_EQ(task.held().size(), 1u);
}

TEST_F(TierTest, ScopesNestAndRestore) {
  LockContext outer("outer");
  LockContext inner("inner");
  const LockContext own = LockContext::current();
  {
    LockContext::Scope a(outer);
    EXPECT_EQ(LockContext::current(), outer);
    {
      LockContext::Scope b(inner);
      EXPECT_EQ(LockContext::current(), inner);
    }
    EXPECT_EQ(LockContext::current(), outer);
  }
  EXPECT_EQ(LockContext::current(), own);
}

// Acquires find their context through a per-thread cache; binding and
// unbinding a Scope must move it, in both directions.
TEST_F(TierTest, AcquiresRecordInTheInnermostScopeAndAgainAfterIt) {
  DirLock ws = open_tiered("ws", kWorkspace);
  DirLock pkg = open_tiered("pkg", kPackage);
  DirLock backend = open_tiered("backend", kBackend);
  DirLock ws2 = open_tiered("ws2", kWorkspace);
  LockContext outer("outer");
  LockContext inner("inner");
  const LockContext own = LockContext::current();
  ASSERT_OK_AND_ASSIGN(Guard mine, ws.acquire());
  {
    LockContext::Scope a(outer);
    ASSERT_OK_AND_ASSIGN(Guard in_outer, pkg.acquire());
    {
      LockContext::Scope b(inner);
      ASSERT_OK_AND_ASSIGN(Guard in_inner, ws2.acquire());
      EXPECT_EQ(inner.held().size(), 1u);
    }
    EXPECT_TRUE(inner.held().empty());
    ASSERT_EQ(outer.held().size(), 1u);
    EXPECT_EQ(outer.held()[0].tier, kPackage);
  }
  EXPECT_TRUE(outer.held().empty());
  ASSERT_EQ(own.held().size(), 1u);
  EXPECT_EQ(own.held()[0].tier, kWorkspace);
  // Back in the thread's own context: tier 30 above the held 10 is in order.
  ASSERT_OK_AND_ASSIGN(Guard up, backend.acquire());
  EXPECT_EQ(own.held().size(), 2u);
}

TEST_F(TierTest, ReleaseOnAnotherThreadLeavesTheTakingContext) {
  Reports reports;
  DirLock pkg = open_tiered("pkg", kPackage);
  DirLock ws = open_tiered("ws", kWorkspace);
  ASSERT_OK_AND_ASSIGN(Guard g, pkg.acquire());
  std::thread([g = std::move(g)]() mutable {
    // The releasing thread's own context never held it.
    EXPECT_TRUE(LockContext::current().held().empty());
    EXPECT_OK(g.release());
  }).join();
  EXPECT_TRUE(LockContext::current().held().empty());
  ASSERT_OK_AND_ASSIGN(Guard g2, ws.acquire());
  EXPECT_TRUE(reports.seen().empty());
}

TEST_F(TierTest, AsyncAcquireChecksAndRecordsInTheCallersContext) {
  Reports reports;
  DirLock pkg = open_tiered("pkg", kPackage);
  DirLock ws = open_tiered("ws", kWorkspace);
  tierlock::WorkerPool pool(1);
  AcquireOptions on_pool;
  on_pool.pool = &pool;
  LockContext task("async task");
  LockContext::Scope bind(task);
  absl::StatusOr<Guard> g = pkg.acquire_async(on_pool).get();
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(task.held().size(), 1u);
  absl::StatusOr<Guard> bad = ws.acquire_async(on_pool).get();
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(reports.seen().size(), 1u);
  EXPECT_EQ(try_in_other_process(dir() / "ws"), kAcquired);
}

TEST_F(TierTest, LockableMembersAreCheckedAndForgottenAtUnlock) {
  Reports reports;
  DirLock pkg = open_tiered("pkg", kPackage);
  DirLock ws = open_tiered("ws", kWorkspace);
  {
    std::scoped_lock lock(pkg);
    EXPECT_EQ(LockContext::current().held().size(), 1u);
    try {
      ws.lock();
      ADD_FAILURE() << "lock() took a lower tier";
      ws.unlock();
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::resource_deadlock_would_occur);
      EXPECT_THAT(e.what(), HasSubstr(ws.lock_file().string()));
    }
  }
  EXPECT_TRUE(LockContext::current().held().empty());
  std::scoped_lock lock(ws);
  EXPECT_EQ(reports.seen().size(), 1u);
}

TEST_F(TierTest, AcquireAllTakesSameTierLocksInPathOrderAndReturnsInputOrder) {
  Reports reports;
  std::vector<DirLock> locks = {open_tiered("c", kPackage),
                                open_tiered("a", kPackage),
                                open_tiered("b", kPackage)};
  ASSERT_OK_AND_ASSIGN(std::vector<Guard> guards, acquire_all(locks));
  ASSERT_EQ(guards.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(guards[i].lock_file(), locks[i].lock_file());
    EXPECT_TRUE(guards[i].held());
  }
  std::vector<tierlock::HeldLock> held = LockContext::current().held();
  ASSERT_EQ(held.size(), 3u);
  EXPECT_EQ(held[0].lock_file, dir() / "a" / ".lock");
  EXPECT_EQ(held[1].lock_file, dir() / "b" / ".lock");
  EXPECT_EQ(held[2].lock_file, dir() / "c" / ".lock");
  EXPECT_TRUE(reports.seen().empty());
  // A further lock of the same tier after the call is a violation again.
  DirLock d = open_tiered("d", kPackage);
  EXPECT_EQ(d.acquire().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TierTest, AcquireAllInOppositeInputOrdersNeverDeadlocks) {
  std::vector<DirLock> forward = {open_tiered("a", kPackage),
                                  open_tiered("b", kPackage),
                                  open_tiered("c", kPackage)};
  std::vector<DirLock> backward(forward.rbegin(), forward.rend());
  auto loop = [](std::vector<DirLock>& locks) {
    for (int i = 0; i < 300; ++i) {
      absl::StatusOr<std::vector<Guard>> g = acquire_all(locks);
      ASSERT_TRUE(g.ok()) << g.status();
    }
  };
  std::thread t1(loop, std::ref(forward));
  std::thread t2(loop, std::ref(backward));
  t1.join();
  t2.join();
}

TEST_F(TierTest, AcquireAllIsAllOrNothing) {
  std::vector<DirLock> locks = {open_tiered("a", kPackage),
                                open_tiered("b", kPackage),
                                open_tiered("c", kPackage)};
  Process holder = start_holder(dir() / "b");
  ASSERT_EQ(holder.read_line(), "locked");
  AcquireOptions options;
  options.timeout = 50ms;
  absl::StatusOr<std::vector<Guard>> all = acquire_all(locks, options);
  ASSERT_EQ(all.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(all.status().message()), HasSubstr("lock 2 of 3"));
  EXPECT_THAT(std::string(all.status().message()),
              HasSubstr((dir() / "b" / ".lock").string()));
  EXPECT_EQ(try_in_other_process(dir() / "a"), kAcquired);
  EXPECT_EQ(try_in_other_process(dir() / "c"), kAcquired);
  EXPECT_TRUE(LockContext::current().held().empty());
  EXPECT_EQ(stop_holder(holder).code, 0);
}

TEST_F(TierTest, AcquireAllChecksTheFirstLockAgainstHeldTiers) {
  Reports reports;
  DirLock backend = open_tiered("backend", kBackend);
  std::vector<DirLock> locks = {open_tiered("a", kPackage),
                                open_tiered("b", kPackage)};
  ASSERT_OK_AND_ASSIGN(Guard g, backend.acquire());
  absl::StatusOr<std::vector<Guard>> all = acquire_all(locks);
  EXPECT_EQ(all.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(try_in_other_process(dir() / "a"), kAcquired);
  EXPECT_EQ(reports.seen().size(), 1u);
}

TEST_F(TierTest, AcquireAllRejectsTheSameLockTwice) {
  DirLock a = open_tiered("a", kPackage);
  std::vector<DirLock> locks = {a, open_tiered("b", kPackage), a};
  absl::StatusOr<std::vector<Guard>> all = acquire_all(locks);
  EXPECT_EQ(all.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(all.status().message()),
              HasSubstr(a.lock_file().string()));
  EXPECT_EQ(try_in_other_process(dir() / "a"), kAcquired);
}

TEST_F(TierTest, LearnedCycleWithoutTiersIsReportedBeforeBlocking) {
  Reports reports;
  DirLock a = open_tiered("a", std::nullopt);
  DirLock b = open_tiered("b", std::nullopt);
  int outer_line = 0;
  int inner_line = 0;
  {
    outer_line = __LINE__ + 1;
    ASSERT_OK_AND_ASSIGN(Guard ga, a.acquire());
    inner_line = __LINE__ + 1;
    ASSERT_OK_AND_ASSIGN(Guard gb, b.acquire());
  }
  EXPECT_TRUE(reports.seen().empty());
  ASSERT_OK_AND_ASSIGN(Guard gb, b.acquire());
  // Another thread holds `a`: if the check came after blocking, this would
  // hang instead of failing.
  std::promise<void> holding;
  std::promise<void> done;
  std::thread other([&] {
    tierlock::LockContext::Scope own(LockContext("other"));
    absl::StatusOr<Guard> g = a.acquire();
    holding.set_value();
    done.get_future().wait();
  });
  holding.get_future().wait();
  const int bad_line = __LINE__ + 1;
  absl::StatusOr<Guard> bad = a.acquire();
  done.set_value();
  other.join();
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(reports.seen().size(), 1u);
  const TierViolation v = reports.seen()[0];
  EXPECT_EQ(v.kind, TierViolation::Kind::kLearnedCycle);
  EXPECT_EQ(v.acquiring.lock_file, a.lock_file());
  EXPECT_EQ(v.conflicting.lock_file, b.lock_file());
  ASSERT_EQ(v.earlier.size(), 1u);
  EXPECT_EQ(v.earlier[0].outer.lock_file, a.lock_file());
  EXPECT_EQ(v.earlier[0].inner.lock_file, b.lock_file());
  const std::string text = v.to_string();
  EXPECT_THAT(text, HasSubstr("tier_test.cc:" + std::to_string(outer_line)));
  EXPECT_THAT(text, HasSubstr("tier_test.cc:" + std::to_string(inner_line)));
  EXPECT_THAT(text, HasSubstr("tier_test.cc:" + std::to_string(bad_line)));
  EXPECT_THAT(text, HasSubstr("opposite order was seen before"));
}

TEST_F(TierTest, LearnedCycleThroughAChainOfThreeLocks) {
  Reports reports;
  DirLock a = open_tiered("a", std::nullopt);
  DirLock b = open_tiered("b", std::nullopt);
  DirLock c = open_tiered("c", std::nullopt);
  {
    ASSERT_OK_AND_ASSIGN(Guard ga, a.acquire());
    ASSERT_OK_AND_ASSIGN(Guard gb, b.acquire());
  }
  {
    ASSERT_OK_AND_ASSIGN(Guard gb, b.acquire());
    ASSERT_OK_AND_ASSIGN(Guard gc, c.acquire());
  }
  ASSERT_OK_AND_ASSIGN(Guard gc, c.acquire());
  EXPECT_EQ(a.acquire().status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(reports.seen().size(), 1u);
  EXPECT_EQ(reports.seen()[0].earlier.size(), 2u);  // a -> b -> c
}

TEST_F(TierTest, HardLinkedLockFileIsOneNodeInTheLearnedOrder) {
  // One lock reached through two names: nesting it through either is one
  // order. The first handle is gone (and its registry entry with it) before
  // the second name is opened, so only the graph can tie the two together.
  Reports reports;
  DirLock b = open_tiered("b", std::nullopt);
  {
    DirLock a = open_tiered("a", std::nullopt);
    ASSERT_OK_AND_ASSIGN(Guard ga, a.acquire());
    ASSERT_OK_AND_ASSIGN(Guard gb, b.acquire());
  }
  std::filesystem::create_directories(dir() / "link");
  std::filesystem::create_hard_link(dir() / "a" / ".lock",
                                    dir() / "link" / ".lock");
  DirLock link = open_tiered("link", std::nullopt);
  ASSERT_OK_AND_ASSIGN(Guard gb, b.acquire());
  EXPECT_EQ(link.acquire().status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(reports.seen().size(), 1u);
  EXPECT_EQ(reports.seen()[0].kind, TierViolation::Kind::kLearnedCycle);
}

TEST_F(TierTest, InodeReusedAtAnotherPathIsANewNode) {
  // The file first seen is gone: a new file with its identity is new.
  Reports reports;
  DirLock b = open_tiered("b", std::nullopt);
  {
    DirLock a = open_tiered("a", std::nullopt);
    ASSERT_OK_AND_ASSIGN(Guard ga, a.acquire());
    ASSERT_OK_AND_ASSIGN(Guard gb, b.acquire());
  }
  // Moved away, not deleted: the same identity at a new path, with the old
  // path naming nothing, is what a reused inode number looks like.
  std::filesystem::create_directories(dir() / "moved");
  std::filesystem::rename(dir() / "a" / ".lock", dir() / "moved" / ".lock");
  DirLock moved = open_tiered("moved", std::nullopt);
  ASSERT_OK_AND_ASSIGN(Guard gb, b.acquire());
  ASSERT_OK_AND_ASSIGN(Guard gm, moved.acquire());
  EXPECT_TRUE(reports.seen().empty());
}

TEST_F(TierTest, RepeatedConsistentNestingIsNotReported) {
  Reports reports;
  DirLock a = open_tiered("a", std::nullopt);
  DirLock b = open_tiered("b", std::nullopt);
  for (int i = 0; i < 100; ++i) {
    ASSERT_OK_AND_ASSIGN(Guard ga, a.acquire());
    ASSERT_OK_AND_ASSIGN(Guard gb, b.acquire(Mode::kShared));
  }
  EXPECT_TRUE(reports.seen().empty());
}

// TIERLOCK_HELD: the parent's tiered holds.
class HeldEnvTest : public TierTest {
 protected:
  void TearDown() override {
    ::unsetenv("TIERLOCK_HELD");
    tierlock::internal::reset_inherited_holds_for_testing();
    TierTest::TearDown();
  }
  void set_env(const std::string& value) {
    ::setenv("TIERLOCK_HELD", value.c_str(), 1);
    tierlock::internal::reset_inherited_holds_for_testing();
  }
};

// The codec itself: tier_env_test.cc.

TEST_F(HeldEnvTest, ParentsHoldsAreCheckedAndExported) {
  Reports reports;
  set_env("1;20,x,4242,package,/parent/pkg/.lock");
  std::vector<tierlock::HeldLock> inherited = LockContext::inherited();
  ASSERT_EQ(inherited.size(), 1u);
  EXPECT_EQ(inherited[0].inherited_from_pid, 4242);
  DirLock ws = open_tiered("ws", kWorkspace);
  absl::StatusOr<Guard> bad = ws.acquire();
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(reports.seen().size(), 1u);
  EXPECT_EQ(reports.seen()[0].conflicting.inherited_from_pid, 4242);
  EXPECT_THAT(reports.seen()[0].to_string(),
              HasSubstr("held by the parent process, pid 4242"));

  DirLock backend = open_tiered("backend", kBackend);
  ASSERT_OK_AND_ASSIGN(Guard g, backend.acquire());
  tierlock::internal::ParsedHeldEnv parsed =
      tierlock::internal::parse_held_env(LockContext::current().held_env());
  EXPECT_THAT(parsed.problems, ::testing::IsEmpty());
  const std::vector<tierlock::internal::InheritedHold>& exported = parsed.holds;
  ASSERT_EQ(exported.size(), 2u);
  EXPECT_EQ(exported[0].pid, 4242);
  EXPECT_EQ(exported[1].level, 30);
  EXPECT_EQ(exported[1].name, "backend");
  EXPECT_EQ(exported[1].lock_file, backend.lock_file().string());
}

TEST_F(HeldEnvTest, MalformedEntryIsIgnoredWithOneWarningAndTheRestChecked) {
  Reports reports;
  set_env("1;garbage;20,x,4242,package,/parent/pkg/.lock");
  ::testing::internal::CaptureStderr();
  ASSERT_EQ(LockContext::inherited().size(), 1u);
  DirLock ws = open_tiered("ws", kWorkspace);
  EXPECT_EQ(ws.acquire().status().code(),
            absl::StatusCode::kFailedPrecondition);
  DirLock backend = open_tiered("backend", kBackend);
  ASSERT_OK_AND_ASSIGN(Guard g, backend.acquire());
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(err,
              HasSubstr("tierlock: ignoring TIERLOCK_HELD entry 1 'garbage'"));
  EXPECT_EQ(err.find("entry 1"), err.rfind("entry 1"))
      << "warned more than once: " << err;
  EXPECT_EQ(reports.seen().size(), 1u);
}

TEST_F(HeldEnvTest, ChildProcessSeesTheParentsStack) {
  DirLock pkg = open_tiered("pkg", kPackage);
  DirLock ws = open_tiered("ws", kWorkspace);
  ASSERT_OK_AND_ASSIGN(Guard g, pkg.acquire());
  // The child (tl_helper) tries the workspace tier with TIERLOCK_HELD set
  // from this context: it must be refused there, in the child.
  RunResult r =
      run({"/usr/bin/env", "TIERLOCK_HELD=" + LockContext::current().held_env(),
           helper_path(), "tier-try", (dir() / "ws").string(), "10"});
  EXPECT_EQ(r.status.code, 3) << r.status.describe() << "\n" << r.out;
  EXPECT_THAT(r.out, HasSubstr("lock order violation"));
  EXPECT_THAT(r.out, HasSubstr(pkg.lock_file().string()));
  RunResult fine =
      run({"/usr/bin/env", "TIERLOCK_HELD=" + LockContext::current().held_env(),
           helper_path(), "tier-try", (dir() / "ws").string(), "30"});
  EXPECT_EQ(fine.status.code, 0) << fine.status.describe() << "\n" << fine.out;
}

}  // namespace

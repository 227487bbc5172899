// tests/unit/tier_env_test.cc
//
// TIERLOCK_HELD (src/tier/tier_env.h): the writer and the reader accept the
// same entries, a bad entry costs only itself, the limits keep the first
// entries and say so; and the tier-order report escapes what it shows. The last
// tests drive the real `tierlock` binary (TIERLOCK_CLI_PATH), parent and
// child, end to end.
#include "tier/tier_env.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/tier_mode.h"
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"
#include "tierlock/lock_context.h"
#include "tierlock/tier.h"

#ifndef TIERLOCK_CLI_PATH
#define TIERLOCK_CLI_PATH ""
#endif

namespace {

using ::testing::AllOf;
using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;
using tierlock::DirLock;
using tierlock::Guard;
using tierlock::LockContext;
using tierlock::LockOptions;
using tierlock::Mode;
using tierlock::Tier;
using tierlock::TierCheckMode;
using tierlock::TierViolation;
using tierlock::internal::format_held_env;
using tierlock::internal::InheritedHold;
using tierlock::internal::kMaxHeldEnvBytes;
using tierlock::internal::kMaxHeldEnvEntries;
using tierlock::internal::kMaxHeldNameBytes;
using tierlock::internal::parse_held_env;
using tierlock::internal::ParsedHeldEnv;
using namespace tierlock::testing;  // NOLINT: test support vocabulary

InheritedHold hold(int level, std::string name, std::string path,
                   std::int64_t pid = 1234, Mode mode = Mode::kExclusive) {
  return InheritedHold{level, std::move(name), mode, pid, std::move(path)};
}

std::vector<int> levels(const std::vector<InheritedHold>& holds) {
  std::vector<int> out;
  for (const InheritedHold& h : holds) out.push_back(h.level);
  return out;
}

bool valid_utf8_prefix_cut(const std::string& s) {
  // No dangling lead byte before the "..." that fit_held_entry appends.
  const std::string body = s.substr(0, s.size() - 3);
  std::size_t i = 0;
  while (i < body.size()) {
    const auto c = static_cast<unsigned char>(body[i]);
    const std::size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (i + len > body.size()) return false;
    i += len;
  }
  return true;
}

TEST(HeldEnvCodecTest, RoundTripsAwkwardCharacters) {
  const std::vector<InheritedHold> holds = {
      hold(10, "work;space,%", "/w s/a;b,c%d/.lock"),
      hold(-3, "", "/x/\n/\x1b[31m.lock", 99, Mode::kShared),
      hold(7, std::string("nul\0in name", 11), "/p/.lock")};
  ParsedHeldEnv back = parse_held_env(format_held_env(holds));
  EXPECT_THAT(back.problems, IsEmpty());
  EXPECT_EQ(back.holds, holds);
}

// The writer once passed a 300-byte name that the reader (256 at most)
// refused, switching the child's checks off.
TEST(HeldEnvCodecTest, LongTierNameIsPassedAndReadBack) {
  const std::vector<InheritedHold> holds = {
      hold(7, std::string(300, 'n'), "/b/.lock"),
      hold(9, std::string(kMaxHeldNameBytes, 'm'), "/c/.lock")};
  ParsedHeldEnv back = parse_held_env(format_held_env(holds));
  EXPECT_THAT(back.problems, IsEmpty());
  EXPECT_EQ(back.holds, holds);
}

TEST(HeldEnvCodecTest,
     NameOverTheLimitIsCutAtACharacterBoundaryKeepingTheLevel) {
  std::string name;
  while (name.size() < 3 * kMaxHeldNameBytes) name += "\xc3\xa9";  // é
  ParsedHeldEnv back =
      parse_held_env(format_held_env({hold(7, name, "/b/.lock")}));
  EXPECT_THAT(back.problems, IsEmpty());
  ASSERT_THAT(back.holds, SizeIs(1));
  EXPECT_EQ(back.holds[0].level, 7);
  EXPECT_LE(back.holds[0].name.size(), kMaxHeldNameBytes);
  EXPECT_THAT(back.holds[0].name, EndsWith("..."));
  EXPECT_TRUE(valid_utf8_prefix_cut(back.holds[0].name)) << back.holds[0].name;
}

TEST(HeldEnvCodecTest, WriterLeavesOutOnlyWhatTheReaderWouldRefuse) {
  ParsedHeldEnv back = parse_held_env(
      format_held_env({hold(1, "a", "/a/.lock"), hold(2, "relative", "b/.lock"),
                       hold(3, "nopid", "/c/.lock", 0),
                       hold(4, "nul", std::string("/d\0/.lock", 9)),
                       hold(5, "e", "/e/.lock")}));
  EXPECT_THAT(levels(back.holds), ElementsAre(1, 5));
  EXPECT_THAT(back.problems,
              ElementsAre(HasSubstr("the parent left 3 of its holds out")));
}

TEST(HeldEnvCodecTest, BadEntryDropsOnlyThatEntryAndNamesIt) {
  ParsedHeldEnv parsed =
      parse_held_env("1;10,x,1,n,/p;ten,x,1,n,/q;20,s,2,m,/r");
  EXPECT_THAT(levels(parsed.holds), ElementsAre(10, 20));
  EXPECT_THAT(parsed.problems,
              ElementsAre(AllOf(HasSubstr("entry 2 'ten,x,1,n,/q'"),
                                HasSubstr("LEVEL is not a decimal int"))));
}

TEST(HeldEnvCodecTest, EachMalformedEntryIsDroppedWithAReason) {
  for (const char* bad :
       {"10,x,1,n", "ten,x,1,n,/p", "+10,x,1,n,/p", " 10,x,1,n,/p",
        "10,q,1,n,/p", "10,x,0,n,/p", "10,x,-5,n,/p", "10,x,1,n,relative",
        "10,x,1,%zz,/p", "10,x,1,n,/p%", "10,x,1,n,/p%0", "10,x,1,n,",
        "10,x,1,n,/p%00", "99999999999999999999,x,1,n,/p", "10,x,1,n,/p,extra",
        "", "+x"}) {
    const std::string value = std::string("1;") + bad + ";5,x,1,ok,/ok";
    ParsedHeldEnv parsed = parse_held_env(value);
    EXPECT_THAT(levels(parsed.holds), ElementsAre(5)) << value;
    EXPECT_THAT(parsed.problems, ElementsAre(HasSubstr("entry 1 '"))) << value;
  }
}

TEST(HeldEnvCodecTest, UnknownVersionDropsEverythingWithOneReason) {
  ParsedHeldEnv parsed = parse_held_env("2;10,x,1,n,/p");
  EXPECT_THAT(parsed.holds, IsEmpty());
  EXPECT_THAT(parsed.problems, ElementsAre(HasSubstr("unknown version '2'")));
  EXPECT_THAT(parse_held_env("").problems, IsEmpty());
}

TEST(HeldEnvCodecTest, MoreEntriesThanTheLimitKeepsTheFirstAndSaysSo) {
  std::string value = "1";
  for (std::size_t i = 0; i < kMaxHeldEnvEntries + 6; ++i) {
    value += ";" + std::to_string(i) + ",x,1,n,/p";
  }
  ParsedHeldEnv parsed = parse_held_env(value);
  ASSERT_THAT(parsed.holds, SizeIs(kMaxHeldEnvEntries));
  EXPECT_EQ(parsed.holds.front().level, 0);
  EXPECT_EQ(parsed.holds.back().level, int{kMaxHeldEnvEntries} - 1);
  EXPECT_THAT(parsed.problems,
              ElementsAre(AllOf(HasSubstr("ignoring 6 TIERLOCK_HELD entries "
                                          "past its limits"),
                                HasSubstr("kept the first 64"))));
}

TEST(HeldEnvCodecTest, ValueOverTheByteLimitKeepsTheEntriesWithinIt) {
  const std::string path = "/" + std::string(4000, 'p');
  std::string value = "1";
  int n = 0;
  while (value.size() < kMaxHeldEnvBytes + 10000) {
    value += ";" + std::to_string(n++) + ",x,1,n," + path;
  }
  ParsedHeldEnv parsed = parse_held_env(value);
  // "1" + 10 entries of 4010 bytes + 6 of 4011 end at 64167; the 17th
  // would end past 65536.
  EXPECT_EQ(parsed.holds.size(), 16u);
  EXPECT_THAT(parsed.problems, ElementsAre(HasSubstr("past its limits")));
}

TEST(HeldEnvCodecTest,
     WriterKeepsTheFirstHoldsWithinTheLimitsAndCountsTheRest) {
  std::vector<InheritedHold> holds;
  for (int i = 0; i < 70; ++i) holds.push_back(hold(i, "n", "/p/.lock"));
  const std::string value = format_held_env(holds);
  EXPECT_LE(value.size(), kMaxHeldEnvBytes);
  ParsedHeldEnv parsed = parse_held_env(value);
  EXPECT_EQ(parsed.holds,
            std::vector<InheritedHold>(holds.begin(),
                                       holds.begin() + kMaxHeldEnvEntries));
  EXPECT_THAT(parsed.problems,
              ElementsAre(HasSubstr("the parent left 6 of its holds out")));

  // The byte limit: long paths, few entries.
  holds.clear();
  for (int i = 0; i < 40; ++i) {
    holds.push_back(hold(i, "n", "/" + std::string(4000, ';')));  // 3x escaped
  }
  const std::string big = format_held_env(holds);
  EXPECT_LE(big.size(), kMaxHeldEnvBytes);
  parsed = parse_held_env(big);
  EXPECT_THAT(levels(parsed.holds), ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(parsed.problems,
              ElementsAre(HasSubstr("the parent left 35 of its holds out")));
}

TEST(HeldEnvCodecTest, ProblemLinesShowTheEntryEscaped) {
  ParsedHeldEnv parsed = parse_held_env("1;10,x,1,n\x1b[31mRED\xc2\x9b,/p");
  ASSERT_THAT(parsed.problems, SizeIs(1));
  EXPECT_THAT(parsed.problems[0], HasSubstr("n\\x1b[31mRED\\u009b"));
  EXPECT_EQ(parsed.problems[0].find('\x1b'), std::string::npos);
  // A long entry is shown cut.
  parsed = parse_held_env("1;" + std::string(100000, 'z'));
  ASSERT_THAT(parsed.problems, SizeIs(1));
  EXPECT_LT(parsed.problems[0].size(), 300u);
}

class TierEnvTest : public TierlockTest {
 protected:
  void SetUp() override {
    TierlockTest::SetUp();
    mode_.emplace(TierCheckMode::kFail);
    tierlock::set_tier_violation_handler([](const TierViolation&) {});
  }
  void TearDown() override {
    ::unsetenv("TIERLOCK_HELD");
    tierlock::internal::reset_inherited_holds_for_testing();
    tierlock::set_tier_violation_handler({});
    mode_.reset();
    TierlockTest::TearDown();
  }
  void set_env(const std::string& value) {
    ::setenv("TIERLOCK_HELD", value.c_str(), 1);
    tierlock::internal::reset_inherited_holds_for_testing();
  }
  DirLock open_tiered(const std::string& name, Tier tier) {
    std::filesystem::create_directories(dir() / name);
    LockOptions options;
    options.tier = tier;
    absl::StatusOr<DirLock> lock = DirLock::open(dir() / name, options);
    EXPECT_TRUE(lock.ok()) << lock.status();
    return *std::move(lock);
  }
  std::optional<ScopedTierCheckMode> mode_;
};

// Decision: the entry of a pid that has exited is kept. With the lock's
// descriptor inherited by the command, the lock may outlive the pid named,
// and a pid says nothing reliable anyway (it can be reused).
TEST_F(TierEnvTest, EntryOfADeadPidIsStillChecked) {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  int st = 0;
  ASSERT_EQ(::waitpid(child, &st, 0), child);
  set_env(format_held_env({hold(20, "package", "/parent/pkg/.lock", child)}));
  DirLock ws = open_tiered("ws", Tier{10, "workspace"});
  EXPECT_EQ(ws.acquire().status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(TierEnvTest, ReportEscapesTierNamesPathsAndTaskNames) {
  std::vector<TierViolation> seen;
  tierlock::set_tier_violation_handler(
      [&](const TierViolation& v) { seen.push_back(v); });
  set_env(format_held_env({hold(20, "db\x1b[31mRED", "/par\x1b]0;x\x07/.lock"),
                           hold(30, "bidi\xe2\x80\xae", "/p2/.lock")}));
  DirLock ws = open_tiered("ws\x1b[2J", Tier{10, "work\x1b[1mspace"});
  LockContext task("task\x1b[5m");
  LockContext::Scope bind(task);
  absl::StatusOr<Guard> got = ws.acquire();
  ASSERT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_THAT(seen, SizeIs(1));
  for (const std::string& text :
       {seen[0].to_string(), std::string(got.status().message())}) {
    EXPECT_EQ(text.find('\x1b'), std::string::npos) << text;
    EXPECT_EQ(text.find('\x07'), std::string::npos) << text;
    EXPECT_THAT(text, HasSubstr("ws\\x1b[2J"));
    EXPECT_THAT(text, HasSubstr("work\\x1b[1mspace"));
    EXPECT_THAT(text,
                AnyOf(HasSubstr("db\\x1b[31mRED"), HasSubstr("bidi\\u202e")));
  }
  EXPECT_THAT(seen[0].to_string(), HasSubstr("task\\x1b[5m"));
  EXPECT_THAT(seen[0].to_string(), HasSubstr("/par\\x1b]0;x\\x07/.lock"));
}

// ------------------------------------------------------------ end to end

std::string cli_path() { return TIERLOCK_CLI_PATH; }

class TierEnvCliTest : public TierlockTest {
 protected:
  void SetUp() override {
    TierlockTest::SetUp();
    if (cli_path().empty()) GTEST_SKIP() << "tierlock_cli is not built";
    std::filesystem::create_directories(dir() / "A");
    std::filesystem::create_directories(dir() / "B");
  }
  // `tierlock run --tier OUTER B -- tierlock run --tier 3 A -- echo ran`,
  // stdout and stderr together, then "exit=N" (the outer run's status).
  RunResult nested(const std::string& outer_tier) {
    return run({"/bin/sh", "-c",
                "\"$0\" run --tier \"$1\" \"$2\" -- \"$0\" run --tier 3 \"$3\" "
                "-- echo ran 2>&1; echo \"exit=$?\"",
                cli_path(), outer_tier, (dir() / "B").string(),
                (dir() / "A").string()});
  }
};

TEST_F(TierEnvCliTest,
       LongTierNameInTheParentStillRefusesALowerTierInTheChild) {
  RunResult r = nested("7:" + std::string(300, 'n'));
  EXPECT_THAT(r.out, Not(HasSubstr("ran\n"))) << r.out;
  EXPECT_THAT(r.out, HasSubstr("exit=1")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("lock order violation")) << r.out;
  EXPECT_THAT(r.out, HasSubstr(std::string(300, 'n'))) << r.out;
  EXPECT_THAT(r.out, Not(HasSubstr("TIERLOCK_HELD entry"))) << r.out;
}

TEST_F(TierEnvCliTest, TierReportEscapesAnEscapeInTheParentsTierName) {
  RunResult r = nested("7:db\x1b[31mRED");
  EXPECT_THAT(r.out, Not(HasSubstr("ran\n"))) << r.out;
  EXPECT_THAT(r.out, HasSubstr("exit=1")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("db\\x1b[31mRED")) << r.out;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
}

}  // namespace

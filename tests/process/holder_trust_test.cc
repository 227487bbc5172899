// tests/process/holder_trust_test.cc
//
// Holder records that another user writes are never believed (tierlock/
// holder.h, docs/design.md "Holder records"): a hostile user (nobody, when
// the tests run as root, as CI does) prepares a shared directory's records
// directory and forges a record naming a real victim process; the victim's
// holder must be reported from /proc only. And the writer's side: where
// tierlock puts its records, with which modes.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "holders/holder_record.h"
#include "platform/platform.h"
#include "support/child.h"
#include "support/files.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/subprocess.h"
#include "support/unprivileged.h"
#include "tierlock/tierlock.h"

namespace tierlock::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

fs::path records_dir(const fs::path& ws) { return ws / ".lock.holders"; }

// The record name the live process `pid` uses.
std::string record_name(pid_t pid) {
  internal::platform::ProcessInfo info = internal::platform::process_info(pid);
  return internal::record_file_name(pid, info.start_time.value_or(0),
                                    internal::platform::boot_id());
}

// A well-formed record that claims `pid` holds `lock_file` exclusively, with
// a tier, since now, on host "FORGED-HOST" running "FORGED-PROGRAM".
std::string forged_record(pid_t pid, const fs::path& lock_file) {
  internal::HolderRecord r;
  r.pid = pid;
  r.start_time = internal::platform::process_info(pid).start_time.value_or(0);
  r.boot_id = internal::platform::boot_id();
  struct stat st;
  if (::stat(lock_file.c_str(), &st) == 0) {
    r.lock_dev = st.st_dev;
    r.lock_ino = st.st_ino;
  }
  r.host = "FORGED-HOST";
  r.program = "FORGED-PROGRAM";
  std::string bytes = internal::encode_holder_record(r);
  internal::RecordView view(bytes.data());
  view.set_held(Mode::kExclusive, Tier{99, "FORGED-TIER"});
  return bytes;
}

// Times out acquiring `ws` for 20 ms; returns the message.
std::string timeout_message(const fs::path& ws) {
  absl::StatusOr<DirLock> lock = DirLock::open(ws);
  if (!lock.ok()) return "open: " + lock.status().ToString();
  absl::StatusOr<Guard> got = lock->acquire_for(std::chrono::milliseconds(20));
  return std::string(got.status().message());
}

// Expects `h` to say only what /proc says about the tl_helper holder `pid`.
void expect_unrecorded_helper(const Holder& h, pid_t pid) {
  EXPECT_EQ(h.pid, pid);
  EXPECT_FALSE(h.recorded);
  EXPECT_FALSE(h.host.has_value()) << *h.host;
  EXPECT_FALSE(h.since.has_value());
  EXPECT_FALSE(h.tier_level.has_value());
  EXPECT_FALSE(h.tier_name.has_value());
  EXPECT_THAT(h.program.value_or(""), HasSubstr("tl_helper hold"));
  EXPECT_THAT(h.program.value_or(""), Not(HasSubstr("FORGED")));
}

class HolderTrustTest : public TierlockTest {
 protected:
  void SetUp() override {
    TierlockTest::SetUp();
    // nobody must reach the shared directory inside the 0700 test directory.
    ASSERT_EQ(::chmod(dir().c_str(), 0755), 0);
    ws_ = dir() / "ws";
    fs::create_directory(ws_);
    ASSERT_EQ(::chmod(ws_.c_str(), 01777), 0);  // like /tmp
  }
  // Runs `body` as nobody; skips the test when that is not possible.
  bool as_nobody(const std::function<std::string()>& body) {
    ChildOutcome child = run_unprivileged(body);
    if (child.skipped()) {
      skipped_ = child.message;
      return false;
    }
    EXPECT_TRUE(child.ok()) << child.status.describe() << ": " << child.message;
    return child.ok();
  }
  // Creates (as nobody) the lock file and the records directory of ws_ with
  // `records_mode`, before anyone else uses the lock.
  bool nobody_prepares(mode_t records_mode) {
    return as_nobody([&]() -> std::string {
      write_file(ws_ / ".lock", "", 0666);
      if (::mkdir(records_dir(ws_).c_str(), 0700) != 0 ||
          ::chmod(records_dir(ws_).c_str(), records_mode) != 0) {
        return std::string("mkdir: ") + std::strerror(errno);
      }
      return "";
    });
  }

  fs::path ws_;
  std::string skipped_;
};

TEST_F(HolderTrustTest, ARecordForgedByAnotherUserForAVictimIsNotBelieved) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as two users";
  if (!nobody_prepares(0777)) GTEST_SKIP() << skipped_;
  Process victim = start_holder(ws_);
  ASSERT_EQ(victim.read_line(), "locked");
  // nobody owns the records directory: it replaces whatever the victim wrote
  // there with a record in the victim's name.
  const fs::path record = records_dir(ws_) / record_name(victim.pid());
  ASSERT_TRUE(as_nobody([&]() -> std::string {
    if (::unlink(record.c_str()) != 0 && errno != ENOENT) {
      return std::string("unlink: ") + std::strerror(errno);
    }
    write_file(record, forged_record(victim.pid(), ws_ / ".lock"), 0644);
    return "";
  }));
  ASSERT_EQ(snapshot(record).uid, kNobodyUid);

  absl::StatusOr<LockState> state = inspect_lock(ws_);
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(state->holders.size(), 1u);
  expect_unrecorded_helper(state->holders[0], victim.pid());
  // The timeout message reads records first: it must not believe it either.
  const std::string message = timeout_message(ws_);
  EXPECT_THAT(message, Not(HasSubstr("FORGED")));
  EXPECT_THAT(message, HasSubstr("held exclusively by pid " +
                                 std::to_string(victim.pid()) + " '"));
  EXPECT_EQ(stop_holder(victim).code, 0);
}

// A record that anyone else could have rewritten proves nothing either,
// whoever owns it (group or other write permission, ACL mask included).
TEST_F(HolderTrustTest, ARecordWritableByOthersIsNotBelieved) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  const fs::path record = dir() / ".lock.holders" / record_name(holder.pid());
  absl::StatusOr<LockState> state = inspect_lock(dir());
  ASSERT_TRUE(state.ok());
  ASSERT_EQ(state->holders.size(), 1u);
  EXPECT_TRUE(state->holders[0].recorded) << "the genuine record, as written";
  for (mode_t mode : {0666u, 0664u, 0646u}) {
    ASSERT_EQ(::chmod(record.c_str(), mode), 0);
    state = inspect_lock(dir());
    ASSERT_TRUE(state.ok());
    ASSERT_EQ(state->holders.size(), 1u);
    EXPECT_FALSE(state->holders[0].recorded) << std::oct << mode;
    EXPECT_FALSE(state->holders[0].host.has_value()) << std::oct << mode;
  }
  EXPECT_EQ(stop_holder(holder).code, 0);
}

// The rule is the owner of the record against the uid the process runs as,
// not against the reader or root: another user's genuine record counts.
TEST_F(HolderTrustTest, TheRecordOfAProcessOfAnotherUserIsBelieved) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as two users";
  Process holder = fork_unprivileged_holder(ws_);
  const std::optional<std::string> line = holder.read_line();
  if (line.has_value() && line->rfind(kChildSkip, 0) == 0)
    GTEST_SKIP() << *line;
  ASSERT_EQ(line, "locked");
  absl::StatusOr<LockState> state = inspect_lock(ws_);
  ASSERT_TRUE(state.ok());
  ASSERT_EQ(state->holders.size(), 1u);
  EXPECT_EQ(state->holders[0].pid, holder.pid());
  EXPECT_TRUE(state->holders[0].recorded);
  EXPECT_TRUE(state->holders[0].since.has_value());
  EXPECT_EQ(snapshot(records_dir(ws_) / record_name(holder.pid())).uid,
            kNobodyUid);
  holder.write_line("release");
  EXPECT_EQ(holder.wait().code, 0);
}

// Writer side: a records directory that another user owns and that is not
// sticky lets its owner swap our record for another at will; tierlock
// writes no record there (the holder is named from /proc).
TEST_F(HolderTrustTest,
       NoRecordIsWrittenInAnotherUsersRecordsDirectoryThatIsNotSticky) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as two users";
  if (!nobody_prepares(0777)) GTEST_SKIP() << skipped_;
  const FileSnapshot before = snapshot(records_dir(ws_));
  Process victim = start_holder(ws_);
  ASSERT_EQ(victim.read_line(), "locked");
  EXPECT_EQ(snapshot(records_dir(ws_)), before) << "nothing written there";
  absl::StatusOr<LockState> state = inspect_lock(ws_);
  ASSERT_TRUE(state.ok());
  ASSERT_EQ(state->holders.size(), 1u);
  expect_unrecorded_helper(state->holders[0], victim.pid());
  EXPECT_EQ(stop_holder(victim).code, 0);
}

// A sticky records directory of another user is used: the owner can still
// delete our record, but not write into it; a replacement would be its own
// file, which readers do not believe (first test).
TEST_F(HolderTrustTest,
       ARecordInAnotherUsersStickyRecordsDirectoryCannotBeAltered) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as two users";
  if (!nobody_prepares(01777)) GTEST_SKIP() << skipped_;
  Process victim = start_holder(ws_);
  ASSERT_EQ(victim.read_line(), "locked");
  const fs::path record = records_dir(ws_) / record_name(victim.pid());
  const FileSnapshot written = snapshot(record);
  ASSERT_TRUE(written.exists);
  EXPECT_EQ(written.uid, 0u);
  EXPECT_EQ(written.mode & 022, 0u);
  ASSERT_TRUE(as_nobody([&]() -> std::string {
    if (::open(record.c_str(), O_WRONLY | O_CLOEXEC) >= 0 || errno != EACCES) {
      return "nobody could open the victim's record for writing";
    }
    return "";
  }));
  absl::StatusOr<LockState> state = inspect_lock(ws_);
  ASSERT_TRUE(state.ok());
  ASSERT_EQ(state->holders.size(), 1u);
  EXPECT_TRUE(state->holders[0].recorded);
  EXPECT_EQ(stop_holder(victim).code, 0);
}

// A new records directory follows the lock's directory: in a shared one
// (1777) it is 01777 whatever the umask, so every user that can lock can
// add its own record and none can remove another's; in a private one, 0755.
TEST_F(HolderTrustTest,
       ANewRecordsDirectoryIsStickyAndSharedOnlyInASharedDirectory) {
  const mode_t old_umask =
      ::umask(022);  // the common one, inherited by tl_helper
  EXPECT_EQ(try_in_other_process(ws_), kAcquired);
  const fs::path priv = dir() / "private";
  fs::create_directory(priv);
  ASSERT_EQ(::chmod(priv.c_str(), 0755), 0);
  EXPECT_EQ(try_in_other_process(priv), kAcquired);
  ::umask(old_umask);
  EXPECT_EQ(file_mode(records_dir(ws_)), 01777u);
  EXPECT_EQ(file_mode(records_dir(priv)), 0755u);

  if (::geteuid() != 0) return;  // the rest needs a second user
  // nobody adds its own record there...
  Process other = fork_unprivileged_holder(ws_);
  const std::optional<std::string> line = other.read_line();
  if (line.has_value() && line->rfind(kChildSkip, 0) == 0)
    GTEST_SKIP() << *line;
  ASSERT_EQ(line, "locked");
  absl::StatusOr<LockState> state = inspect_lock(ws_);
  ASSERT_TRUE(state.ok());
  ASSERT_EQ(state->holders.size(), 1u);
  EXPECT_TRUE(state->holders[0].recorded)
      << "nobody's record in root's directory";
  other.write_line("release");
  EXPECT_EQ(other.wait().code, 0);
  // ...and cannot remove root's.
  Process holder = start_holder(ws_);
  ASSERT_EQ(holder.read_line(), "locked");
  const fs::path record = records_dir(ws_) / record_name(holder.pid());
  ASSERT_TRUE(as_nobody([&]() -> std::string {
    if (::unlink(record.c_str()) == 0 || errno != EPERM) {
      return std::string("unlink of root's record: ") + std::strerror(errno);
    }
    return "";
  }));
  EXPECT_TRUE(fs::exists(record));
  EXPECT_EQ(stop_holder(holder).code, 0);
}

}  // namespace
}  // namespace tierlock::testing

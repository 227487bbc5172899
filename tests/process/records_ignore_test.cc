// tests/process/records_ignore_test.cc
//
// A guarded directory shows one entry to version control, the lock file, as
// with flock(1): the holder-records directory beside it carries a
// `.gitignore` of `*` that tierlock adds when the directory is its own, only
// if absent, never through a symlink, and that readers and the cleanup never
// take for a record.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "support/files.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/subprocess.h"
#include "tierlock/tierlock.h"

namespace tierlock::testing {
namespace {

namespace fs = std::filesystem;

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

class RecordsIgnoreTest : public TierlockTest {
 protected:
  void SetUp() override {
    TierlockTest::SetUp();
    ws_ = dir() / "ws";
    fs::create_directory(ws_);
  }
  fs::path records() const { return ws_ / ".lock.holders"; }
  fs::path ws_;
};

TEST_F(RecordsIgnoreTest, GitStatusShowsOnlyTheLockFile) {
  const std::string git = find_program("git");
  if (git.empty()) GTEST_SKIP() << "git not installed";
  ASSERT_EQ(run({git, "init", "-q", ws_.string()}).status.code, 0);
  Process holder = start_holder(ws_);
  ASSERT_EQ(holder.read_line(), "locked");
  ASSERT_TRUE(fs::is_directory(records())) << "the holder wrote a record";
  RunResult status = run({git, "-C", ws_.string(), "status", "--porcelain",
                          "--untracked-files=all"});
  EXPECT_EQ(status.status.code, 0);
  EXPECT_EQ(status.out, "?? .lock\n");
  EXPECT_EQ(stop_holder(holder).code, 0);
}

TEST_F(RecordsIgnoreTest, TheIgnoreFileIsNeverTakenForARecord) {
  Process holder = start_holder(ws_);
  ASSERT_EQ(holder.read_line(), "locked");
  ASSERT_TRUE(fs::is_regular_file(records() / ".gitignore"));
  EXPECT_NE(read_all(records() / ".gitignore").find("\n*\n"),
            std::string::npos);
  absl::StatusOr<LockState> state = inspect_lock(ws_);
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(state->holders.size(), 1u);
  EXPECT_TRUE(state->holders[0].recorded);
  EXPECT_EQ(state->holders[0].pid, holder.pid());
  EXPECT_EQ(stop_holder(holder).code, 0);
  EXPECT_TRUE(fs::is_regular_file(records() / ".gitignore"))
      << "the cleanup of records left the ignore file alone";
}

TEST_F(RecordsIgnoreTest, AnIgnoreFileAlreadyThereIsNeverRewritten) {
  fs::create_directory(records());
  write_file(records() / ".gitignore", "mine\n", 0600);
  EXPECT_EQ(try_in_other_process(ws_), kAcquired);
  EXPECT_EQ(read_all(records() / ".gitignore"), "mine\n");
}

TEST_F(RecordsIgnoreTest, AnIgnoreFileThatIsASymlinkIsNotFollowed) {
  fs::create_directory(records());
  const fs::path target = dir() / "victim";
  write_file(target, "precious\n", 0644);
  fs::create_symlink(target, records() / ".gitignore");
  EXPECT_EQ(try_in_other_process(ws_), kAcquired);
  EXPECT_EQ(read_all(target), "precious\n");
  EXPECT_TRUE(fs::is_symlink(records() / ".gitignore"));
}

}  // namespace
}  // namespace tierlock::testing

// tests/lease/lease_cli_test.cc
//
// `tierlock run --backend … --key …` (tools/tierlock/lease_run.cc), driving
// the real binary against the SQLite backend (no server needed).
#include <signal.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lease/history.h"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "tierlock/lease.h"
#include "tierlock/lease_sqlite.h"

#ifndef TIERLOCK_CLI_PATH
#error "TIERLOCK_CLI_PATH must be defined"
#endif

namespace tierlock::testing {
namespace {

using namespace std::chrono_literals;

class LeaseCliTest : public ::testing::Test {
 protected:
  std::string backend() const { return "sqlite:" + (tmp_.path() / "leases.db").string(); }
  std::vector<std::string> run_args(std::vector<std::string> extra,
                                    std::vector<std::string> command) const {
    std::vector<std::string> argv = {TIERLOCK_CLI_PATH, "run", "--backend", backend()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("--");
    argv.insert(argv.end(), command.begin(), command.end());
    return argv;
  }
  std::string read(const std::string& name) const {
    std::ifstream in(tmp_.path() / name);
    std::string s;
    std::getline(in, s);
    return s;
  }
  TempDir tmp_;
};

TEST_F(LeaseCliTest, RunsTheCommandWithTheTokenAndExitsWithItsStatus) {
  const std::string out = (tmp_.path() / "env").string();
  RunResult r = run(run_args({"--key", "job"},
                             {"sh", "-c", "echo $TIERLOCK_TOKEN $TIERLOCK_LEASE_KEY > " + out +
                                              "; exit 7"}));
  EXPECT_EQ(r.status.code, 7);
  EXPECT_EQ(read("env"), "1 job");
  r = run(run_args({"--key", "job"}, {"sh", "-c", "echo $TIERLOCK_TOKEN > " + out}));
  EXPECT_EQ(r.status.code, 0);
  EXPECT_EQ(read("env"), "2") << "tokens increase per run";
}

TEST_F(LeaseCliTest, HeldKeyGivesTheConflictCodeWithNoWaitOrTimeout) {
  Process holder = Process::spawn({lease_helper_path(), "hold", backend(), "busy", "60000"});
  std::optional<std::string> held = holder.read_line();
  ASSERT_TRUE(held && held->rfind("held ", 0) == 0) << held.value_or("");
  EXPECT_EQ(run(run_args({"--key", "busy", "-n"}, {"true"})).status.code, 75);
  EXPECT_EQ(run(run_args({"--key", "busy", "-n", "-E", "9"}, {"true"})).status.code, 9);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(run(run_args({"--key", "busy", "-w", "0.3"}, {"true"})).status.code, 75);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
  holder.close_stdin();  // the helper releases at EOF
  EXPECT_EQ(holder.wait().code, 0);
  EXPECT_EQ(run(run_args({"--key", "busy", "-n"}, {"true"})).status.code, 0);
}

TEST_F(LeaseCliTest, SigtermWhileWaitingExits143HoldingNothing) {
  Process holder = Process::spawn({lease_helper_path(), "hold", backend(), "k", "60000"});
  ASSERT_TRUE(holder.read_line().has_value());
  Process waiter = Process::spawn(run_args({"--key", "k"}, {"true"}));
  // SIGTERM goes to the signalfd once it is blocked (/proc/PID/status
  // SigBlk), and the acquire starts right after: from then on any moment is
  // a valid one to interrupt the wait.
  ASSERT_TRUE(wait_until([&] {
    std::ifstream in("/proc/" + std::to_string(waiter.pid()) + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("SigBlk:", 0) == 0) {
        return (std::stoull(line.substr(7), nullptr, 16) & (1ULL << (SIGTERM - 1))) != 0;
      }
    }
    return false;
  }));
  auto b = SqliteLeaseBackend::create({.path = tmp_.path() / "leases.db"});
  ASSERT_OK(b.status());
  ASSERT_FALSE(waiter.exited_now());
  ::kill(waiter.pid(), SIGTERM);
  EXPECT_EQ(waiter.wait().code, 143);
  ASSERT_OK_AND_ASSIGN(std::vector<SqliteLeaseRow> rows, (*b)->list());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].token, 1u) << "the cancelled waiter took a lease";
}

TEST_F(LeaseCliTest, LostLeaseSendsSigtermToTheCommand) {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  Process cli = Process::spawn(run_args({"--key", "lost", "--ttl", "1"},
                                        {"sh", "-c", "echo started; exec sleep 30"}));
  std::optional<std::string> started = cli.read_line();
  ASSERT_EQ(started.value_or(""), "started");
  // Another process takes the run's lease away (its session is host:pid).
  auto b = SqliteLeaseBackend::create({.path = tmp_.path() / "leases.db"});
  ASSERT_OK(b.status());
  ASSERT_OK_AND_ASSIGN(int n, (*b)->release_all(absl::StrCat(host, ":", cli.pid())));
  EXPECT_EQ(n, 1);
  // The next renewal (every 1/3 s) says lost: the command gets SIGTERM.
  EXPECT_EQ(cli.wait(10s).code, 128 + SIGTERM);
}

TEST_F(LeaseCliTest, BadBackendKeyOrTtlIsAUsageError) {
  EXPECT_EQ(run({TIERLOCK_CLI_PATH, "run", "--backend", "nope://x", "--key", "k", "--", "true"})
                .status.code,
            64);
  EXPECT_EQ(run(run_args({}, {"true"})).status.code, 64) << "no --key";
  EXPECT_EQ(run(run_args({"--key", "a\tb"}, {"true"})).status.code, 64);
  EXPECT_EQ(run(run_args({"--key", "k", "--ttl", "0"}, {"true"})).status.code, 64);
  EXPECT_EQ(run(run_args({"--key", "k", "--shared"}, {"true"})).status.code, 64);
  EXPECT_EQ(run({TIERLOCK_CLI_PATH, "run", "--key", "k", "--", "true"}).status.code, 64);
  EXPECT_EQ(run(run_args({"--key", "k"}, {"/nonexistent/cmd"})).status.code, 127);
}

}  // namespace
}  // namespace tierlock::testing

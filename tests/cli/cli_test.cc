// Tests of the `tierlock` command (tools/tierlock), driving the real binary
// in real processes: exit codes, signals, waiting, status, interop with
// flock(1) and Python's filelock, bad input.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "support/files.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/proc_locks.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "support/wait.h"

#ifndef TIERLOCK_CLI_PATH
#define TIERLOCK_CLI_PATH ""
#endif

extern char** environ;

namespace tierlock::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::json;
namespace fs = std::filesystem;

std::string cli_path() { return TIERLOCK_CLI_PATH; }

// The CLI as a child whose stdout and stderr go to files (read while it
// runs), stdin from /dev/null. Killed and reaped on destruction.
class Cli {
 public:
  Cli(const std::vector<std::string>& args, const fs::path& io_dir)
      : out_(io_dir / ("out" + std::to_string(++counter_))),
        err_(io_dir / ("err" + std::to_string(counter_))) {
    std::vector<std::string> argv = {cli_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (std::string& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err =
        posix_spawn(&pid_, cargv[0], &fa, nullptr, cargv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err != 0) pid_ = -1;
  }
  Cli(const Cli&) = delete;
  Cli& operator=(const Cli&) = delete;
  ~Cli() {
    if (pid_ > 0 && !code_.has_value()) {
      ::kill(pid_, SIGKILL);
      int st;
      ::waitpid(pid_, &st, 0);
    }
  }
  pid_t pid() const { return pid_; }
  // Exit code, 128+N if killed by signal N, -1 if it had to be killed.
  int wait(std::chrono::milliseconds timeout = kTimeout) {
    if (code_.has_value()) return *code_;
    int st = 0;
    const bool done = wait_until(
        [&] { return ::waitpid(pid_, &st, WNOHANG) == pid_; }, timeout);
    if (!done) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &st, 0);
      code_ = -1;
    } else {
      code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    return *code_;
  }
  std::string out() const { return read_or_empty(out_); }
  std::string err() const { return read_or_empty(err_); }

 private:
  static std::string read_or_empty(const fs::path& p) {
    try {
      return read_file(p);
    } catch (...) {
      return "";
    }
  }
  static inline int counter_ = 0;
  fs::path out_, err_;
  pid_t pid_ = -1;
  std::optional<int> code_;
};

struct Result {
  int code;
  std::string out;
  std::string err;
};

class CliTest : public TierlockTest {
 protected:
  void SetUp() override {
    TierlockTest::SetUp();
    if (cli_path().empty()) GTEST_SKIP() << "tierlock_cli is not built";
  }
  Result cli(const std::vector<std::string>& args) {
    Cli c(args, io_.path());
    const int code = c.wait();
    return {code, c.out(), c.err()};
  }
  fs::path lock() const { return dir() / ".lock"; }
  // A `tierlock run` holding the lock (its command waits for a line on
  // stdin); returns once it holds it.
  Process hold_with_cli(std::vector<std::string> options) {
    std::vector<std::string> argv = {cli_path(), "run"};
    argv.insert(argv.end(), options.begin(), options.end());
    for (const char* a : {"--", "sh", "-c", "echo locked; read x"})
      argv.push_back(a);
    argv.insert(argv.end() - 4, dir().string());
    Process p = Process::spawn(argv);
    EXPECT_EQ(p.read_line(), "locked");
    return p;
  }
  Json status_json(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"status", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(dir().string());
    Result r = cli(args);
    EXPECT_EQ(r.code, 0) << r.err;
    return Json::parse(r.out);
  }
  TempDir io_;  // stdout/stderr files, outside the locked directory
};

std::string hostname() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

TEST_F(CliTest, RunPassesTheCommandsExitStatus) {
  EXPECT_EQ(cli({"run", dir().string(), "--", "true"}).code, 0);
  EXPECT_EQ(cli({"run", dir().string(), "--", "sh", "-c", "exit 7"}).code, 7);
  Result r = cli({"run", dir().string(), "--", "echo", "a", "--", "-x"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out,
            "a -- -x\n");  // everything after the first -- is the command's
}

TEST_F(CliTest, RunExitsWith128PlusTheSignalThatKilledTheCommand) {
  EXPECT_EQ(
      cli({"run", dir().string(), "--", "sh", "-c", "kill -TERM $$"}).code,
      143);
  EXPECT_EQ(
      cli({"run", dir().string(), "--", "sh", "-c", "kill -KILL $$"}).code,
      137);
}

TEST_F(CliTest, RunHoldsTheLockWhileTheCommandRuns) {
  Result r = cli({"run", dir().string(), "--",
                  flock_path().empty() ? "false" : flock_path(), "-n",
                  lock().string(), "true"});
  if (flock_path().empty()) GTEST_SKIP() << "flock(1) not found";
  EXPECT_EQ(r.code, 1) << "flock -n inside the command must find the lock held";
}

TEST_F(CliTest, RunExportsTierlockDir) {
  Result r = cli(
      {"run", dir().string(), "--", "sh", "-c", "printf %s \"$TIERLOCK_DIR\""});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, dir().string());
}

// A run that may wait is checked for order even when the lock is free (the
// uncontended fast path is a try, which the library never refuses); a run
// that only tries (-n) cannot deadlock and is let through.
TEST_F(CliTest, TierOrderIsCheckedForAFreeLockButNotForATry) {
  fs::create_directories(dir() / "ws");
  fs::create_directories(dir() / "pkg");
  const std::string self = cli_path();
  Result r =
      cli({"run", "--tier", "20:package", (dir() / "pkg").string(), "--", "sh",
           "-c",
           "\"$0\" run --tier 10:workspace \"$1\" -- true; echo \"wait=$?\"; "
           "\"$0\" run -n --tier 10:workspace \"$1\" -- true; echo \"try=$?\"",
           self, (dir() / "ws").string()});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::HasSubstr("wait=1"));
  EXPECT_THAT(r.out, ::testing::HasSubstr("try=0"));
}

TEST_F(CliTest, RunExportsTheTierStackAndRefusesALowerTierInTheChild) {
  fs::create_directories(dir() / "ws");
  fs::create_directories(dir() / "pkg");
  const std::string self = cli_path();
  // Outer run: tier 20 on pkg. Its command prints TIERLOCK_HELD, then runs a
  // nested `tierlock run --tier 10` on ws, which must be refused before it
  // waits (exit 1, the report naming the parent's lock and pid).
  Result r =
      cli({"run", "--tier", "20:package", (dir() / "pkg").string(), "--", "sh",
           "-c",
           "printf '%s\\n' \"$TIERLOCK_HELD\"; \"$0\" run --tier 10:workspace "
           "\"$1\" -- true; echo \"inner=$?\"",
           self, (dir() / "ws").string()});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::HasSubstr(
                         "1;20,x,"));  // version 1, level 20, exclusive
  EXPECT_THAT(r.out, ::testing::HasSubstr(",package," +
                                          (dir() / "pkg" / ".lock").string()));
  EXPECT_THAT(r.out, ::testing::HasSubstr("inner=1"));
  EXPECT_THAT(r.err, ::testing::HasSubstr("lock order violation"));
  EXPECT_THAT(r.err, ::testing::HasSubstr("held by the parent process"));
  EXPECT_EQ(try_in_other_process(dir() / "ws"), kAcquired);

  // A higher tier in the child is fine, and its TIERLOCK_HELD has both.
  Result up =
      cli({"run", "--tier", "10:workspace", (dir() / "ws").string(), "--", self,
           "run", "--tier", "20:package", (dir() / "pkg").string(), "--", "sh",
           "-c", "printf %s \"$TIERLOCK_HELD\""});
  EXPECT_EQ(up.code, 0) << up.err;
  EXPECT_THAT(up.out, ::testing::HasSubstr(",workspace,"));
  EXPECT_THAT(up.out, ::testing::HasSubstr(",package,"));
}

TEST_F(CliTest, RunWithoutATierExportsOnlyWhatItInherited) {
  Result r = cli({"run", dir().string(), "--", "sh", "-c",
                  "printf '[%s]' \"${TIERLOCK_HELD-unset}\""});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "[unset]");
}

TEST_F(CliTest, NoWaitExitsWithTheConflictCodeAndNamesTheHolder) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  Result r = cli({"run", "-n", dir().string(), "--", "echo", "ran"});
  EXPECT_EQ(r.code, 75);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(r.err, HasSubstr("tierlock: " + lock().string() +
                               ": held exclusively by pid " +
                               std::to_string(holder.pid())));
  EXPECT_EQ(
      cli({"run", "--no-wait", "-E", "3", dir().string(), "--", "true"}).code,
      3);
  Result quiet = cli({"run", "-n", "-q", "--conflict-exit-code", "200",
                      dir().string(), "--", "true"});
  EXPECT_EQ(quiet.code, 200);
  EXPECT_EQ(quiet.err, "");
  EXPECT_EQ(stop_holder(holder).code, 0);
  EXPECT_EQ(cli({"run", "-n", dir().string(), "--", "true"}).code, 0);
}

TEST_F(CliTest, TimeoutGivesUpWithTheConflictCode) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  const auto start = std::chrono::steady_clock::now();
  Result r = cli({"run", "-w", "0.3", dir().string(), "--", "echo", "ran"});
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.code, 75);
  EXPECT_EQ(r.out, "");
  EXPECT_GE(took, std::chrono::milliseconds(300));
  EXPECT_LT(took, std::chrono::seconds(10));
  EXPECT_THAT(r.err, HasSubstr("timed out after "));
  EXPECT_THAT(r.err, HasSubstr("pid " + std::to_string(holder.pid())));
  EXPECT_EQ(
      cli({"run", "-w", "0.1", "-E", "9", "-q", dir().string(), "--", "true"})
          .code,
      9);
  EXPECT_EQ(stop_holder(holder).code, 0);
}

TEST_F(CliTest, WaitingMessageNamesTheHolderThenRunsWhenReleased) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  Cli waiter({"run", dir().string(), "--", "echo", "ran"}, io_.path());
  const std::string want = "tierlock: waiting for " + lock().string() +
                           " (held exclusively by pid " +
                           std::to_string(holder.pid()) + " '";
  EXPECT_TRUE(wait_until([&] {
    return waiter.err().find(want) != std::string::npos;
  })) << waiter.err();
  EXPECT_THAT(waiter.err(), HasSubstr("tl_helper hold"));
  EXPECT_THAT(waiter.err(), HasSubstr(" since "));
  EXPECT_EQ(stop_holder(holder).code, 0);
  EXPECT_EQ(waiter.wait(), 0);
  EXPECT_EQ(waiter.out(), "ran\n");
}

TEST_F(CliTest, QuietPrintsNoWaitingMessage) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  Cli waiter({"run", "-q", dir().string(), "--", "true"}, io_.path());
  ASSERT_TRUE(LocksBecome(lock(), [&](const std::vector<ProcLock>& e) {
    return count_waiters_by(e, waiter.pid()) == 1;
  }));
  // The message would come ~0.5 s into the wait; a second wait on the
  // kernel's table (a condition, not a sleep) covers that time.
  EXPECT_FALSE(wait_for_locks(
      lock(),
      [&](const std::vector<ProcLock>& e) {
        return count_waiters_by(e, waiter.pid()) == 0;
      },
      std::chrono::milliseconds(1500)));
  EXPECT_EQ(waiter.err(), "");
  EXPECT_EQ(stop_holder(holder).code, 0);
  EXPECT_EQ(waiter.wait(), 0);
}

class CliSignalTest : public CliTest,
                      public ::testing::WithParamInterface<int> {};

TEST_P(CliSignalTest, SignalWhileWaitingCancelsAndLeavesNothingHeld) {
  const int sig = GetParam();
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  Cli waiter({"run", dir().string(), "--", "echo", "ran"}, io_.path());
  ASSERT_TRUE(LocksBecome(lock(), [&](const std::vector<ProcLock>& e) {
    return count_waiters_by(e, waiter.pid()) == 1;
  }));
  ASSERT_EQ(::kill(waiter.pid(), sig), 0);
  EXPECT_EQ(waiter.wait(), 128 + sig);
  EXPECT_EQ(waiter.out(), "");
  EXPECT_THAT(waiter.err(), HasSubstr("interrupted by"));
  EXPECT_THAT(waiter.err(), HasSubstr("nothing held"));
  EXPECT_TRUE(LocksBecome(lock(), held_by(holder.pid())));
  EXPECT_EQ(stop_holder(holder).code, 0);
  EXPECT_TRUE(LocksBecome(lock(), no_locks()));
}

INSTANTIATE_TEST_SUITE_P(Signals, CliSignalTest,
                         ::testing::Values(SIGINT, SIGTERM, SIGHUP),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return std::string(sigabbrev_np(i.param));
                         });

TEST_F(CliTest, SignalsAreForwardedToTheCommand) {
  const std::string py = find_program("python3");
  if (py.empty()) GTEST_SKIP() << "python3 not found";
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    Process p = Process::spawn(
        {cli_path(), "run", dir().string(), "--", py, "-c",
         "import signal, sys\n"
         "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):\n"
         "  signal.signal(s, lambda n, f: sys.exit(40 + n))\n"
         "print('ready', flush=True)\n"
         "while True: signal.pause()\n"});
    ASSERT_EQ(p.read_line(), "ready");
    ASSERT_EQ(::kill(p.pid(), sig), 0);
    EXPECT_EQ(p.wait().code, 40 + sig) << "signal " << sig;
  }
}

// Kills a process the test left behind (an orphaned command), if it runs.
struct KillOnExit {
  pid_t pid = 0;
  ~KillOnExit() {
    if (pid > 0) ::kill(pid, SIGKILL);
  }
};

TEST_F(CliTest, TheCommandInheritsTheLockDescriptorAsTierlockFd) {
  for (const char* mode : {"-s", "-x"}) {
    std::vector<std::string> args = {"run"};
    if (std::string(mode) == "-s") args.push_back("-s");
    for (const std::string& a :
         {dir().string(), std::string("sh"), std::string("-c"),
          std::string("echo \"$TIERLOCK_FD\"; readlink "
                      "\"/proc/self/fd/$TIERLOCK_FD\"")}) {
      args.push_back(a);
    }
    Result r = cli(args);
    ASSERT_EQ(r.code, 0) << r.err;
    const std::size_t nl = r.out.find('\n');
    ASSERT_NE(nl, std::string::npos) << r.out;
    EXPECT_GE(std::stoi(r.out.substr(0, nl)), 3) << "never stdin/stdout/stderr";
    EXPECT_EQ(r.out.substr(nl + 1), lock().string() + "\n") << mode;
  }
}

TEST_F(CliTest, CloseRunsTheCommandWithoutTheLockDescriptor) {
  for (const char* close : {"-o", "--close"}) {
    // Every descriptor the command has, by what it points to.
    Result r = cli({"run", close, dir().string(), "--", "sh", "-c",
                    "echo \"fd=${TIERLOCK_FD-unset}\"; "
                    "for f in /proc/$$/fd/*; do readlink \"$f\"; done; true"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("fd=unset\n"));
    EXPECT_THAT(r.out, Not(HasSubstr(lock().string())));
    EXPECT_THAT(r.out, Not(HasSubstr(".holders")));
  }
}

TEST_F(CliTest, ADaemonTheCommandLeavesBehindDoesNotKeepTheLock) {
  if (flock_path().empty()) GTEST_SKIP() << "flock(1) not found";
  // The daemon inherits the descriptor (it does not close TIERLOCK_FD), but
  // tierlock unlocks it (LOCK_UN on the shared description) when the
  // command exits.
  Result bg = cli({"run", dir().string(), "--", "sh", "-c",
                   "sleep 1000 </dev/null >/dev/null 2>&1 & echo $!"});
  ASSERT_EQ(bg.code, 0);
  KillOnExit daemon{std::stoi(bg.out)};
  EXPECT_EQ(::kill(daemon.pid, 0), 0)
      << "the background process should still run";
  EXPECT_EQ(run({flock_path(), "-n", lock().string(), "true"}).status.code, 0);
}

// The command's read-modify-write of a counter, as in the report that a
// SIGKILLed `tierlock run` let a second run in beside its command. The
// first command writes its pid to `started`, then (so that the test, not a
// sleep, decides when it finishes) waits for a file `go`.
std::string increment_script(const fs::path& d, bool wait_for_go) {
  const std::string q = "'" + d.string() + "'";
  return "echo $$ > " + q + "/started.tmp; mv " + q + "/started.tmp " + q +
         "/started; " + "v=$(cat " + q + "/c); " +
         (wait_for_go ? "while [ ! -e " + q + "/go ]; do sleep 0.01; done; "
                      : "") +
         "echo $((v+1)) > " + q + "/c";
}

TEST_F(CliTest, SigkillOfRunDoesNotReleaseTheLockWhileTheCommandRuns) {
  TempDir work;  // the counter, outside the locked directory
  write_file(work.path() / "c", "0\n");
  for (const char* mode : {"exclusive", "shared"}) {
    SCOPED_TRACE(mode);
    std::error_code ec;
    fs::remove(work.path() / "started", ec);
    fs::remove(work.path() / "go", ec);
    write_file(work.path() / "c", "0\n");
    const bool shared = std::string(mode) == "shared";
    std::vector<std::string> first = {"run"};
    if (shared) first.push_back("--shared");
    for (const std::string& a :
         {dir().string(), std::string("--"), std::string("sh"),
          std::string("-c"), increment_script(work.path(), true)}) {
      first.push_back(a);
    }
    Cli a(first, io_.path());
    ASSERT_TRUE(wait_until([&] { return fs::exists(work.path() / "started"); }))
        << a.err();
    KillOnExit orphan{std::stoi(read_file(work.path() / "started"))};
    ASSERT_EQ(::kill(a.pid(), SIGKILL), 0);
    EXPECT_EQ(a.wait(), 128 + SIGKILL);
    EXPECT_FALSE(process_gone(orphan.pid)) << "the command runs on";

    // The lock stays held while the orphaned command runs.
    EXPECT_EQ(try_in_other_process(dir()), kBusy);
    if (!flock_path().empty()) {
      EXPECT_EQ(run({flock_path(), "-n", lock().string(), "true"}).status.code,
                1);
    }
    if (shared) {
      EXPECT_EQ(try_in_other_process(dir(), Mode::kShared), kAcquired);
    }

    // `status` names the command that holds the lock now, not the killed
    // tierlock (which the kernel's table still names) nor nobody.
    const std::string orphan_pid = std::to_string(orphan.pid);
    Result st = cli({"status", "--json", dir().string()});
    EXPECT_EQ(st.code, 0) << st.err;
    Json holders =
        Json::parse(st.out, nullptr, false).value("holders", Json::array());
    bool names_orphan = false;
    for (const Json& h : holders) {
      if (h.value("pid", 0) == orphan.pid) names_orphan = true;
      EXPECT_NE(h.value("pid", 0), a.pid()) << st.out;
    }
    EXPECT_TRUE(names_orphan) << st.out;

    // A second (exclusive) run waits for the first command, whatever the
    // mode of the first, and its waiting message names the command.
    fs::remove(work.path() / "started");
    Cli b({"run", dir().string(), "--", "sh", "-c",
           increment_script(work.path(), false)},
          io_.path());
    ASSERT_TRUE(LocksBecome(lock(), [&](const std::vector<ProcLock>& e) {
      return count_waiters_by(e, b.pid()) == 1;
    }));
    EXPECT_TRUE(wait_until([&] {
      return b.err().find("pid " + orphan_pid) != std::string::npos;
    })) << b.err();
    EXPECT_FALSE(fs::exists(work.path() / "started"))
        << "the second command ran beside the first";
    write_file(work.path() / "go", "");
    EXPECT_EQ(b.wait(), 0) << b.err();
    EXPECT_TRUE(process_gone(orphan.pid));
    EXPECT_EQ(read_file(work.path() / "c"), "2\n");
  }
}

// Seen by another user, the command that inherited the lock of a SIGKILLed
// `tierlock run` cannot be looked into (its descriptors are root's): the
// message says the lock came from the exited pid, not "another pid
// namespace" (which is what the kernel's pid 0 means).
TEST_F(CliTest, StatusOfAnInheritedLockOthersCannotSeeNamesTheExitedTaker) {
  if (::geteuid() != 0)
    GTEST_SKIP() << "needs root (a holder another user cannot inspect)";
  if (::access("/usr/bin/setpriv", X_OK) != 0)
    GTEST_SKIP() << "root without setpriv(1)";
  TempDir work;
  ::chmod(dir().c_str(), 0755);
  Cli a({"run", dir().string(), "--", "sh", "-c",
         "echo $$ > '" + (work.path() / "started").string() +
             "'; exec sleep 1000"},
        io_.path());
  ASSERT_TRUE(wait_until([&] {
    return fs::exists(work.path() / "started") &&
           !read_file(work.path() / "started").empty();
  })) << a.err();
  KillOnExit orphan{std::stoi(read_file(work.path() / "started"))};
  ASSERT_EQ(::kill(a.pid(), SIGKILL), 0);
  EXPECT_EQ(a.wait(), 128 + SIGKILL);
  ASSERT_FALSE(process_gone(orphan.pid));

  RunResult r =
      run({"/bin/sh", "-c",
           "/usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups '" +
               cli_path() + "' status '" + dir().string() + "' 2>&1"});
  EXPECT_EQ(r.status.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("inherited from pid " + std::to_string(a.pid()) +
                               " (exited; the holder is not visible"))
      << r.out;
  EXPECT_THAT(r.out, Not(HasSubstr("pid namespace"))) << r.out;
}

TEST_F(CliTest, CloseKeepsTheOldRiskSigkillOfRunReleasesTheLock) {
  // Documented risk of --close: the lock is the tierlock process's only.
  TempDir work;
  write_file(work.path() / "c", "0\n");
  Cli a({"run", "--close", dir().string(), "sh", "-c",
         increment_script(work.path(), true)},
        io_.path());
  ASSERT_TRUE(wait_until([&] { return fs::exists(work.path() / "started"); }))
      << a.err();
  KillOnExit orphan{std::stoi(read_file(work.path() / "started"))};
  ASSERT_EQ(::kill(a.pid(), SIGKILL), 0);
  EXPECT_EQ(a.wait(), 128 + SIGKILL);
  EXPECT_TRUE(LocksBecome(lock(), no_locks()));
  EXPECT_EQ(try_in_other_process(dir()), kAcquired);
}

TEST_F(CliTest, OptionsEndAtTheFirstOperandAfterDir) {
  for (std::vector<std::string> args : {
           std::vector<std::string>{"run", "DIR", "echo", "-n", "hi"},
           std::vector<std::string>{"run", "DIR", "--", "echo", "-n", "hi"},
           std::vector<std::string>{"run", "--", "DIR", "echo", "-n", "hi"},
           std::vector<std::string>{"run", "-w", "5", "--tier", "3:x",
                                    "--lock-name=x.lock", "DIR", "echo", "-n",
                                    "hi"},
           std::vector<std::string>{"run", "-q", "DIR", "echo", "-n", "-s",
                                    "-w", "--", "hi"},
       }) {
    bool with_dashes = std::find(args.begin(), args.end(), "-s") != args.end();
    for (std::string& a : args) {
      if (a == "DIR") a = dir().string();
    }
    Result r = cli(args);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, with_dashes ? "-s -w -- hi" : "hi")
        << ::testing::PrintToString(args);
    EXPECT_EQ(r.err, "");
  }
  // `tierlock run ws make -s` twice: -s is make's, so the two do not share.
  Process first = Process::spawn({cli_path(), "run", dir().string(), "sh", "-c",
                                  "echo locked; read x", "sh", "-s"});
  ASSERT_EQ(first.read_line(), "locked");
  Result second =
      cli({"run", "-n", dir().string(), "sh", "-c", "echo ran", "sh", "-s"});
  EXPECT_EQ(second.code, 75) << second.out;
  EXPECT_EQ(second.out, "");
  Json j = status_json();
  EXPECT_EQ(j["mode"], "exclusive");
  first.write_line("go");
  EXPECT_EQ(first.wait().code, 0);
}

TEST_F(CliTest, HugeTimeoutsWaitForever) {
  for (const char* w : {"1e300", "inf", "9.3e9", "1e10"}) {
    SCOPED_TRACE(w);
    Process holder = start_holder(dir());
    ASSERT_EQ(holder.read_line(), "locked");
    Cli waiter({"run", "-q", "-w", w, dir().string(), "--", "echo", "ran"},
               io_.path());
    ASSERT_TRUE(LocksBecome(lock(), [&](const std::vector<ProcLock>& e) {
      return count_waiters_by(e, waiter.pid()) == 1;
    }));
    // Still waiting a second later (it used to give up at once with 75).
    EXPECT_FALSE(wait_until([&] { return process_gone(waiter.pid()); },
                            std::chrono::milliseconds(1000)));
    EXPECT_EQ(stop_holder(holder).code, 0);
    EXPECT_EQ(waiter.wait(), 0) << waiter.err();
    EXPECT_EQ(waiter.out(), "ran\n");
  }
}

TEST_F(CliTest, RunInADirectoryWhereTheLockFileCannotBeCreatedSaysWhatFailed) {
  // /proc exists; its lock file cannot be created. Not "no such directory".
  Result r = cli({"run", "/proc", "--", "true"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.code, 66) << r.err;
  EXPECT_THAT(r.err, HasSubstr("tierlock: /proc: "));
  EXPECT_THAT(r.err, Not(HasSubstr("no such directory")));
  EXPECT_THAT(r.err, HasSubstr("/proc/.lock"));
}

// A holder whose command line has a C1 CSI (U+009B as UTF-8), an ESC and a
// right-to-left override: every human-readable output shows them escaped.
TEST_F(CliTest, HostileCommandLinesAreEscapedInEveryMessage) {
  if (flock_path().empty()) GTEST_SKIP() << "flock(1) not found";
  const std::string hostile =
      "a\xc2\x9b"
      "31mb\x1b[2Jc\xe2\x80\xae"
      "d";
  Process holder = Process::spawn({flock_path(), lock().string(), "sh", "-c",
                                   "echo locked; read x", hostile});
  ASSERT_EQ(holder.read_line(), "locked");
  auto expect_escaped = [](const std::string& text, const char* where) {
    EXPECT_THAT(text, HasSubstr("a\\u009b31mb")) << where;
    EXPECT_THAT(text, HasSubstr("c\\u202ed")) << where;
    EXPECT_THAT(text, Not(HasSubstr("\xc2\x9b"))) << where;
    EXPECT_THAT(text, Not(HasSubstr("\x1b"))) << where;
    EXPECT_THAT(text, Not(HasSubstr("\xe2\x80\xae"))) << where;
  };
  Result status = cli({"status", dir().string()});
  EXPECT_EQ(status.code, 0);
  expect_escaped(status.out, "status");
  Result conflict = cli({"run", "-n", dir().string(), "--", "true"});
  EXPECT_EQ(conflict.code, 75);
  expect_escaped(conflict.err, "-n conflict");
  Cli waiter({"run", dir().string(), "--", "true"}, io_.path());
  EXPECT_TRUE(wait_until(
      [&] { return waiter.err().find("waiting for") != std::string::npos; }));
  expect_escaped(waiter.err(), "waiting message");
  // JSON: ASCII, exact after parsing.
  Result json = cli({"status", "--json", dir().string()});
  EXPECT_EQ(json.code, 0);
  for (char c : json.out) EXPECT_LT(static_cast<unsigned char>(c), 0x80);
  Json j = Json::parse(json.out);
  ASSERT_EQ(j["holders"].size(), 1u);
  EXPECT_THAT(j["holders"][0]["program"].get<std::string>(),
              HasSubstr("a\xc2\x9b"
                        "31mb"));
  EXPECT_THAT(j["holders"][0]["program"].get<std::string>(),
              HasSubstr("c\xe2\x80\xae"
                        "d"));
  holder.write_line("go");
  EXPECT_EQ(holder.wait().code, 0);
  EXPECT_EQ(waiter.wait(), 0);
}

// The ESC of a holder's command line is shown as \x1b: this depends on the
// library handing the program name over unfiltered (it turned C0 controls
// into '?' before escape_text existed).
TEST_F(CliTest, HostileEscInACommandLineIsShownAsX1b) {
  if (flock_path().empty()) GTEST_SKIP() << "flock(1) not found";
  Process holder = Process::spawn({flock_path(), lock().string(), "sh", "-c",
                                   "echo locked; read x", "b\x1b[2Jc"});
  ASSERT_EQ(holder.read_line(), "locked");
  Result status = cli({"status", dir().string()});
  EXPECT_THAT(status.out, HasSubstr("b\\x1b[2Jc"));
  Json j = status_json();
  ASSERT_EQ(j["holders"].size(), 1u);
  EXPECT_THAT(j["holders"][0]["program"].get<std::string>(),
              HasSubstr("b\x1b[2Jc"));
  holder.write_line("go");
  EXPECT_EQ(holder.wait().code, 0);
}

TEST_F(CliTest, ANonUtf8DirectoryNameRoundTripsThroughStatusJson) {
  const std::string name = std::string("bad\xff\xfe") + "\x1b" + "name";
  const fs::path odd = dir() / name;
  fs::create_directory(odd);
  ASSERT_EQ(cli({"run", odd.string(), "--", "true"}).code, 0);
  Result r = cli({"status", "--json", odd.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  Json j = Json::parse(r.out);  // valid JSON, however odd the name
  auto unhex = [](const std::string& hex) {
    std::string out;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
      out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
    }
    return out;
  };
  ASSERT_TRUE(j.contains("dir_bytes")) << r.out;
  EXPECT_EQ(unhex(j["dir_bytes"].get<std::string>()), odd.string());
  EXPECT_EQ(unhex(j["lock_file_bytes"].get<std::string>()),
            (odd / ".lock").string());
  EXPECT_THAT(j["dir"].get<std::string>(), HasSubstr("bad\\xff\\xfe\\x1bname"));
  Result text = cli({"status", odd.string()});
  EXPECT_THAT(text.out, HasSubstr("bad\\xff\\xfe\\x1bname/.lock: free"));
  // A valid UTF-8 name is given as it is, with no _bytes.
  const fs::path cafe = dir() / "caf\xc3\xa9";
  fs::create_directory(cafe);
  Json c = Json::parse(cli({"status", "--json", cafe.string()}).out);
  EXPECT_EQ(c["dir"], cafe.string());
  EXPECT_FALSE(c.contains("dir_bytes"));
}

// These depend on the library reporting unsafe lock files
// (DirLock::unsafe_reason, LockState::unsafe_reason,
// LockOptions::refuse_unsafe_lock_file): a directory anyone may write,
// without the sticky bit, lets anyone delete the lock file.
TEST_F(CliTest, UnsafeLockFileWarnsInRunAndShowsInStatus) {
  const fs::path open_dir = dir() / "open";
  fs::create_directory(open_dir);
  ASSERT_EQ(::chmod(open_dir.c_str(), 0777), 0);
  Result r = cli({"run", open_dir.string(), "--", "true"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.err, HasSubstr("tierlock: " + (open_dir / ".lock").string() +
                               ": warning: "));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(cli({"run", "-q", open_dir.string(), "--", "true"}).err, "");
  Result refused =
      cli({"run", "--refuse-unsafe", open_dir.string(), "--", "echo", "ran"});
  EXPECT_EQ(refused.code, 1);
  EXPECT_EQ(refused.out, "");
  EXPECT_THAT(refused.err, HasSubstr(open_dir.string()));
  Result text = cli({"status", open_dir.string()});
  EXPECT_THAT(text.out, HasSubstr("  unsafe lock file: "));
  Json j = Json::parse(cli({"status", "--json", open_dir.string()}).out);
  EXPECT_TRUE(j.contains("unsafe_reason")) << j.dump();
  // A safe one: no warning, no field.
  EXPECT_EQ(cli({"run", dir().string(), "--", "true"}).err, "");
  EXPECT_FALSE(status_json().contains("unsafe_reason"));
  EXPECT_EQ(cli({"run", "--refuse-unsafe", dir().string(), "--", "true"}).code,
            0);
}

TEST_F(CliTest, StatusOfAFreeLockCreatesNothing) {
  Json j = status_json();
  EXPECT_EQ(j["dir"], dir().string());
  EXPECT_EQ(j["lock_file"], lock().string());
  EXPECT_EQ(j["state"], "free");
  EXPECT_TRUE(j["holders"].empty());
  EXPECT_FALSE(j.contains("mode"));
  EXPECT_FALSE(snapshot(lock()).exists)
      << "status must not create the lock file";
  ASSERT_EQ(cli({"run", dir().string(), "--", "true"}).code, 0);
  EXPECT_EQ(status_json()["state"], "free");
  Result text = cli({"status", dir().string()});
  EXPECT_EQ(text.code, 0);
  EXPECT_EQ(text.out, lock().string() + ": free\n");
}

TEST_F(CliTest, StatusNamesAnExclusiveTierlockHolder) {
  Process holder = hold_with_cli({"--tier", "5:workspace"});
  Json j = status_json();
  EXPECT_EQ(j["state"], "held");
  EXPECT_EQ(j["mode"], "exclusive");
  ASSERT_EQ(j["holders"].size(), 1u) << j.dump();
  const Json& h = j["holders"][0];
  EXPECT_EQ(h["pid"], holder.pid());
  EXPECT_EQ(h["mode"], "exclusive");
  EXPECT_THAT(h["program"].get<std::string>(),
              HasSubstr("tierlock run --tier 5:workspace"));
  EXPECT_EQ(h["host"], hostname());
  EXPECT_EQ(h["tier"]["level"], 5);
  EXPECT_EQ(h["tier"]["name"], "workspace");
  EXPECT_EQ(h["recorded"], true);
  ASSERT_TRUE(h.contains("since"));
  EXPECT_THAT(
      h["since"].get<std::string>(),
      ::testing::MatchesRegex("20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9:]+Z"));
  Result text = cli({"status", dir().string()});
  EXPECT_THAT(text.out, HasSubstr(": held exclusively\n  pid " +
                                  std::to_string(holder.pid())));
  EXPECT_THAT(text.out, HasSubstr("tier 5:workspace"));
  holder.write_line("go");
  EXPECT_EQ(holder.wait().code, 0);
  EXPECT_EQ(status_json()["state"], "free");
}

TEST_F(CliTest, StatusShowsAStoppedHolderAndNobodyStealsTheLock) {
  Process holder = hold_with_cli({});
  ASSERT_EQ(::kill(holder.pid(), SIGSTOP), 0);
  Json j = status_json();
  EXPECT_EQ(j["state"], "held");
  ASSERT_EQ(j["holders"].size(), 1u) << j.dump();
  EXPECT_EQ(j["holders"][0]["pid"], holder.pid());
  // Stopped is not dead: a waiter with a timeout gets the conflict code.
  EXPECT_EQ(cli({"run", "-w", "0.2", dir().string(), "--", "true"}).code, 75);
  ASSERT_EQ(::kill(holder.pid(), SIGCONT), 0);
  holder.write_line("go");
  EXPECT_EQ(holder.wait().code, 0);
  EXPECT_EQ(status_json()["state"], "free");
}

TEST_F(CliTest, StatusListsSeveralSharedHolders) {
  Process a = hold_with_cli({"--shared"});
  Process b = hold_with_cli({"-s"});
  Process c = start_holder(dir(), Mode::kShared);
  ASSERT_EQ(c.read_line(), "locked");
  Json j = status_json();
  EXPECT_EQ(j["state"], "held");
  EXPECT_EQ(j["mode"], "shared");
  std::vector<pid_t> pids;
  for (const Json& h : j["holders"]) {
    EXPECT_EQ(h["mode"], "shared");
    EXPECT_EQ(h["recorded"], true) << h.dump();
    EXPECT_TRUE(h.contains("since")) << h.dump();
    pids.push_back(h["pid"].get<pid_t>());
  }
  EXPECT_THAT(pids, ::testing::UnorderedElementsAre(a.pid(), b.pid(), c.pid()));
  for (Process* p : {&a, &b}) {
    p->write_line("go");
    EXPECT_EQ(p->wait().code, 0);
  }
  EXPECT_EQ(stop_holder(c).code, 0);
}

TEST_F(CliTest, StatusNamesAFlockHolderFromTheKernel) {
  if (flock_path().empty()) GTEST_SKIP() << "flock(1) not found";
  Process holder = Process::spawn(
      {flock_path(), lock().string(), "sh", "-c", "echo locked; read x"});
  ASSERT_EQ(holder.read_line(), "locked");
  Json j = status_json();
  EXPECT_EQ(j["state"], "held");
  ASSERT_EQ(j["holders"].size(), 1u) << j.dump();
  const Json& h = j["holders"][0];
  EXPECT_EQ(h["pid"], holder.pid());
  EXPECT_THAT(h["program"].get<std::string>(),
              HasSubstr("sh -c echo locked; read x"));
  EXPECT_EQ(h["recorded"], false);
  // Not known for a holder without a record: left out, never invented.
  EXPECT_FALSE(h.contains("since"));
  EXPECT_FALSE(h.contains("host"));
  EXPECT_FALSE(h.contains("tier"));
  holder.write_line("go");
  EXPECT_EQ(holder.wait().code, 0);
}

TEST_F(CliTest, InteroperatesWithFlockBothWays) {
  if (flock_path().empty()) GTEST_SKIP() << "flock(1) not found";
  Process ours = hold_with_cli({});
  EXPECT_EQ(run({flock_path(), "-n", lock().string(), "true"}).status.code, 1);
  EXPECT_EQ(
      run({flock_path(), "-n", "-s", lock().string(), "true"}).status.code, 1);
  ours.write_line("go");
  EXPECT_EQ(ours.wait().code, 0);
  Process theirs = Process::spawn(
      {flock_path(), "-s", lock().string(), "sh", "-c", "echo locked; read x"});
  ASSERT_EQ(theirs.read_line(), "locked");
  EXPECT_EQ(cli({"run", "-n", dir().string(), "--", "true"}).code, 75);
  EXPECT_EQ(cli({"run", "-n", "-s", dir().string(), "--", "true"}).code, 0);
  theirs.write_line("go");
  EXPECT_EQ(theirs.wait().code, 0);
}

TEST_F(CliTest, InteroperatesWithPythonFilelockBothWays) {
  // The first python3 in $PATH may be another installation (pyenv, venv)
  // than the one python3-filelock is installed for.
  std::string py;
  for (const std::string& candidate :
       {find_program("python3"), std::string("/usr/bin/python3")}) {
    if (!candidate.empty() &&
        run({candidate, "-c", "import filelock"}).status.code == 0) {
      py = candidate;
      break;
    }
  }
  if (py.empty()) GTEST_SKIP() << "python3-filelock not installed";
  // Exit 0 if acquired, 3 if it timed out (held elsewhere).
  const std::string try_lock =
      "import filelock, sys\n"
      "try:\n"
      "  with filelock.FileLock(sys.argv[1], timeout=0): pass\n"
      "except filelock.Timeout:\n"
      "  sys.exit(3)\n";
  Process ours = hold_with_cli({});
  EXPECT_EQ(run({py, "-c", try_lock, lock().string()}).status.code, 3);
  ours.write_line("go");
  EXPECT_EQ(ours.wait().code, 0);
  EXPECT_EQ(run({py, "-c", try_lock, lock().string()}).status.code, 0);
  Process theirs = Process::spawn({py, "-c",
                                   "import filelock, sys\n"
                                   "with filelock.FileLock(sys.argv[1]):\n"
                                   "  print('locked', flush=True)\n"
                                   "  sys.stdin.readline()\n",
                                   lock().string()});
  ASSERT_EQ(theirs.read_line(), "locked");
  EXPECT_EQ(cli({"run", "-n", dir().string(), "--", "true"}).code, 75);
  Json j = status_json();
  ASSERT_EQ(j["holders"].size(), 1u) << j.dump();
  EXPECT_EQ(j["holders"][0]["pid"], theirs.pid());
  theirs.write_line("go");
  EXPECT_EQ(theirs.wait().code, 0);
}

TEST_F(CliTest, CreateMakesAMissingDirectory) {
  const fs::path fresh = dir() / "fresh";
  Result missing = cli({"run", fresh.string(), "--", "true"});
  EXPECT_EQ(missing.code, 66);
  EXPECT_EQ(missing.err, "tierlock: " + fresh.string() +
                             ": no such directory (--create creates it)\n");
  EXPECT_FALSE(fs::exists(fresh));
  EXPECT_EQ(cli({"run", "--create", fresh.string(), "--", "true"}).code, 0);
  EXPECT_TRUE(fs::is_directory(fresh));
  EXPECT_EQ(cli({"run", "--create", fresh.string(), "--", "true"}).code,
            0);  // exists: fine
}

TEST_F(CliTest, LockNameChoosesTheLockFile) {
  Process holder = hold_with_cli({"--lock-name", "other.lock"});
  EXPECT_EQ(cli({"run", "-n", dir().string(), "--", "true"}).code, 0);
  EXPECT_EQ(cli({"run", "-n", "--lock-name", "other.lock", dir().string(), "--",
                 "true"})
                .code,
            75);
  Json j = status_json({"--lock-name", "other.lock"});
  EXPECT_EQ(j["lock_file"], (dir() / "other.lock").string());
  EXPECT_EQ(j["state"], "held");
  holder.write_line("go");
  EXPECT_EQ(holder.wait().code, 0);
}

struct BadInput {
  const char* name;
  std::vector<std::string> args;  // "DIR" is replaced by the test directory
  int code;
  const char* message;  // a part of stderr
};

class CliBadInputTest : public CliTest,
                        public ::testing::WithParamInterface<BadInput> {};

TEST_P(CliBadInputTest, ExitsWithItsCodeAndAMessage) {
  write_file(dir() / "file", "not a directory");
  write_file(dir() / "script", "#!/bin/sh\necho should not run\n", 0644);
  std::vector<std::string> args = GetParam().args;
  for (std::string& a : args) {
    if (a == "DIR") a = dir().string();
    if (a.rfind("DIR/", 0) == 0) a = (dir() / a.substr(4)).string();
  }
  Result r = cli(args);
  EXPECT_EQ(r.code, GetParam().code) << r.err;
  EXPECT_THAT(r.err, HasSubstr(GetParam().message));
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.code, 75);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CliBadInputTest,
    ::testing::Values(
        BadInput{"NoSubcommand", {}, 64, "subcommand: missing"},
        BadInput{"UnknownOption",
                 {"run", "--bogus", "DIR", "--", "true"},
                 64,
                 "--bogus"},
        BadInput{"UnknownOptionBeforeDir",
                 {"run", "-z", "DIR", "true"},
                 64,
                 "unknown option '-z'"},
        BadInput{"NoCommand", {"run", "DIR"}, 64, "COMMAND is required"},
        BadInput{"NoDirectory", {"run"}, 64, "DIR is required"},
        BadInput{"TimeoutNotANumber",
                 {"run", "-w", "soon", "DIR", "--", "true"},
                 64,
                 "soon"},
        BadInput{"NegativeTimeout",
                 {"run", "-w", "-1", "DIR", "--", "true"},
                 64,
                 "--timeout"},
        BadInput{"NaNTimeout",
                 {"run", "-w", "nan", "DIR", "--", "true"},
                 64,
                 "--timeout"},
        BadInput{"NegativeZeroTimeout",
                 {"run", "-w", "-0", "DIR", "--", "true"},
                 64,
                 "--timeout"},
        BadInput{"UnknownOptionAfterMarker",
                 {"run", "--", "-x", "DIR", "true"},
                 66,
                 "no such directory"},
        BadInput{"ConflictCodeZero",
                 {"run", "-E", "0", "DIR", "--", "true"},
                 64,
                 "--conflict-exit-code"},
        BadInput{"BadTier",
                 {"run", "--tier", "high", "DIR", "--", "true"},
                 64,
                 "LEVEL[:NAME]"},
        BadInput{"BadLockName",
                 {"run", "--lock-name", "a/b", "DIR", "--", "true"},
                 64,
                 "plain file name"},
        BadInput{"MissingDirectory",
                 {"run", "DIR/missing", "--", "true"},
                 66,
                 "missing: no such directory"},
        BadInput{"NotADirectory",
                 {"run", "DIR/file", "--", "true"},
                 66,
                 "file: not a directory"},
        BadInput{"CommandNotFound",
                 {"run", "DIR", "--", "tierlock-no-such-command"},
                 127,
                 "tierlock: tierlock-no-such-command: command not found"},
        BadInput{"CommandNotExecutable",
                 {"run", "DIR", "--", "DIR/script"},
                 126,
                 "Permission denied"},
        BadInput{"StatusMissingDirectory",
                 {"status", "DIR/missing"},
                 1,
                 "missing: no such directory"},
        BadInput{"StatusNotADirectory",
                 {"status", "DIR/file"},
                 1,
                 "Not a directory"}),
    [](const ::testing::TestParamInfo<BadInput>& i) {
      return std::string(i.param.name);
    });

TEST_F(CliTest, PermissionDeniedExits77) {
  // A directory anyone may enter but nobody but root may write: the lock file
  // cannot be created. Root bypasses that, so as root (CI) the command runs
  // as nobody through setpriv(1).
  TempDir open_parent;
  ::chmod(open_parent.path().c_str(), 0755);
  const fs::path locked = open_parent.path() / "locked";
  fs::create_directory(locked);
  ::chmod(locked.c_str(), 0555);
  std::vector<std::string> argv = {cli_path(), "run", locked.string(), "--",
                                   "true"};
  if (::geteuid() == 0) {
    if (::access("/usr/bin/setpriv", X_OK) != 0) {
      GTEST_SKIP() << "root without setpriv(1): cannot run unprivileged";
    }
    argv.insert(argv.begin(), {"/usr/bin/setpriv", "--reuid=65534",
                               "--regid=65534", "--clear-groups"});
  }
  std::string command;
  for (const std::string& a : argv) command += "'" + a + "' ";
  RunResult r = run({"/bin/sh", "-c", command + "2>&1"});
  EXPECT_EQ(r.status.code, 77) << r.out;
  EXPECT_THAT(r.out, HasSubstr("Permission denied"));
  EXPECT_THAT(r.out, HasSubstr(locked.string()));
  EXPECT_FALSE(fs::exists(locked / ".lock"));
  ::chmod(locked.c_str(), 0700);
}

TEST_F(CliTest, StatusReportsEveryDirectoryAndFailsIfOneIsBad) {
  Result r = cli({"status", "--json", dir().string(),
                  (dir() / "missing").string(), dir().string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 2);
  EXPECT_THAT(r.err, HasSubstr("missing: no such directory"));
}

TEST_F(CliTest, HelpIsCompleteAndExitsZero) {
  Result top = cli({"--help"});
  EXPECT_EQ(top.code, 0);
  for (const char* s : {"run", "status", "Exit codes", "75", "127"}) {
    EXPECT_THAT(top.out, HasSubstr(s));
  }
  Result run_help = cli({"run", "--help"});
  EXPECT_EQ(run_help.code, 0);
  for (const char* s :
       {"--shared", "--no-wait", "--timeout", "--conflict-exit-code", "--tier",
        "--lock-name", "--create", "--quiet", "TIERLOCK_DIR", "TIERLOCK_FD",
        "--close", "--refuse-unsafe", "Exit codes"}) {
    EXPECT_THAT(run_help.out, HasSubstr(s));
  }
}

}  // namespace
}  // namespace tierlock::testing

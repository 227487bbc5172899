// End-to-end tests of the `tierlock` command's flock(1) parity and its
// shell-facing behaviour (tools/tierlock), on the real binary in real
// processes: a run inside a run of the same lock (fails at once, or
// --reentrant), lock-order refusals in the CLI's words, -c, --verbose,
// `tierlock lock --fd`, --version / `version` / --help, one error format for
// parse errors, and durations rounded for people.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <regex>
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
using ::testing::StartsWith;
namespace fs = std::filesystem;

std::string cli_path() { return TIERLOCK_CLI_PATH; }

struct Result {
  int code;  // -1: still running at the bound (killed)
  std::string out;
  std::string err;
};

// Runs the CLI with stdout and stderr to files and stdin from /dev/null, at
// most `bound`; past it the process is SIGKILLed and the code is -1, so a
// hang fails the test instead of hanging ctest.
Result run_cli(const std::vector<std::string>& args, const fs::path& io_dir,
               std::chrono::milliseconds bound = kTimeout) {
  static int counter = 0;
  const fs::path out = io_dir / ("out" + std::to_string(++counter));
  const fs::path err = io_dir / ("err" + std::to_string(counter));
  std::vector<std::string> argv = {cli_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int spawned =
      posix_spawn(&pid, cargv[0], &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (spawned != 0) return {-2, "", "spawn failed"};
  int st = 0;
  int code = -1;
  if (wait_until([&] { return ::waitpid(pid, &st, WNOHANG) == pid; }, bound)) {
    code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  } else {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &st, 0);
  }
  return {code, read_file(out), read_file(err)};
}

class CliParityTest : public TierlockTest {
 protected:
  void SetUp() override {
    TierlockTest::SetUp();
    if (cli_path().empty()) GTEST_SKIP() << "tierlock_cli is not built";
  }
  Result cli(const std::vector<std::string>& args,
             std::chrono::milliseconds bound = kTimeout) {
    return run_cli(args, io_.path(), bound);
  }
  fs::path lock() const { return dir() / ".lock"; }
  std::string d() const { return dir().string(); }
  TempDir io_;  // stdout/stderr files, outside the locked directory
};

// Every error line is `tierlock: <what>: <why>`, one line.
void ExpectOneErrorLine(const std::string& err) {
  EXPECT_THAT(err, StartsWith("tierlock: ")) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_NE(err.find(": ", 10), std::string::npos) << err;
}

// --- A run inside a run of the same lock ---------------------------------

// The old behaviour was to wait for its own ancestor forever: the bound
// (far below ctest's) turns that into a failure (code -1). The inner run has
// -w 60 so that, on a build that still hangs, it gives up on its own after
// the outer one is killed.
TEST_F(CliParityTest, ARunInsideARunOfTheSameLockFailsAtOnceWith70) {
  const auto start = std::chrono::steady_clock::now();
  Result r = cli({"run", d(), "--", cli_path(), "run", "-w", "60", d(), "--",
                  "echo", "inner ran"},
                 std::chrono::seconds(20));
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_NE(r.code, -1) << "the nested run waited for its own ancestor";
  EXPECT_EQ(r.code, 70) << r.err;
  EXPECT_LT(took, std::chrono::seconds(10));
  EXPECT_EQ(r.out, "");
  ExpectOneErrorLine(r.err);
  EXPECT_THAT(r.err, HasSubstr("tierlock: " + lock().string() +
                               ": already held exclusively by pid "));
  EXPECT_THAT(r.err, HasSubstr("an ancestor of this process"));
  EXPECT_THAT(r.err, HasSubstr("--reentrant"));
  EXPECT_TRUE(LocksBecome(lock(), no_locks()));
}

// Through a shell, without the inherited descriptor (--close), and under
// another spelling of the directory (a symlink): the identity is the file's
// device and inode, confirmed by the kernel's lock table, not the text.
TEST_F(CliParityTest, SelfRelockIsFoundByIdentityThroughAShellAndWithClose) {
  fs::create_directory(dir() / "ws");
  fs::create_directory_symlink(dir() / "ws", dir() / "alias");
  Result r = cli({"run", "--close", (dir() / "ws").string(), "--", "sh", "-c",
                  "\"$0\" run -w 60 \"$1\" -- echo inner; echo \"rc=$?\"",
                  cli_path(), (dir() / "alias").string() + "/"},
                 std::chrono::seconds(20));
  ASSERT_NE(r.code, -1) << "the nested run waited for its own ancestor";
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "rc=70\n");
  EXPECT_THAT(r.err, HasSubstr("an ancestor of this process"));
}

TEST_F(CliParityTest, ReentrantRunsTheCommandUnderTheAncestorsLock) {
  if (flock_path().empty()) GTEST_SKIP() << "flock(1) not found";
  Result r = cli({"run", d(), "--", cli_path(), "run", "--reentrant", d(), "--",
                  "sh", "-c",
                  "\"$0\" -n \"$1\" true; echo \"flock=$?\"; printf '%s\\n' "
                  "\"$TIERLOCK_DIR\"",
                  flock_path(), lock().string()},
                 std::chrono::seconds(20));
  ASSERT_NE(r.code, -1);
  EXPECT_EQ(r.code, 0) << r.err;
  // Still held by the outer run while the inner command runs.
  EXPECT_EQ(r.out, "flock=1\n" + d() + "\n");
  EXPECT_EQ(r.err, "");
  // With no ancestor holding it, --reentrant is an ordinary run.
  Result plain = cli({"run", "--reentrant", d(), "--", "echo", "ok"});
  EXPECT_EQ(plain.code, 0) << plain.err;
  EXPECT_EQ(plain.out, "ok\n");
}

TEST_F(CliParityTest, SharedUnderSharedIsTakenAndExclusiveUnderSharedIsNot) {
  Result shared = cli({"run", "-s", d(), "--", cli_path(), "run", "-s", d(),
                       "--", "echo", "inner"},
                      std::chrono::seconds(20));
  EXPECT_EQ(shared.code, 0) << shared.err;
  EXPECT_EQ(shared.out, "inner\n");
  // --reentrant cannot turn a shared hold into an exclusive one.
  Result upgrade = cli({"run", "-s", d(), "--", cli_path(), "run",
                        "--reentrant", d(), "--", "echo", "inner"},
                       std::chrono::seconds(20));
  ASSERT_NE(upgrade.code, -1);
  EXPECT_EQ(upgrade.code, 70) << upgrade.err;
  EXPECT_EQ(upgrade.out, "");
  EXPECT_THAT(upgrade.err, HasSubstr("held shared by pid"));
}

// --- Lock-order refusals in the CLI's words -------------------------------

TEST_F(CliParityTest, ATierRefusalIsOneLineInTheCommandsTerms) {
  fs::create_directory(dir() / "ws");
  fs::create_directory(dir() / "pkg");
  for (const char* inner_tier : {"10:workspace", "20:other"}) {
    SCOPED_TRACE(inner_tier);
    Result r = cli({"run", "--tier", "20:package", (dir() / "pkg").string(),
                    "--", cli_path(), "run", "--tier", inner_tier,
                    (dir() / "ws").string(), "--", "echo", "inner"});
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_EQ(r.out, "");
    ExpectOneErrorLine(r.err);
    EXPECT_THAT(r.err,
                HasSubstr("tierlock: " + (dir() / "ws" / ".lock").string() +
                          ": lock order violation: "));
    EXPECT_THAT(r.err, HasSubstr("tier 20 'package'"));
    EXPECT_THAT(r.err, HasSubstr("held by the parent process, pid "));
    EXPECT_THAT(r.err, HasSubstr("--tier"));
    for (const char* cxx : {"acquire_all", "tierlock::", ".cc:", "taken at",
                            "operator()", "======"}) {
      EXPECT_THAT(r.err, Not(HasSubstr(cxx)));
    }
  }
}

// --- flock(1) parity: -c, --verbose ---------------------------------------

TEST_F(CliParityTest, DashCRunsAShellStringEitherSideOfDir) {
  Result before = cli({"run", "-c", "echo \"a $TIERLOCK_DIR\" && exit 3", d()});
  EXPECT_EQ(before.code, 3) << before.err;
  EXPECT_EQ(before.out, "a " + d() + "\n");
  Result after = cli({"run", d(), "-c", "echo b; exit 4"});
  EXPECT_EQ(after.code, 4) << after.err;
  EXPECT_EQ(after.out, "b\n");
  Result both = cli({"run", "-c", "echo c", d(), "--", "echo", "d"});
  EXPECT_EQ(both.code, 64);
  EXPECT_EQ(both.out, "");
  ExpectOneErrorLine(both.err);
  EXPECT_THAT(both.err, HasSubstr("tierlock: -c: is the whole command"));
}

TEST_F(CliParityTest, VerboseSaysWhoItWaitedForHowLongAndTheRelease) {
  Result free_run = cli({"run", "--verbose", d(), "--", "true"});
  EXPECT_EQ(free_run.code, 0) << free_run.err;
  EXPECT_THAT(free_run.err,
              HasSubstr(lock().string() + ": locked (exclusive) after "));
  EXPECT_THAT(free_run.err, HasSubstr("without waiting"));
  EXPECT_THAT(free_run.err, HasSubstr(": released after "));
  EXPECT_THAT(free_run.err, HasSubstr("(the command exited 0)"));

  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  const std::string holder_pid = std::to_string(holder.pid());
  Process waiter = Process::spawn(
      {"sh", "-c", "exec \"$0\" run --verbose \"$1\" -- true 2>&1", cli_path(),
       d()});
  // --verbose names the holder as the wait starts (not after 0.5 s), and
  // the grant says how long it took and whom it waited for.
  EXPECT_THAT(waiter.read_line().value_or(""),
              StartsWith("tierlock: waiting for " + lock().string() +
                         " (held exclusively by pid " + holder_pid + " '"));
  EXPECT_EQ(stop_holder(holder).code, 0);
  const std::string locked = waiter.read_line().value_or("");
  EXPECT_THAT(locked, StartsWith("tierlock: " + lock().string() +
                                 ": locked (exclusive) after "));
  EXPECT_THAT(locked,
              HasSubstr("; waited for: held exclusively by pid " + holder_pid));
  EXPECT_THAT(waiter.read_line().value_or(""), HasSubstr(": released after "));
  EXPECT_EQ(waiter.wait().code, 0);
  EXPECT_EQ(cli({"run", "--verbose", "-q", d(), "--", "true"}).code, 64);
}

// --- flock(1) parity: a descriptor the script opened -------------------------

TEST_F(CliParityTest, LockFdLeavesTheLockWithTheShellsDescriptor) {
  if (flock_path().empty()) GTEST_SKIP() << "flock(1) not found";
  // The shell opens fd 9, tierlock locks it and exits; the lock stays with
  // the shell's descriptor until it unlocks (-u) or closes it.
  Result r = cli(
      {"run", "--close", "--create", (dir() / "unused").string(), "--", "sh",
       "-c",
       "exec 9>\"$2\"; \"$0\" lock --fd 9 || exit 9; "
       "\"$1\" -n \"$2\" true; echo \"held=$?\"; "
       "\"$0\" lock -u --fd 9; \"$1\" -n \"$2\" true; echo \"unlocked=$?\"; "
       "\"$0\" lock -s --fd 9; \"$1\" -n -s \"$2\" true; echo \"shared=$?\"; "
       "exec 9>&-; \"$1\" -n \"$2\" true; echo \"closed=$?\"",
       cli_path(), flock_path(), lock().string()});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "held=1\nunlocked=0\nshared=0\nclosed=0\n") << r.err;
  EXPECT_EQ(r.err, "");
}

TEST_F(CliParityTest, LockFdHolderIsTheShellAndStatusNamesIt) {
  Process shell = Process::spawn(
      {"sh", "-c",
       "exec 9>\"$1\"; \"$0\" lock --fd 9 || exit 9; echo locked; read x",
       cli_path(), lock().string()});
  ASSERT_EQ(shell.read_line(), "locked");
  Result status = cli({"status", "--json", d()});
  ASSERT_EQ(status.code, 0) << status.err;
  const nlohmann::json j = nlohmann::json::parse(status.out);
  EXPECT_EQ(j["state"], "held");
  ASSERT_EQ(j["holders"].size(), 1u) << status.out;
  EXPECT_EQ(j["holders"][0]["pid"], shell.pid());
  shell.write_line("go");
  EXPECT_EQ(shell.wait().code, 0);
  EXPECT_TRUE(LocksBecome(lock(), no_locks()));
}

TEST_F(CliParityTest, LockFdContendedNamesTheHolderAndTimesOutRounded) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  Result r = cli({"run", "--close", "--create", (dir() / "x").string(), "--",
                  "sh", "-c",
                  "exec 7>\"$1\"; \"$0\" lock -n --fd 7; echo \"n=$?\"; "
                  "\"$0\" lock -w 0.3 -E 9 --fd 7; echo \"w=$?\"",
                  cli_path(), lock().string()});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "n=75\nw=9\n");
  EXPECT_THAT(r.err, HasSubstr("tierlock: " + lock().string() +
                               ": held exclusively by pid " +
                               std::to_string(holder.pid())));
  EXPECT_TRUE(
      std::regex_search(r.err, std::regex("timed out after [0-9]+ ms; ")))
      << r.err;
  EXPECT_EQ(stop_holder(holder).code, 0);
  Result closed = cli({"lock", "--fd", "9"});
  EXPECT_EQ(closed.code, 64);
  ExpectOneErrorLine(closed.err);
  EXPECT_THAT(closed.err, HasSubstr("tierlock: fd 9: Bad file descriptor"));
}

// --- --version, version, --help ------------------------------------------

TEST_F(CliParityTest, VersionAndBuildOptions) {
  Result v = cli({"--version"});
  EXPECT_EQ(v.code, 0) << v.err;
  EXPECT_TRUE(std::regex_match(
      v.out, std::regex("tierlock [0-9]+\\.[0-9]+\\.[0-9]+\n")))
      << v.out;
  Result full = cli({"version"});
  EXPECT_EQ(full.code, 0) << full.err;
  EXPECT_THAT(full.out, StartsWith(v.out));
  EXPECT_THAT(full.out, HasSubstr("\nlease backends: "));
  EXPECT_THAT(full.out, HasSubstr("\ndebug checks: "));
  EXPECT_THAT(full.out, HasSubstr("\nbuild type: "));
}

TEST_F(CliParityTest, HelpNamesEveryModeAndNoUninstalledFile) {
  Result top = cli({"--help"});
  EXPECT_EQ(top.code, 0);
  for (const char* s :
       {"tierlock run [OPTIONS] DIR", "-c 'SHELL COMMAND'",
        "tierlock run --backend URL --key NAME", "tierlock status",
        "tierlock lock", "--fd N", "tierlock version", "--version", " 70 "}) {
    EXPECT_THAT(top.out, HasSubstr(s));
  }
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--help"},
        {"run", "--help"},
        {"status", "--help"},
        {"lock", "--help"},
        {"version", "--help"}}) {
    Result r = cli(args);
    EXPECT_EQ(r.code, 0);
    EXPECT_THAT(r.out, Not(HasSubstr("docs/"))) << args[0];
    EXPECT_THAT(r.out, Not(HasSubstr(".md"))) << args[0];
  }
  Result run_help = cli({"run", "--help"});
  for (const char* s : {"--reentrant", "--verbose", "-c,--command", " 70 "}) {
    EXPECT_THAT(run_help.out, HasSubstr(s));
  }
}

// --- One error format ------------------------------------------------------

struct ParseCase {
  const char* name;
  std::vector<std::string> args;  // "DIR" is replaced by the test directory
  const char* line;               // the whole stderr; {DIR}: the directory
};

class CliParseErrorTest : public CliParityTest,
                          public ::testing::WithParamInterface<ParseCase> {};

TEST_P(CliParseErrorTest, IsOneLineInTierlocksFormatWithExit64) {
  std::vector<std::string> args = GetParam().args;
  for (std::string& a : args) {
    if (a == "DIR") a = d();
  }
  std::string want = GetParam().line;
  if (const std::size_t at = want.find("{DIR}"); at != std::string::npos)
    want.replace(at, 5, d());
  Result r = cli(args);
  EXPECT_EQ(r.code, 64) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, want + "\n");
  EXPECT_THAT(r.err, Not(HasSubstr("Run with --help")));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CliParseErrorTest,
    ::testing::Values(
        ParseCase{"NotANumber",
                  {"run", "-E", "abc", "DIR", "true"},
                  "tierlock: --conflict-exit-code: expected a number, not "
                  "'abc'"},
        ParseCase{"MissingValue",
                  {"run", "-w"},
                  "tierlock: --timeout: needs a value"},
        ParseCase{"UnknownTopLevelOption",
                  {"--frobnicate"},
                  "tierlock: --frobnicate: not a subcommand or option (run, "
                  "status, lock, version; tierlock --help)"},
        ParseCase{"NoSubcommand",
                  {},
                  "tierlock: subcommand: missing: run, status, lock or "
                  "version (tierlock --help)"},
        ParseCase{"StatusUnknownOption",
                  {"status", "--frobnicate", "DIR"},
                  "tierlock: --frobnicate: unexpected argument (tierlock "
                  "status --help)"},
        ParseCase{"StatusWithoutDir",
                  {"status"},
                  "tierlock: DIR: is required (tierlock status --help)"},
        ParseCase{"LockWithoutFd",
                  {"lock"},
                  "tierlock: --fd: is required (tierlock lock --help)"},
        ParseCase{"BackendWithADir",
                  {"run", "--backend", "sqlite:/nonexistent/db", "--key", "x",
                   "DIR", "--", "true"},
                  "tierlock: {DIR}: DIR is not allowed with --backend (a lease "
                  "has no directory: tierlock run --backend URL --key NAME "
                  "[--] COMMAND [ARG...])"}),
    [](const ::testing::TestParamInfo<ParseCase>& i) {
      return std::string(i.param.name);
    });

// --- Durations rounded for people -------------------------------------------

TEST_F(CliParityTest, TimeoutMessageIsRoundedToWholeMilliseconds) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  Result r = cli({"run", "-w", "0.31", d(), "--", "true"});
  EXPECT_EQ(r.code, 75);
  ExpectOneErrorLine(r.err);
  EXPECT_TRUE(std::regex_search(
      r.err, std::regex(": timed out after [0-9]{3,4} ms; held exclusively")))
      << r.err;
  EXPECT_EQ(stop_holder(holder).code, 0);
}

}  // namespace
}  // namespace tierlock::testing

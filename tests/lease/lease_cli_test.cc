// tests/lease/lease_cli_test.cc
//
// `tierlock run --backend … --key …` (tools/tierlock/lease_run.cc), driving
// the real binary against the SQLite backend (no server needed).
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lease/history.h"
#include "lease/proxy.h"
#include "lease/servers.h"
#include "support/status.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "tierlock/lease.h"
#include "tierlock/lease_sqlite.h"
#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
#include "tierlock/lease_postgres.h"
#endif
#ifdef TIERLOCK_HAVE_LEASE_REDIS
#include "tierlock/lease_redis.h"
#endif

#ifndef TIERLOCK_CLI_PATH
#error "TIERLOCK_CLI_PATH must be defined"
#endif

namespace tierlock::testing {
namespace {

using namespace std::chrono_literals;

class LeaseCliTest : public ::testing::Test {
 protected:
  std::string backend() const {
    return "sqlite:" + (tmp_.path() / "leases.db").string();
  }
  std::vector<std::string> run_args(std::vector<std::string> extra,
                                    std::vector<std::string> command) const {
    std::vector<std::string> argv = {TIERLOCK_CLI_PATH, "run", "--backend",
                                     backend()};
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
  RunResult r = run(run_args(
      {"--key", "job"},
      {"sh", "-c",
       "echo $TIERLOCK_TOKEN $TIERLOCK_LEASE_KEY > " + out + "; exit 7"}));
  EXPECT_EQ(r.status.code, 7);
  EXPECT_EQ(read("env"), "1 job");
  r = run(run_args({"--key", "job"},
                   {"sh", "-c", "echo $TIERLOCK_TOKEN > " + out}));
  EXPECT_EQ(r.status.code, 0);
  EXPECT_EQ(read("env"), "2") << "tokens increase per run";
}

TEST_F(LeaseCliTest, HeldKeyGivesTheConflictCodeWithNoWaitOrTimeout) {
  Process holder =
      Process::spawn({lease_helper_path(), "hold", backend(), "busy", "60000"});
  std::optional<std::string> held = holder.read_line();
  ASSERT_TRUE(held && held->rfind("held ", 0) == 0) << held.value_or("");
  EXPECT_EQ(run(run_args({"--key", "busy", "-n"}, {"true"})).status.code, 75);
  EXPECT_EQ(
      run(run_args({"--key", "busy", "-n", "-E", "9"}, {"true"})).status.code,
      9);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(run(run_args({"--key", "busy", "-w", "0.3"}, {"true"})).status.code,
            75);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
  holder.close_stdin();  // the helper releases at EOF
  EXPECT_EQ(holder.wait().code, 0);
  EXPECT_EQ(run(run_args({"--key", "busy", "-n"}, {"true"})).status.code, 0);
}

TEST_F(LeaseCliTest, SigtermWhileWaitingExits143HoldingNothing) {
  Process holder =
      Process::spawn({lease_helper_path(), "hold", backend(), "k", "60000"});
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
        return (std::stoull(line.substr(7), nullptr, 16) &
                (1ULL << (SIGTERM - 1))) != 0;
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

// The pids a command prints on its first line ("SH BG").
struct Pids {
  pid_t sh = 0, bg = 0;
};
Pids read_pids(Process& cli) {
  Pids p;
  std::istringstream in(cli.read_line().value_or(""));
  in >> p.sh >> p.bg;
  return p;
}

// Kills what a failed test left running, by pid, only while it is alive.
struct KillLeftovers {
  std::vector<pid_t> pids;
  ~KillLeftovers() {
    for (pid_t p : pids) {
      if (p > 0 && !process_gone(p)) ::kill(p, SIGKILL);
    }
  }
};

// Another process takes the run's lease away: its session is host:pid.
void steal_lease(const std::filesystem::path& db, pid_t cli) {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  auto b = SqliteLeaseBackend::create({.path = db});
  ASSERT_OK(b.status());
  ASSERT_OK_AND_ASSIGN(int n, (*b)->release_all(absl::StrCat(host, ":", cli)));
  EXPECT_EQ(n, 1);
}

constexpr int kLeaseLost = 74;

TEST_F(LeaseCliTest, LostLeaseStopsTheCommandAndExitsLeaseLost) {
  Process cli =
      Process::spawn(run_args({"--key", "lost", "--ttl", "1"},
                              {"sh", "-c", "sleep 1000 & echo $$ $!; wait"}));
  const Pids p = read_pids(cli);
  KillLeftovers leftovers{{p.sh, p.bg}};
  ASSERT_GT(p.bg, 0);
  steal_lease(tmp_.path() / "leases.db", cli.pid());
  // The next renewal (every 1/3 s) says lost: SIGTERM to the whole tree.
  EXPECT_EQ(cli.wait(10s).code, kLeaseLost) << "not the command's 143";
  EXPECT_TRUE(process_gone(p.sh));
  EXPECT_TRUE(process_gone(p.bg)) << "the command's background child runs on";
}

TEST_F(LeaseCliTest, LostLeaseKillsACommandThatIgnoresSigtermAfterTheGrace) {
  // The shell and its background sleep both ignore SIGTERM.
  Process cli = Process::spawn(
      run_args({"--key", "stubborn", "--ttl", "1", "--kill-after", "0.3"},
               {"sh", "-c", "trap '' TERM; sleep 1000 & echo $$ $!; wait"}));
  const Pids p = read_pids(cli);
  KillLeftovers leftovers{{p.sh, p.bg}};
  ASSERT_GT(p.bg, 0);
  const auto t0 = std::chrono::steady_clock::now();
  steal_lease(tmp_.path() / "leases.db", cli.pid());
  EXPECT_EQ(cli.wait(10s).code, kLeaseLost);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms)
      << "no grace after SIGTERM";
  EXPECT_TRUE(process_gone(p.sh)) << "ran on past the grace";
  EXPECT_TRUE(process_gone(p.bg)) << "its child ran on past the grace";
}

TEST_F(LeaseCliTest,
       LostLeaseExitsLeaseLostEvenIfTheCommandExitsZeroOnSigterm) {
  // The shell exits 0 on SIGTERM, leaving a background child that ignores it.
  Process cli = Process::spawn(
      run_args({"--key", "polite", "--ttl", "1", "--kill-after", "0.3"},
               {"sh", "-c",
                "trap 'exit 0' TERM; (trap '' TERM; exec sleep 1000) & echo $$ "
                "$!; wait"}));
  const Pids p = read_pids(cli);
  KillLeftovers leftovers{{p.sh, p.bg}};
  ASSERT_GT(p.bg, 0);
  steal_lease(tmp_.path() / "leases.db", cli.pid());
  EXPECT_EQ(cli.wait(10s).code, kLeaseLost) << "not the command's 0";
  EXPECT_TRUE(process_gone(p.sh));
  EXPECT_TRUE(process_gone(p.bg)) << "the orphaned child ran on";
}

TEST_F(LeaseCliTest, SigstopOfRunPastTheValidityKillsTheCommandTree) {
  Process cli =
      Process::spawn(run_args({"--key", "paused", "--ttl", "1.5"},
                              {"sh", "-c", "sleep 1000 & echo $$ $!; wait"}));
  const Pids p = read_pids(cli);
  KillLeftovers leftovers{{p.sh, p.bg}};
  ASSERT_GT(p.bg, 0);
  struct Resume {
    pid_t pid;
    ~Resume() { ::kill(pid, SIGCONT); }
  } resume{cli.pid()};
  ASSERT_EQ(::kill(cli.pid(), SIGSTOP), 0);
  const auto t0 = std::chrono::steady_clock::now();
  // tierlock can renew nothing now; its lease is valid for at most 1.5 s
  // from its last renewal, then the supervisor's watchdog kills the tree.
  EXPECT_TRUE(
      wait_until([&] { return process_gone(p.sh) && process_gone(p.bg); }, 10s))
      << "the command runs on past its lease while tierlock is stopped";
  EXPECT_LE(std::chrono::steady_clock::now() - t0, 3s)
      << "validity 1.5 s, plus slack";
  ::kill(cli.pid(), SIGCONT);
  EXPECT_EQ(cli.wait(10s).code, kLeaseLost);
}

TEST_F(LeaseCliTest, RenewedLeaseOutlivesManyTtlsWithoutTheWatchdogFiring) {
  // The command outlasts three TTLs: only renewals reaching the supervisor
  // keep its deadline ahead.
  RunResult r = run(run_args({"--key", "long", "--ttl", "1"}, {"sleep", "3"}));
  EXPECT_EQ(r.status.code, 0);
}

TEST_F(LeaseCliTest, SigkillOfRunKillsTheWholeCommandTree) {
  // The command and a background child of it; both write their pids.
  const std::string d = tmp_.path().string();
  Process cli = Process::spawn(
      run_args({"--key", "tree"},
               {"sh", "-c",
                "sleep 1000 & echo $! > '" + d + "/bg'; echo $$ > '" + d +
                    "/sh.tmp'; mv '" + d + "/sh.tmp' '" + d + "/sh'; wait"}));
  ASSERT_TRUE(
      wait_until([&] { return !read("sh").empty() && !read("bg").empty(); }));
  const pid_t sh = std::stoi(read("sh"));
  const pid_t bg = std::stoi(read("bg"));
  struct Cleanup {
    pid_t a, b;
    ~Cleanup() {
      ::kill(a, SIGKILL);
      ::kill(b, SIGKILL);
    }
  } cleanup{sh, bg};
  ASSERT_FALSE(process_gone(sh));
  ASSERT_FALSE(process_gone(bg));
  ::kill(cli.pid(), SIGKILL);
  EXPECT_EQ(cli.wait().code, 128 + SIGKILL);
  // Bounded: the supervisor reacts to its death signal at once.
  EXPECT_TRUE(wait_until([&] { return process_gone(sh); }, 5s))
      << "the command runs on";
  EXPECT_TRUE(wait_until([&] { return process_gone(bg); }, 5s))
      << "its child runs on";
}

TEST_F(LeaseCliTest, NormalRunsLeaveWhatTheCommandStartedAlone) {
  const std::string d = tmp_.path().string();
  RunResult r = run(run_args(
      {"--key", "bg"},
      {"sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $! > '" + d + "/bg'"}));
  EXPECT_EQ(r.status.code, 0);
  const pid_t bg = std::stoi(read("bg"));
  EXPECT_FALSE(process_gone(bg));
  ::kill(bg, SIGKILL);
}

TEST_F(LeaseCliTest, OptionsEndAtTheCommand) {
  for (bool dashes : {false, true}) {
    std::vector<std::string> argv = {TIERLOCK_CLI_PATH, "run",   "--backend",
                                     backend(),         "--key", "opts"};
    if (dashes) argv.push_back("--");
    for (const char* a : {"echo", "-n", "-s", "--key", "x", "hi"})
      argv.push_back(a);
    RunResult r = run(argv);
    EXPECT_EQ(r.status.code, 0);
    EXPECT_EQ(r.out, "-s --key x hi");  // echo took -n: no newline
  }
}

TEST_F(LeaseCliTest, HugeTimeoutWaitsAndBadOnesAreUsageErrors) {
  Process holder =
      Process::spawn({lease_helper_path(), "hold", backend(), "w", "60000"});
  ASSERT_TRUE(holder.read_line().has_value());
  Process waiter = Process::spawn(
      run_args({"--key", "w", "-q", "-w", "1e300"}, {"echo", "ran"}));
  EXPECT_FALSE(wait_until([&] { return waiter.exited_now(); }, 1000ms))
      << "gave up at once";
  holder.close_stdin();
  EXPECT_EQ(holder.wait().code, 0);
  EXPECT_EQ(waiter.read_line().value_or(""), "ran");
  EXPECT_EQ(waiter.wait().code, 0);
  EXPECT_EQ(run(run_args({"--key", "k", "-w", "nan"}, {"true"})).status.code,
            64);
  EXPECT_EQ(run(run_args({"--key", "k", "-w", "-1"}, {"true"})).status.code,
            64);
}

TEST_F(LeaseCliTest, BadBackendKeyOrTtlIsAUsageError) {
  EXPECT_EQ(run({TIERLOCK_CLI_PATH, "run", "--backend", "nope://x", "--key",
                 "k", "--", "true"})
                .status.code,
            64);
  EXPECT_EQ(run(run_args({}, {"true"})).status.code, 64) << "no --key";
  EXPECT_EQ(run(run_args({"--key", "a\tb"}, {"true"})).status.code, 64);
  EXPECT_EQ(run(run_args({"--key", "k", "--ttl", "0"}, {"true"})).status.code,
            64);
  EXPECT_EQ(
      run(run_args({"--key", "k", "--kill-after", "-1"}, {"true"})).status.code,
      64);
  EXPECT_EQ(run(run_args({"--key", "k", "--kill-after", "nan"}, {"true"}))
                .status.code,
            64);
  EXPECT_EQ(run({TIERLOCK_CLI_PATH, "run", "--kill-after", "1",
                 tmp_.path().string(), "true"})
                .status.code,
            64)
      << "--kill-after without --backend";
  EXPECT_EQ(run(run_args({"--key", "k", "--shared"}, {"true"})).status.code,
            64);
  EXPECT_EQ(
      run({TIERLOCK_CLI_PATH, "run", "--key", "k", "--", "true"}).status.code,
      64);
  EXPECT_EQ(run(run_args({"--key", "k"}, {"/nonexistent/cmd"})).status.code,
            127);
}

// The lease lost through a frozen network, end to end: `tierlock run` holds
// the key through the test proxy, its command ignores SIGTERM (and so does
// the command's child), the proxy freezes. Recorded on one steady clock: when
// the command's whole tree was seen dead (pidfds) and when another client,
// straight to the server, sent the request that was granted the key.
struct FrozenRunFigures {
  std::string error;  // non-empty: what broke
  std::chrono::steady_clock::time_point frozen, tree_dead, granted_sent;
  std::string summary() const {
    auto s = [&](std::chrono::steady_clock::time_point t) {
      return std::chrono::duration<double>(t - frozen).count();
    };
    return absl::StrCat(
        "freeze->tree dead ", s(tree_dead), " s, freeze->other's grant ",
        s(granted_sent), " s, tree dead ",
        std::chrono::duration<double>(granted_sent - tree_dead).count(),
        " s before the grant");
  }
};

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

// Waits (at most `limit`) until every pid's pidfd is readable (the process
// exited); returns when the last one was seen, or nullopt.
std::optional<std::chrono::steady_clock::time_point> wait_all_dead(
    const std::vector<pid_t>& pids, std::chrono::milliseconds limit) {
  std::vector<pollfd> fds;
  for (pid_t p : pids) {
    const int fd = pidfd_open(p);
    if (fd < 0) return std::nullopt;
    fds.push_back({fd, POLLIN, 0});
  }
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::optional<std::chrono::steady_clock::time_point> out;
  std::size_t dead = 0;
  while (dead < fds.size() && std::chrono::steady_clock::now() < deadline) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (::poll(fds.data(), fds.size(), static_cast<int>(left.count())) < 0 &&
        errno != EINTR) {
      break;
    }
    const auto now = std::chrono::steady_clock::now();
    for (pollfd& f : fds) {
      if (f.fd >= 0 && (f.revents & POLLIN) != 0) {
        ::close(f.fd);
        f.fd = -1;  // poll ignores it from now on
        ++dead;
      }
    }
    if (dead == fds.size()) out = now;
  }
  for (pollfd& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  return out;
}

void expect_frozen_run_stops_the_tree_first(
    const std::string& name, const std::string& url, TcpProxy& proxy,
    const std::shared_ptr<LeaseBackend>& direct, const TempDir& tmp) {
  const std::string key = "frozen-run/" + name;
  const std::string err = (tmp.path() / (name + ".stderr")).string();
  // stderr to a file (the CLI's own, through an exec'ing shell).
  Process cli = Process::spawn(
      {"sh", "-c", "exec \"$0\" \"$@\" 2>'" + err + "'", TIERLOCK_CLI_PATH,
       "run", "--backend", url, "--key", key, "--ttl", "2", "--", "sh", "-c",
       "trap '' TERM; sleep 1000 & echo $$ $!; wait"});
  const Pids p = read_pids(cli);
  KillLeftovers leftovers{{p.sh, p.bg}};
  ASSERT_GT(p.bg, 0) << key << ": the command did not start";
  ASSERT_OK_AND_ASSIGN(LeaseLock other,
                       LeaseLock::create(direct, {.ttl = 30s}));

  FrozenRunFigures f;
  std::optional<std::chrono::steady_clock::time_point> dead;
  proxy.freeze(true);
  f.frozen = std::chrono::steady_clock::now();
  std::thread watcher([&] { dead = wait_all_dead({p.sh, p.bg}, 20s); });
  std::optional<Lease> won;
  while (std::chrono::steady_clock::now() < f.frozen + 20s) {
    const auto sent = std::chrono::steady_clock::now();
    absl::StatusOr<std::optional<Lease>> r = other.try_acquire(key);
    if (r.ok() && r->has_value()) {
      f.granted_sent = sent;
      won = std::move(*r);
      break;
    }
    std::this_thread::sleep_for(2ms);  // pacing the contender, not a sync
  }
  watcher.join();
  proxy.freeze(false);
  ASSERT_TRUE(won.has_value())
      << key << ": the other client was never granted the key";
  ASSERT_TRUE(dead.has_value())
      << key << ": the command's tree (" << p.sh << ", " << p.bg
      << ") is still running 20 s after the freeze";
  f.tree_dead = *dead;
  std::cout << name << " frozen run: " << f.summary() << std::endl;
  EXPECT_LT(f.tree_dead, f.granted_sent)
      << key
      << ": the other client was granted the key while the command's tree "
         "still ran ("
      << f.summary() << ")";
  const ExitStatus st = cli.wait(10s);
  EXPECT_EQ(st.code, kLeaseLost) << key << ": " << st.describe();
  std::ifstream in(err);
  const std::string text((std::istreambuf_iterator<char>(in)),
                         std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("'" + key + "'"), std::string::npos)
      << "stderr does not name the key: " << text;
  // Whichever saw it first: tierlock's lost() or the supervisor's watchdog.
  EXPECT_TRUE(text.find("lost") != std::string::npos ||
              text.find("not renewed in time") != std::string::npos)
      << "stderr gives no reason: " << text;
  (void)won->release();
}

#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
TEST(LeaseCliFaultTest,
     FrozenPostgresTableRunStopsTheWholeTreeBeforeAnotherClientIsGranted) {
  PostgresServer& pg = shared_postgres();
  TcpProxy proxy(pg.port());
  PostgresLeaseOptions o;
  o.conninfo = pg.conninfo();
  o.mode = PostgresLeaseOptions::Mode::kLeaseTable;
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<PostgresLeaseBackend> direct,
                       PostgresLeaseBackend::create(o));
  TempDir tmp;
  expect_frozen_run_stops_the_tree_first(
      "postgres-table",
      absl::StrCat("postgresql://tl@127.0.0.1:", proxy.port(), "/postgres"),
      proxy, direct, tmp);
}
#endif

#ifdef TIERLOCK_HAVE_LEASE_REDIS
TEST(LeaseCliFaultTest,
     FrozenRedisRunStopsTheWholeTreeBeforeAnotherClientIsGranted) {
  RedisServer& redis = shared_redis();
  TcpProxy proxy(redis.port());
  RedisLeaseOptions o;
  o.port = redis.port();
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<RedisLeaseBackend> direct,
                       RedisLeaseBackend::create(o));
  TempDir tmp;
  expect_frozen_run_stops_the_tree_first(
      "redis", absl::StrCat("redis://127.0.0.1:", proxy.port()), proxy, direct,
      tmp);
}
#endif

}  // namespace
}  // namespace tierlock::testing

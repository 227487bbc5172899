// bench/acquire_bench.cc
//
// The costs of acquires that wait (rows "cross-process handoff" and "cancel
// latency" of docs/perf.md among them), beside their baselines in one binary
// and one run:
//   cancel/   a waiter blocked on the lock, then stop requested: the time
//             until acquire() returns kCancelled. Blocked in the kernel
//             (another process holds the lock) or in-process (another thread
//             holds it); sync and async; with the interrupt signal and with
//             the polling fallback (set_wait_interrupt_signal(0)).
//             Reference: pthread_kill of a thread blocked in raw flock.
//   timeout/  the same with a timeout instead: lateness of the return past
//             the deadline. References: a POSIX timer signalling a thread
//             blocked in raw flock at the deadline; a condition_variable
//             wait_until.
//   handoff/  process A holds the lock with raw flock, process B is blocked
//             acquiring it; A stamps CLOCK_MONOTONIC just before LOCK_UN, B
//             when its acquire returns. Baselines: B in raw blocking flock; B
//             polling LOCK_NB + 1 ms sleep; reference: a pipe write -> read
//             wakeup. Both CPU placements (cpus:1 both pinned to one CPU,
//             cpus:2 pinned to two).
//   async/    N acquire_async on one lock no other process holds, each
//             completion releasing at once, on WorkerPools of 1/2/4 threads
//             (baseline: the same N synchronous acquire+release in a loop).
//
// Latency rows time each event with manual time (Iterations = events per
// repetition), so their "time" is the mean; their counters p50_us / p99_us /
// max_us are over that repetition's events. bench/run.sh builds and runs this
// beside core_bench; bench/ratios.py prints the tables of medians and ratios.
//
// Process A of the handoff rows, and the other process holding the lock in the
// cancel rows, is one helper ("the peer") forked in main before any thread
// exists; it is driven over a pipe and stamps into shared memory.
//
// Environment: TIERLOCK_BENCH_CANCELS (events per cancel repetition, default
// 1000), TIERLOCK_BENCH_SPACED (events of the *_spaced rows, default 100),
// TIERLOCK_BENCH_HANDOFFS (default 500), TIERLOCK_BENCH_ASYNC_N
// (default 1000), TIERLOCK_BENCH_SETTLE_US (pause once the waiter is seen
// blocked, before releasing or cancelling; default 200), TIERLOCK_BENCH_
// TIMEOUT_US (the timed-out acquire's timeout; default 2000),
// TIERLOCK_BENCH_DUMP_DIR (append every latency to DIR/<row>.txt).
//
// The parts: acquire_cancel_bench.cc (cancel/ and timeout/ rows),
// acquire_handoff_bench.cc (handoff/), acquire_async_bench.cc (async/); what
// they share is in acquire_bench.h. This file holds the peer and main.

#include "acquire_bench.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench_util.h"
#include "tierlock/config.h"
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"

namespace tierlock::bench {
namespace {

namespace fs = std::filesystem;

constexpr const char* kLockName = ".lock";

long env_long(const char* name, long fallback) {
  if (const char* env = std::getenv(name)) {
    const long v = std::strtol(env, nullptr, 10);
    if (v > 0) return v;
  }
  return fallback;
}

void peer_fail(PeerShared* shm, const char* what) {
  std::snprintf(shm->message, sizeof shm->message, "peer: %s", what);
  shm->failed.store(1, std::memory_order_release);
}

}  // namespace

[[noreturn]] void peer_main(int cmd_fd, int reply_fd, PeerShared* shm,
                            const BenchDir& dir) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  const pid_t b_pid = ::getppid();
  const int fd = open_lock_fd(dir.lock_file.c_str());  // its own description
  cpu_set_t original;
  ::sched_getaffinity(0, sizeof original, &original);
  std::mt19937_64 rng(static_cast<std::uint64_t>(mono_ns()));
  std::uniform_int_distribution<std::int64_t> random_delay(1'000'000,
                                                           3'000'000);
  std::optional<tierlock::DirLock> tl_lock;
  std::optional<tierlock::Guard> tl_guard;
  auto reply = [&](char c) {
    while (::write(reply_fd, &c, 1) < 0 && errno == EINTR) {
    }
  };
  for (;;) {
    PeerCommand cmd;
    ssize_t n;
    do {
      n = ::read(cmd_fd, &cmd, sizeof cmd);
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(sizeof cmd)) ::_exit(0);  // parent gone
    switch (cmd.op) {
      case PeerOp::kLock:
        reply(fd >= 0 && flock_retry(fd, LOCK_EX) == 0 ? 'k' : 'e');
        break;
      case PeerOp::kUnlock:
        reply(fd >= 0 && flock_retry(fd, LOCK_UN) == 0 ? 'k' : 'e');
        break;
      case PeerOp::kLockTierlock: {
        if (!tl_lock.has_value()) {
          absl::StatusOr<tierlock::DirLock> opened =
              tierlock::DirLock::open(dir.dir);
          if (opened.ok()) tl_lock.emplace(*std::move(opened));
        }
        absl::StatusOr<tierlock::Guard> g =
            tl_lock.has_value() ? tl_lock->acquire()
                                : absl::StatusOr<tierlock::Guard>(
                                      absl::InternalError("open failed"));
        if (g.ok()) tl_guard.emplace(*std::move(g));
        reply(g.ok() ? 'k' : 'e');
        break;
      }
      case PeerOp::kUnlockTierlock:
        reply(tl_guard.has_value() && tl_guard->release().ok() ? 'k' : 'e');
        tl_guard.reset();
        break;
      case PeerOp::kPin: {
        const bool ok = cmd.cpu < 0 ? ::sched_setaffinity(0, sizeof original,
                                                          &original) == 0
                                    : pin_to(cmd.cpu);
        reply(ok ? 'k' : 'e');
        break;
      }
      case PeerOp::kHandoff: {
        if (!cmd.via_pipe && (fd < 0 || flock_retry(fd, LOCK_EX) != 0)) {
          reply('e');
          break;
        }
        reply('k');  // A holds: B may start waiting
        bool ready = false;
        auto b_said_ready = [&] {
          return shm->b_ready.load(std::memory_order_acquire) == cmd.seq;
        };
        switch (cmd.ready) {
          case Ready::kProcLocks:
            ready = wait_until([&] { return has_flock_waiter(b_pid, dir.ino); },
                               kGiveUp);
            break;
          case Ready::kSleeping:
            ready = wait_until(b_said_ready, kGiveUp) &&
                    wait_until(
                        [&] {
                          return thread_state(b_pid, shm->b_tid.load()) == 'S';
                        },
                        kGiveUp);
            break;
          case Ready::kRandom:
            ready = wait_until(b_said_ready, kGiveUp);
            sleep_ns(random_delay(rng));
            break;
        }
        if (!ready) peer_fail(shm, "B was never seen waiting");
        if (cmd.ready != Ready::kRandom) sleep_ns(cmd.settle_ns);
        // The measured release: stamp, then LOCK_UN (or the pipe write).
        const std::int64_t t = mono_ns();
        shm->t_release.store(t, std::memory_order_release);
        if (cmd.via_pipe) {
          reply('w');
        } else if (flock_retry(fd, LOCK_UN) != 0) {
          peer_fail(shm, "LOCK_UN failed");
        }
        // Spin with sched_yield until B reports.
        const std::int64_t give_up = mono_ns() + kGiveUp.count();
        while (shm->b_done.load(std::memory_order_acquire) != cmd.seq) {
          if (mono_ns() > give_up) {
            peer_fail(shm, "B never reported the acquire");
            break;
          }
          ::sched_yield();
        }
        break;
      }
    }
  }
}

double stat_max(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

namespace {

bool make_dir(BenchDir& dir) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
      "/tierlock-acquire-bench.XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    std::perror("mkdtemp");
    return false;
  }
  std::error_code ec;
  const fs::path canonical = fs::canonical(templ, ec);
  if (ec) {
    std::fprintf(stderr, "canonical %s: %s\n", templ.c_str(),
                 ec.message().c_str());
    return false;
  }
  dir.dir = canonical.native();
  dir.lock_file = (canonical / kLockName).native();
  Fd fd(open_lock_fd(dir.lock_file.c_str()));
  struct stat st;
  if (!fd.ok() || ::fstat(fd.get(), &st) != 0) {
    std::perror(dir.lock_file.c_str());
    return false;
  }
  dir.ino = st.st_ino;
  return true;
}

// Whether an interruptible acquire (stop token) blocked on another process's
// lock is seen in flock within 200 ms, or waits some other way (the polling
// fallback). Run twice at start, before any row, and recorded in the
// context: the first interrupt timer of a process has kernel id 0, which
// tierlock before 43dd8f2 took for a failed timer_create (that wait polled
// and the timer leaked), so the rows never measure that first wait.
std::string probe_interruptible_wait() {
  absl::StatusOr<tierlock::DirLock> lock = open_lock();
  if (!lock.ok()) return std::string(lock.status().message());
  if (!g_peer->lock()) return "peer: flock failed";
  std::stop_source source;
  std::thread waiter([&] {
    absl::StatusOr<tierlock::Guard> g =
        lock->acquire(options_stop(source.get_token()));
  });
  const bool in_kernel =
      wait_until([&] { return has_flock_waiter(::getpid(), g_dir->ino); },
                 milliseconds(200));
  source.request_stop();
  waiter.join();
  (void)g_peer->unlock();
  return in_kernel ? "blocked in flock"
                   : "not in flock within 200 ms (polled LOCK_NB)";
}

// Picks the CPUs of the handoff placements from this process's mask.
void choose_cpus() {
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return;
  std::vector<int> allowed;
  for (int i = 0; i < CPU_SETSIZE; ++i) {
    if (CPU_ISSET(static_cast<std::size_t>(i), &set)) allowed.push_back(i);
  }
  g_cfg.cpus = static_cast<int>(allowed.size());
  if (allowed.empty()) return;
  g_cfg.cpu_a = allowed[0];
  g_cfg.cpu_b = allowed.size() > 1 ? allowed[1] : allowed[0];
}

}  // namespace
}  // namespace tierlock::bench

using namespace tierlock::bench;  // NOLINT: the benchmarks' shared vocabulary

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  g_cfg.cancels = static_cast<int>(env_long("TIERLOCK_BENCH_CANCELS", 1000));
  g_cfg.spaced = static_cast<int>(env_long("TIERLOCK_BENCH_SPACED", 100));
  g_cfg.handoffs = static_cast<int>(env_long("TIERLOCK_BENCH_HANDOFFS", 500));
  g_cfg.async_n = static_cast<int>(env_long("TIERLOCK_BENCH_ASYNC_N", 1000));
  g_cfg.settle = microseconds(env_long("TIERLOCK_BENCH_SETTLE_US", 200));
  g_cfg.timeout = microseconds(env_long("TIERLOCK_BENCH_TIMEOUT_US", 2000));
  choose_cpus();

  BenchDir dir;
  if (!make_dir(dir)) return 1;
  g_dir = &dir;
  // Forked before any thread exists (tierlock starts its pools lazily).
  Peer peer;
  if (!peer.start(dir)) {
    std::perror("peer");
    return 1;
  }
  g_peer = &peer;
  if (absl::Status st = tierlock::set_wait_interrupt_signal(interrupt_signal());
      !st.ok()) {
    std::fprintf(stderr, "set_wait_interrupt_signal: %s\n",
                 std::string(st.message()).c_str());
    return 1;
  }

  // Before any row (see probe_interruptible_wait): recorded, and kept out of
  // the rows.
  const std::string first_wait = probe_interruptible_wait();
  const std::string second_wait = probe_interruptible_wait();
  benchmark::AddCustomContext("first_interruptible_wait", first_wait);
  benchmark::AddCustomContext("second_interruptible_wait", second_wait);

  benchmark::AddCustomContext("bench_dir", dir.dir);
  benchmark::AddCustomContext("acquire_bench_events",
                              "cancels " + std::to_string(g_cfg.cancels) +
                                  ", spaced timeouts " +
                                  std::to_string(g_cfg.spaced) + ", handoffs " +
                                  std::to_string(g_cfg.handoffs) +
                                  ", async N " + std::to_string(g_cfg.async_n));
  benchmark::AddCustomContext(
      "acquire_bench_settle_us",
      std::to_string(
          std::chrono::duration_cast<microseconds>(g_cfg.settle).count()));
  benchmark::AddCustomContext(
      "acquire_bench_timeout_us",
      std::to_string(
          std::chrono::duration_cast<microseconds>(g_cfg.timeout).count()));
  benchmark::AddCustomContext(
      "handoff_cpus", "cpus:1 both on CPU " + std::to_string(g_cfg.cpu_b) +
                          "; cpus:2 A on CPU " + std::to_string(g_cfg.cpu_a) +
                          ", B on CPU " + std::to_string(g_cfg.cpu_b));
#ifdef NDEBUG
  benchmark::AddCustomContext("acquire_bench_build", "release (NDEBUG)");
#else
  benchmark::AddCustomContext("acquire_bench_build", "debug (assertions on)");
#endif

  register_cancel_benchmarks();
  register_handoff_benchmarks();
  register_async_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  peer.stop();
  std::error_code ec;
  fs::remove_all(dir.dir, ec);
  return 0;
}

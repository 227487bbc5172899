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
//             cpus:2 pinned to two), as in /work/shared/BASELINES.md section 5.
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
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench_util.h"
#include "tierlock/acquire_options.h"
#include "tierlock/config.h"
#include "tierlock/dir_lock.h"
#include "tierlock/executor.h"
#include "tierlock/guard.h"
#include "tierlock/mode.h"

namespace {

using namespace tierlock::bench;  // NOLINT: the benchmarks' shared vocabulary

namespace fs = std::filesystem;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

constexpr const char* kLockName = ".lock";
// tierlock's default interrupt signal (config.h), set explicitly at start so
// the polling rows can switch to 0 and back.
int interrupt_signal() { return SIGRTMAX - 7; }
// How long anything here waits for the other side before giving up.
constexpr nanoseconds kGiveUp = seconds(5);

// ---------------------------------------------------------------------------
// Configuration, clocks, small helpers.

struct Config {
  int cancels = 1000;
  int spaced = 100;  // events of the *_spaced timeout rows (40 ms each)
  int handoffs = 500;
  int async_n = 1000;
  nanoseconds settle = microseconds(200);
  nanoseconds timeout = microseconds(2000);
  int cpu_a = 0;  // process A (the peer) in cpus:2
  int cpu_b = 1;  // process B (this one); both here in cpus:1
  int cpus = 1;   // CPUs this process may run on
};
Config g_cfg;

long env_long(const char* name, long fallback) {
  if (const char* env = std::getenv(name)) {
    const long v = std::strtol(env, nullptr, 10);
    if (v > 0) return v;
  }
  return fallback;
}

std::int64_t mono_ns() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void sleep_ns(std::int64_t ns) {
  if (ns <= 0) return;
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// AcquireOptions built field by field (GCC's -Wmissing-field-initializers
// flags designated initializers that leave members defaulted).
tierlock::AcquireOptions options_stop(std::stop_token stop,
                                      tierlock::WorkerPool* pool = nullptr) {
  tierlock::AcquireOptions o;
  o.stop = std::move(stop);
  o.pool = pool;
  return o;
}
tierlock::AcquireOptions options_timeout(nanoseconds timeout) {
  tierlock::AcquireOptions o;
  o.timeout = timeout;
  return o;
}
tierlock::AcquireOptions options_pool(tierlock::WorkerPool* pool) {
  tierlock::AcquireOptions o;
  o.pool = pool;
  return o;
}

// Reads the whole of a /proc file with plain read(2) ("" on error).
std::string read_proc(const char* path) {
  std::string text;
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return text;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

// True when /proc/locks shows a blocked flock waiter ("N: -> FLOCK ...") of
// process `pid` on inode `ino` (flock waiters are listed by process id).
bool proc_locks_waiter(pid_t pid, ino_t ino) {
  const std::string text = read_proc("/proc/locks");
  const std::string want_pid = " " + std::to_string(pid) + " ";
  const std::string want_ino = ":" + std::to_string(ino) + " ";
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (line.find(" -> FLOCK ") == std::string_view::npos) continue;
    if (line.find(want_pid) == std::string_view::npos) continue;
    if (line.find(want_ino) != std::string_view::npos) return true;
  }
  return false;
}

// The syscall number thread `tid` of this process is blocked in, or -1 while
// it runs ("running") or on error. /proc/self/task/<tid>/syscall.
long thread_syscall(pid_t tid) {
  const std::string path =
      "/proc/self/task/" + std::to_string(tid) + "/syscall";
  const std::string text = read_proc(path.c_str());
  if (text.empty() || text[0] < '0' || text[0] > '9') return -1;
  return std::strtol(text.c_str(), nullptr, 10);
}

// The scheduler state letter of thread `tid` of process `pid` ('S' sleeping),
// from /proc/<pid>/task/<tid>/stat (readable without ptrace rights).
char thread_state(pid_t pid, pid_t tid) {
  const std::string path =
      "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/stat";
  const std::string text = read_proc(path.c_str());
  const std::size_t paren = text.rfind(')');
  if (paren == std::string::npos || paren + 2 >= text.size()) return '?';
  return text[paren + 2];
}

// Polls `ready` every `poll` until it is true (true) or `limit` passes.
template <typename Pred>
bool wait_until(Pred ready, nanoseconds limit,
                nanoseconds poll = microseconds(20)) {
  const std::int64_t give_up = mono_ns() + limit.count();
  for (;;) {
    if (ready()) return true;
    if (mono_ns() > give_up) return false;
    sleep_ns(poll.count());
  }
}

// Latencies of one repetition, in ns, and the counters reported for them.
class Latencies {
 public:
  explicit Latencies(std::string row) : row_(std::move(row)) {}
  void reserve(std::size_t n) {
    ns_.reserve(n);
    at_.reserve(n);
  }
  // `ns` measured at CLOCK_MONOTONIC time `at` (for the dump).
  void add(std::int64_t ns, std::int64_t at) {
    ns_.push_back(ns);
    at_.push_back(at);
  }
  std::size_t size() const { return ns_.size(); }
  // Sets p50_us, p99_us, max_us, min_us (nearest rank) and events. With
  // TIERLOCK_BENCH_DUMP_DIR set, first appends "<at_ns> <latency_ns>" lines
  // (one repetition after a "# rep" line) to DIR/<row>.txt.
  void report(benchmark::State& state) {
    if (ns_.empty()) return;
    dump();
    std::sort(ns_.begin(), ns_.end());
    auto rank = [&](double q) {
      const auto n = static_cast<double>(ns_.size());
      auto i = static_cast<std::size_t>(q * n + 0.999999);
      i = std::clamp<std::size_t>(i, 1, ns_.size());
      return static_cast<double>(ns_[i - 1]) / 1e3;
    };
    state.counters["p50_us"] = rank(0.50);
    state.counters["p99_us"] = rank(0.99);
    state.counters["max_us"] = static_cast<double>(ns_.back()) / 1e3;
    state.counters["min_us"] = static_cast<double>(ns_.front()) / 1e3;
    state.counters["events"] = static_cast<double>(ns_.size());
  }

 private:
  void dump() const {
    const char* dir = std::getenv("TIERLOCK_BENCH_DUMP_DIR");
    if (dir == nullptr || *dir == '\0') return;
    std::string file = row_;
    std::replace(file.begin(), file.end(), '/', '_');
    file = std::string(dir) + "/" + file + ".txt";
    std::FILE* f = std::fopen(file.c_str(), "a");
    if (f == nullptr) return;
    std::fprintf(f, "# rep\n");
    for (std::size_t i = 0; i < ns_.size(); ++i) {
      std::fprintf(f, "%lld %lld\n", static_cast<long long>(at_[i]),
                   static_cast<long long>(ns_[i]));
    }
    std::fclose(f);
  }

  std::string row_;
  std::vector<std::int64_t> ns_;
  std::vector<std::int64_t> at_;
};

void set_iteration_ns(benchmark::State& state, std::int64_t ns) {
  state.SetIterationTime(static_cast<double>(std::max<std::int64_t>(ns, 0)) *
                         1e-9);
}

// The lock directory every benchmark uses (created in main).
struct BenchDir {
  std::string dir;        // canonical mkdtemp directory
  std::string lock_file;  // dir + "/.lock"
  ino_t ino = 0;          // the lock file's inode, as /proc/locks shows it
};
const BenchDir* g_dir = nullptr;

// ---------------------------------------------------------------------------
// The peer: another process holding the lock with raw flock on its own
// descriptor, and process A of the handoff rows.

// kLockTierlock / kUnlockTierlock: the same through a tierlock DirLock, so the
// peer leaves a holder record (the *_recorded_holder rows).
enum class PeerOp : std::int32_t {
  kLock,
  kUnlock,
  kPin,
  kHandoff,
  kLockTierlock,
  kUnlockTierlock
};
// How the peer knows B is waiting before it releases.
enum class Ready : std::int32_t {
  kProcLocks,  // /proc/locks lists B's "->" waiter line on the lock file
  kSleeping,   // B said it is about to block, and its thread is in state S
  kRandom,     // B said it is about to wait; then a random 1-3 ms (pollers)
};

struct PeerCommand {
  PeerOp op;
  std::int32_t cpu;        // kPin: the CPU, or -1 for the original mask
  Ready ready;             // kHandoff
  std::int32_t via_pipe;   // kHandoff: "release" = write 'w' to the reply pipe
  std::uint64_t seq;       // kHandoff: the round
  std::int64_t settle_ns;  // kHandoff: pause after B is seen blocked
};

// In memory shared with the peer (MAP_SHARED, set up before fork).
struct PeerShared {
  std::atomic<std::uint64_t> b_ready;   // round B is about to wait in
  std::atomic<std::uint64_t> b_done;    // round B has stamped
  std::atomic<std::int32_t> b_tid;      // B's waiting thread
  std::atomic<std::int64_t> t_release;  // A's stamp just before LOCK_UN
  std::atomic<std::int32_t> failed;     // the peer gave up waiting for B
  char message[200];
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::int64_t>::is_always_lock_free);

void peer_fail(PeerShared* shm, const char* what) {
  std::snprintf(shm->message, sizeof shm->message, "peer: %s", what);
  shm->failed.store(1, std::memory_order_release);
}

bool pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<std::size_t>(cpu), &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

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
            ready = wait_until(
                [&] { return proc_locks_waiter(b_pid, dir.ino); }, kGiveUp);
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
        // As in BASELINES.md: spin with sched_yield until B reports.
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

class Peer {
 public:
  bool start(const BenchDir& dir) {
    void* mem = ::mmap(nullptr, sizeof(PeerShared), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return false;
    shm_ = new (mem) PeerShared{};
    int cmd[2], rep[2];
    if (::pipe2(cmd, O_CLOEXEC) != 0 || ::pipe2(rep, O_CLOEXEC) != 0) {
      return false;
    }
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      ::close(cmd[1]);
      ::close(rep[0]);
      peer_main(cmd[0], rep[1], shm_, dir);
    }
    ::close(cmd[0]);
    ::close(rep[1]);
    cmd_fd_ = cmd[1];
    reply_fd_ = rep[0];
    return true;
  }
  void stop() {
    if (pid_ <= 0) return;
    ::close(cmd_fd_);  // the peer exits on EOF
    ::close(reply_fd_);
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

  // Sends `cmd`, returns the reply character ('k' ok, 'e' error, 0 on EOF).
  char call(const PeerCommand& cmd) {
    if (!send(cmd)) return 0;
    return read_reply();
  }
  bool send(const PeerCommand& cmd) {
    ssize_t n;
    do {
      n = ::write(cmd_fd_, &cmd, sizeof cmd);
    } while (n < 0 && errno == EINTR);
    return n == static_cast<ssize_t>(sizeof cmd);
  }
  char read_reply() {
    char c = 0;
    ssize_t n;
    do {
      n = ::read(reply_fd_, &c, 1);
    } while (n < 0 && errno == EINTR);
    return n == 1 ? c : 0;
  }
  bool lock() {
    return call({PeerOp::kLock, 0, Ready::kProcLocks, 0, 0, 0}) == 'k';
  }
  bool unlock() {
    return call({PeerOp::kUnlock, 0, Ready::kProcLocks, 0, 0, 0}) == 'k';
  }
  bool lock_tierlock() {
    return call({PeerOp::kLockTierlock, 0, Ready::kProcLocks, 0, 0, 0}) == 'k';
  }
  bool unlock_tierlock() {
    return call({PeerOp::kUnlockTierlock, 0, Ready::kProcLocks, 0, 0, 0}) ==
           'k';
  }
  bool pin(int cpu) {
    return call({PeerOp::kPin, cpu, Ready::kProcLocks, 0, 0, 0}) == 'k';
  }

  PeerShared* shared() const { return shm_; }
  // The peer's failure message, or "" (and clears it).
  std::string take_failure() {
    if (shm_->failed.exchange(0, std::memory_order_acq_rel) == 0) return {};
    return std::string(shm_->message);
  }

 private:
  PeerShared* shm_ = nullptr;
  pid_t pid_ = -1;
  int cmd_fd_ = -1;
  int reply_fd_ = -1;
};
Peer* g_peer = nullptr;

// The peer holds the lock (raw flock) for a scope.
// With `active` false, does nothing.
class PeerHold {
 public:
  // With `through_tierlock`, the peer holds through a DirLock (and so has a
  // holder record) instead of raw flock.
  PeerHold(benchmark::State& state, bool active, bool through_tierlock = false)
      : tierlock_(through_tierlock) {
    if (!active) return;
    held_ = tierlock_ ? g_peer->lock_tierlock() : g_peer->lock();
    ok_ = held_;
    if (!ok_) state.SkipWithError("peer: LOCK_EX failed");
  }
  ~PeerHold() { release(); }
  PeerHold(const PeerHold&) = delete;
  PeerHold& operator=(const PeerHold&) = delete;
  bool ok() const { return ok_; }
  void release() {
    if (held_) (void)(tierlock_ ? g_peer->unlock_tierlock() : g_peer->unlock());
    held_ = false;
  }

 private:
  bool tierlock_ = false;
  bool held_ = false;
  bool ok_ = true;
};

// Selects the polling fallback (set_wait_interrupt_signal(0)) for a scope.
// Process-wide: safe here because benchmarks run one at a time and no acquire
// is in flight between them.
class PollingFallback {
 public:
  explicit PollingFallback(benchmark::State& state) {
    ok_ = check(state, tierlock::set_wait_interrupt_signal(0));
  }
  ~PollingFallback() {
    if (ok_) (void)tierlock::set_wait_interrupt_signal(interrupt_signal());
  }
  PollingFallback(const PollingFallback&) = delete;
  PollingFallback& operator=(const PollingFallback&) = delete;
  bool ok() const { return ok_; }

 private:
  bool ok_ = false;
};

absl::StatusOr<tierlock::DirLock> open_lock() {
  return tierlock::DirLock::open(g_dir->dir);
}

// ---------------------------------------------------------------------------
// A thread that runs one job at a time for the benchmark thread.

class JobThread {
 public:
  JobThread() : thread_([this] { loop(); }) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return tid_ != 0; });
  }
  ~JobThread() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  JobThread(const JobThread&) = delete;
  JobThread& operator=(const JobThread&) = delete;

  // Starts `job`; entering() turns true just before it runs.
  void run(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = std::move(job);
      entering_.store(false);
      ++posted_;
    }
    cv_.notify_all();
  }
  // Waits for the job to finish; false after `limit`.
  bool wait_done(nanoseconds limit) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, limit, [&] { return done_ == posted_; });
  }
  bool entering() const { return entering_.load(std::memory_order_acquire); }
  bool finished() {
    std::lock_guard<std::mutex> lk(mu_);
    return done_ == posted_;
  }
  pid_t tid() const { return tid_; }
  pthread_t handle() { return thread_.native_handle(); }

 private:
  void loop() {
    std::unique_lock<std::mutex> lk(mu_);
    tid_ = ::gettid();
    cv_.notify_all();
    for (;;) {
      cv_.wait(lk, [&] { return quit_ || done_ != posted_; });
      if (quit_) return;
      std::function<void()> job = std::move(job_);
      lk.unlock();
      entering_.store(true, std::memory_order_release);
      job();
      lk.lock();
      ++done_;
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> job_;
  std::uint64_t posted_ = 0;
  std::uint64_t done_ = 0;
  bool quit_ = false;
  pid_t tid_ = 0;
  std::atomic<bool> entering_{false};
  std::thread thread_;
};

// ---------------------------------------------------------------------------
// Row: cancel latency.

enum class CancelCase {
  kStopKernel,       // another process holds; sync waiter blocked in flock
  kStopKernelAsync,  // the same, an acquire_async waiter (pool thread)
  kStopInProcess,    // another thread holds; waiter queued in-process
  kTimeoutKernel,    // deadline passes while blocked in flock
  kTimeoutKernelRecorded,  // the same, the peer holding through tierlock
  kTimeoutInProcess,       // deadline passes while queued in-process
  kRefSignalRawFlock,      // reference: pthread_kill of a raw blocked flock
  kRefTimerRawFlock,       // reference timeout: a POSIX timer signal (to the
                           // thread, at the deadline) ends a raw blocked flock
  kRefCvTimeout,           // reference timeout: condition_variable::wait_until
};

extern "C" void bench_noop_handler(int) {}

// Installs a no-op SIGUSR2 handler without SA_RESTART for a scope (the
// reference row); restores the old disposition.
class NoRestartHandler {
 public:
  NoRestartHandler() {
    struct sigaction sa = {};
    sa.sa_handler = &bench_noop_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    ok_ = ::sigaction(SIGUSR2, &sa, &old_) == 0;
  }
  ~NoRestartHandler() {
    if (ok_) ::sigaction(SIGUSR2, &old_, nullptr);
  }
  NoRestartHandler(const NoRestartHandler&) = delete;
  NoRestartHandler& operator=(const NoRestartHandler&) = delete;
  bool ok() const { return ok_; }

 private:
  struct sigaction old_ = {};
  bool ok_ = false;
};

// Waits until the cancel row's waiter is seen blocked: in flock (/proc/locks
// lists its "->" line) or, in-process and with the polling fallback, in a
// futex wait. False after 5 s, or (sync rows) if the waiter returned first.
bool wait_blocked(CancelCase c, bool polling, JobThread* job) {
  const pid_t me = ::getpid();
  const bool in_kernel = c == CancelCase::kStopKernel ||
                         c == CancelCase::kStopKernelAsync ||
                         c == CancelCase::kRefSignalRawFlock;
  const bool sync = c != CancelCase::kStopKernelAsync;
  bool returned = false;
  auto gone = [&] { return sync && (returned = job->finished()); };
  if (in_kernel && !polling) {
    return wait_until(
               [&] { return proc_locks_waiter(me, g_dir->ino) || gone(); },
               kGiveUp) &&
           !returned;
  }
  return wait_until([&] { return job->entering(); }, kGiveUp) &&
         wait_until(
             [&] { return thread_syscall(job->tid()) == SYS_futex || gone(); },
             kGiveUp) &&
         !returned;
}

// `spaced`: timeout rows only; each event follows 30 ms of quiet and uses a
// 10 ms timeout, so no /proc/locks read (by the harness or by tierlock) in the
// previous few milliseconds keeps the kernel's file_rwsem in its slow mode:
// a timeout that happens alone, as in real use.
void BM_Cancel(benchmark::State& state, const std::string& row, CancelCase c,
               bool polling, bool spaced) {
  const nanoseconds timeout_ns = spaced ? milliseconds(10) : g_cfg.timeout;
  std::optional<PollingFallback> fallback;
  if (polling) {
    fallback.emplace(state);
    if (!fallback->ok()) return;
  }
  absl::StatusOr<tierlock::DirLock> lock = open_lock();
  if (!check(state, lock.status())) return;
  const bool kernel =
      c == CancelCase::kStopKernel || c == CancelCase::kStopKernelAsync ||
      c == CancelCase::kTimeoutKernel ||
      c == CancelCase::kTimeoutKernelRecorded ||
      c == CancelCase::kRefSignalRawFlock || c == CancelCase::kRefTimerRawFlock;
  const bool timeout = c == CancelCase::kTimeoutKernel ||
                       c == CancelCase::kTimeoutKernelRecorded ||
                       c == CancelCase::kTimeoutInProcess ||
                       c == CancelCase::kRefTimerRawFlock ||
                       c == CancelCase::kRefCvTimeout;
  // Who holds the lock while the waiter waits: the peer, or this thread.
  PeerHold peer_hold(state, kernel, c == CancelCase::kTimeoutKernelRecorded);
  if (!peer_hold.ok()) return;
  std::optional<tierlock::Guard> local_hold;
  if (!kernel && c != CancelCase::kRefCvTimeout) {
    absl::StatusOr<tierlock::Guard> g = lock->acquire();
    if (!check(state, g.status())) return;
    local_hold.emplace(*std::move(g));
  }
  Fd raw_fd;
  std::optional<NoRestartHandler> handler;
  if (c == CancelCase::kRefSignalRawFlock ||
      c == CancelCase::kRefTimerRawFlock) {
    raw_fd.reset(open_lock_fd(g_dir->lock_file.c_str()));
    handler.emplace();
    if (!raw_fd.ok() || !handler->ok()) {
      state.SkipWithError("reference: open or sigaction failed");
      return;
    }
  }
  std::optional<tierlock::WorkerPool> pool;
  if (c == CancelCase::kStopKernelAsync) pool.emplace(2);

  const auto wanted = timeout ? absl::StatusCode::kDeadlineExceeded
                              : absl::StatusCode::kCancelled;
  JobThread job;
  Latencies lat(row);
  lat.reserve(static_cast<std::size_t>(g_cfg.cancels));
  int wrong_outcome = 0;
  int left_in_kernel = 0;
  int early = 0;
  std::string first_error;
  const pid_t me = ::getpid();

  for (auto _ : state) {
    if (spaced) sleep_ns(std::chrono::nanoseconds(milliseconds(30)).count());
    std::stop_source source;
    std::int64_t t_call = 0;
    std::int64_t t_return = 0;
    absl::StatusCode code = absl::StatusCode::kUnknown;
    std::string message;
    // The async row's completion, on a pool thread.
    std::mutex done_mu;
    std::condition_variable done_cv;
    bool async_done = false;

    switch (c) {
      case CancelCase::kStopKernel:
      case CancelCase::kStopInProcess:
        job.run([&] {
          absl::StatusOr<tierlock::Guard> g =
              lock->acquire(options_stop(source.get_token()));
          t_return = mono_ns();
          code = g.status().code();
          message = std::string(g.status().message());
        });
        break;
      case CancelCase::kTimeoutKernel:
      case CancelCase::kTimeoutKernelRecorded:
      case CancelCase::kTimeoutInProcess:
        job.run([&] {
          t_call = mono_ns();
          absl::StatusOr<tierlock::Guard> g =
              lock->acquire(options_timeout(timeout_ns));
          t_return = mono_ns();
          code = g.status().code();
          message = std::string(g.status().message());
        });
        break;
      case CancelCase::kStopKernelAsync:
        lock->acquire_async(options_stop(source.get_token(), &*pool),
                            [&](absl::StatusOr<tierlock::Guard> g) {
                              const std::int64_t t = mono_ns();
                              std::lock_guard<std::mutex> lk(done_mu);
                              t_return = t;
                              code = g.status().code();
                              message = std::string(g.status().message());
                              async_done = true;
                              done_cv.notify_all();
                            });
        break;
      case CancelCase::kRefSignalRawFlock:
        job.run([&] {
          const int rc = ::flock(raw_fd.get(), LOCK_EX);
          t_return = mono_ns();
          code = rc == 0          ? absl::StatusCode::kOk
                 : errno == EINTR ? absl::StatusCode::kCancelled
                                  : absl::StatusCode::kInternal;
          if (rc == 0) ::flock(raw_fd.get(), LOCK_UN);
        });
        break;
      case CancelCase::kRefTimerRawFlock:
        job.run([&] {
          // tierlock's mechanism without tierlock: a timer that signals this
          // thread at the deadline, created and deleted per wait.
          struct sigevent sev = {};
          sev.sigev_notify = SIGEV_THREAD_ID;
          sev.sigev_signo = SIGUSR2;
          sev._sigev_un._tid = ::gettid();  // sigev_notify_thread_id
          timer_t timer;
          if (::timer_create(CLOCK_MONOTONIC, &sev, &timer) != 0) {
            code = absl::StatusCode::kInternal;
            return;
          }
          t_call = mono_ns();
          const std::int64_t deadline = t_call + timeout_ns.count();
          struct itimerspec its = {};
          its.it_value.tv_sec = static_cast<time_t>(deadline / 1'000'000'000);
          its.it_value.tv_nsec = static_cast<long>(deadline % 1'000'000'000);
          ::timer_settime(timer, TIMER_ABSTIME, &its, nullptr);
          const int rc = ::flock(raw_fd.get(), LOCK_EX);
          const int err = errno;
          t_return = mono_ns();
          ::timer_delete(timer);
          code = rc == 0        ? absl::StatusCode::kOk
                 : err == EINTR ? absl::StatusCode::kDeadlineExceeded
                                : absl::StatusCode::kInternal;
          if (rc == 0) ::flock(raw_fd.get(), LOCK_UN);
        });
        break;
      case CancelCase::kRefCvTimeout:
        job.run([&] {
          std::mutex mu;
          std::condition_variable cv;
          std::unique_lock<std::mutex> lk(mu);
          t_call = mono_ns();
          const std::chrono::steady_clock::time_point deadline(
              nanoseconds(t_call + timeout_ns.count()));
          const bool timed_out =
              cv.wait_until(lk, deadline) == std::cv_status::timeout;
          t_return = mono_ns();
          code = timed_out ? absl::StatusCode::kDeadlineExceeded
                           : absl::StatusCode::kInternal;
        });
        break;
    }

    std::int64_t t_stop = 0;
    if (!timeout) {
      if (!wait_blocked(c, polling, &job)) {
        const std::string why =
            job.finished()
                ? "the waiter returned before it was seen "
                  "blocked: outcome " +
                      std::to_string(static_cast<int>(code)) + " " + message
                : std::string("the waiter was never seen blocked");
        state.SkipWithError(why.c_str());
        source.request_stop();
        if (c == CancelCase::kRefSignalRawFlock) {
          ::pthread_kill(job.handle(), SIGUSR2);
        }
        (void)job.wait_done(kGiveUp);
        break;
      }
      sleep_ns(g_cfg.settle.count());
      t_stop = mono_ns();
      if (c == CancelCase::kRefSignalRawFlock) {
        ::pthread_kill(job.handle(), SIGUSR2);
      } else {
        source.request_stop();
      }
    }
    bool finished = job.wait_done(kGiveUp + timeout_ns);
    if (finished && c == CancelCase::kStopKernelAsync) {
      std::unique_lock<std::mutex> lk(done_mu);
      finished = done_cv.wait_for(lk, kGiveUp, [&] { return async_done; });
    }
    if (!finished) {
      // Do not leave a thread behind: let it have the lock, then stop.
      state.SkipWithError("the waiter did not return within 5 s");
      peer_hold.release();
      local_hold.reset();
      (void)job.wait_done(kGiveUp);
      break;
    }
    const std::int64_t ns =
        timeout ? t_return - (t_call + timeout_ns.count()) : t_return - t_stop;
    if (ns < 0) ++early;
    lat.add(ns, timeout ? t_call : t_stop);
    set_iteration_ns(state, ns);
    if (code != wanted) {
      ++wrong_outcome;
      if (first_error.empty()) {
        first_error = "outcome " + std::to_string(static_cast<int>(code)) +
                      ": " + message;
      }
    }
    // Nothing may stay parked in the kernel for a waiter that gave up.
    if (kernel && proc_locks_waiter(me, g_dir->ino)) ++left_in_kernel;
  }
  lat.report(state);
  state.counters["wrong_outcome"] = wrong_outcome;
  state.counters["left_in_kernel"] = left_in_kernel;
  if (timeout) state.counters["early"] = early;
  if (!first_error.empty()) {
    std::fprintf(stderr, "%s: %s\n", row.c_str(), first_error.c_str());
  }
}

// ---------------------------------------------------------------------------
// Row: cross-process handoff.

enum class Acquirer {
  kFlockBlocking,    // baseline: raw flock(LOCK_EX) on this process's own fd
  kPollNb1ms,        // baseline: LOCK_NB, then 1 ms sleep, until it succeeds
  kTierlock,         // DirLock::acquire()
  kTierlockStop,     // DirLock::acquire({.stop = token}) (interruptible path)
  kTierlockTimeout,  // DirLock::acquire({.timeout = 60 s}) (interruptible)
  kTierlockPollingFallback,  // acquire({.stop}) with
                             // set_wait_interrupt_signal(0)
  kRefPipe,                  // reference: blocked in read(2), A writes one byte
};

// Pins this thread and the peer for a scope; restores both.
class Placement {
 public:
  Placement(benchmark::State& state, int cpus) {
    ::sched_getaffinity(0, sizeof original_, &original_);
    if (cpus == 2 && g_cfg.cpus < 2) {
      state.SkipWithError("needs 2 CPUs");
      return;
    }
    const int a = cpus == 1 ? g_cfg.cpu_b : g_cfg.cpu_a;
    if (!g_peer->pin(a) || !pin_to(g_cfg.cpu_b)) {
      state.SkipWithError("sched_setaffinity failed");
      return;
    }
    ok_ = true;
  }
  ~Placement() {
    ::sched_setaffinity(0, sizeof original_, &original_);
    (void)g_peer->pin(-1);
  }
  Placement(const Placement&) = delete;
  Placement& operator=(const Placement&) = delete;
  bool ok() const { return ok_; }

 private:
  cpu_set_t original_;
  bool ok_ = false;
};

void BM_Handoff(benchmark::State& state, const std::string& row, Acquirer how,
                int cpus) {
  Placement placement(state, cpus);
  if (!placement.ok()) return;
  std::optional<PollingFallback> fallback;
  if (how == Acquirer::kTierlockPollingFallback) {
    fallback.emplace(state);
    if (!fallback->ok()) return;
  }
  std::optional<tierlock::DirLock> lock;
  Fd fd;
  if (how == Acquirer::kFlockBlocking || how == Acquirer::kPollNb1ms) {
    fd.reset(open_lock_fd(g_dir->lock_file.c_str()));
    if (!fd.ok()) {
      state.SkipWithError(errno_message("open", g_dir->lock_file).c_str());
      return;
    }
  } else if (how != Acquirer::kRefPipe) {
    absl::StatusOr<tierlock::DirLock> opened = open_lock();
    if (!check(state, opened.status())) return;
    lock.emplace(*std::move(opened));
  }
  std::stop_source never;  // kTierlockStop: a token that is never stopped
  PeerShared* shm = g_peer->shared();
  Ready ready = Ready::kProcLocks;
  if (how == Acquirer::kPollNb1ms ||
      how == Acquirer::kTierlockPollingFallback) {
    ready = Ready::kRandom;
  } else if (how == Acquirer::kRefPipe) {
    ready = Ready::kSleeping;
  }
  static std::uint64_t seq = 0;
  Latencies lat(row);
  lat.reserve(static_cast<std::size_t>(g_cfg.handoffs));
  std::string error;

  for (auto _ : state) {
    ++seq;
    const PeerCommand cmd{
        PeerOp::kHandoff,    0, ready, how == Acquirer::kRefPipe ? 1 : 0, seq,
        g_cfg.settle.count()};
    if (g_peer->call(cmd) != 'k') {
      error = "peer: could not take the lock";
      break;
    }
    shm->b_tid.store(::gettid(), std::memory_order_relaxed);
    shm->b_ready.store(seq, std::memory_order_release);
    std::int64_t t_acquired = 0;
    std::optional<tierlock::Guard> guard;
    bool ok = true;
    switch (how) {
      case Acquirer::kFlockBlocking:
        ok = flock_retry(fd.get(), LOCK_EX) == 0;
        t_acquired = mono_ns();
        if (!ok) error = errno_message("flock", g_dir->lock_file);
        break;
      case Acquirer::kPollNb1ms:
        for (;;) {
          if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) break;
          if (errno != EWOULDBLOCK && errno != EINTR) {
            ok = false;
            error = errno_message("flock", g_dir->lock_file);
            break;
          }
          sleep_ns(1'000'000);
        }
        t_acquired = mono_ns();
        break;
      case Acquirer::kTierlock:
      case Acquirer::kTierlockStop:
      case Acquirer::kTierlockTimeout:
      case Acquirer::kTierlockPollingFallback: {
        tierlock::AcquireOptions options;
        if (how == Acquirer::kTierlockTimeout) {
          options.timeout = seconds(60);
        } else if (how != Acquirer::kTierlock) {
          options.stop = never.get_token();
        }
        absl::StatusOr<tierlock::Guard> g = lock->acquire(std::move(options));
        t_acquired = mono_ns();
        ok = g.ok();
        if (ok) {
          guard.emplace(*std::move(g));
        } else {
          error = std::string(g.status().message());
        }
        break;
      }
      case Acquirer::kRefPipe:
        ok = g_peer->read_reply() == 'w';
        t_acquired = mono_ns();
        if (!ok) error = "peer: no wakeup byte";
        break;
    }
    shm->b_done.store(seq, std::memory_order_release);
    if (guard) {
      if (absl::Status st = guard->release(); !st.ok() && ok) {
        ok = false;
        error = std::string(st.message());
      }
    } else if (fd.ok() && ok) {
      (void)flock_retry(fd.get(), LOCK_UN);
    }
    if (std::string f = g_peer->take_failure(); !f.empty()) {
      ok = false;
      error = f;
    }
    if (!ok) break;
    const std::int64_t t_release =
        shm->t_release.load(std::memory_order_acquire);
    const std::int64_t ns = t_acquired - t_release;
    lat.add(ns, t_release);
    set_iteration_ns(state, ns);
  }
  if (!error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  lat.report(state);
}

// ---------------------------------------------------------------------------
// Row: async acquire throughput.

void BM_AsyncCallbacks(benchmark::State& state) {
  tierlock::WorkerPool pool(static_cast<std::size_t>(state.range(0)));
  absl::StatusOr<tierlock::DirLock> lock = open_lock();
  if (!check(state, lock.status())) return;
  const int n = g_cfg.async_n;
  struct Batch {
    std::mutex mu;
    std::condition_variable cv;
    int remaining = 0;
    int errors = 0;
    std::string error;
  };
  for (auto _ : state) {
    Batch batch;
    batch.remaining = n;
    for (int i = 0; i < n; ++i) {
      lock->acquire_async(
          options_pool(&pool), [&batch](absl::StatusOr<tierlock::Guard> g) {
            absl::Status st = g.ok() ? g->release() : g.status();
            std::lock_guard<std::mutex> lk(batch.mu);
            if (!st.ok() && batch.errors++ == 0) {
              batch.error = std::string(st.message());
            }
            if (--batch.remaining == 0) batch.cv.notify_all();
          });
    }
    std::unique_lock<std::mutex> lk(batch.mu);
    if (!batch.cv.wait_for(lk, seconds(30),
                           [&] { return batch.remaining == 0; })) {
      state.SkipWithError("async acquires did not complete within 30 s");
      return;  // pool's destructor cancels the rest
    }
    if (batch.errors > 0) {
      state.SkipWithError(batch.error.c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_AsyncFutureRoundTrip(benchmark::State& state) {
  tierlock::WorkerPool pool(static_cast<std::size_t>(state.range(0)));
  absl::StatusOr<tierlock::DirLock> lock = open_lock();
  if (!check(state, lock.status())) return;
  const int n = g_cfg.async_n;
  for (auto _ : state) {
    for (int i = 0; i < n; ++i) {
      absl::StatusOr<tierlock::Guard> g =
          lock->acquire_async(options_pool(&pool)).get();
      if (!check(state, g.ok() ? g->release() : g.status())) [[unlikely]]
        return;
    }
  }
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_SyncLoop(benchmark::State& state) {
  absl::StatusOr<tierlock::DirLock> lock = open_lock();
  if (!check(state, lock.status())) return;
  const int n = g_cfg.async_n;
  for (auto _ : state) {
    for (int i = 0; i < n; ++i) {
      absl::StatusOr<tierlock::Guard> g = lock->acquire();
      if (!check(state, g.ok() ? g->release() : g.status())) [[unlikely]]
        return;
    }
  }
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_FlockLoop(benchmark::State& state) {
  Fd fd(open_lock_fd(g_dir->lock_file.c_str()));
  if (!fd.ok()) {
    state.SkipWithError(errno_message("open", g_dir->lock_file).c_str());
    return;
  }
  const int n = g_cfg.async_n;
  for (auto _ : state) {
    for (int i = 0; i < n; ++i) {
      if (flock_retry(fd.get(), LOCK_EX) != 0 ||
          flock_retry(fd.get(), LOCK_UN) != 0) [[unlikely]] {
        state.SkipWithError(errno_message("flock", g_dir->lock_file).c_str());
        return;
      }
    }
  }
  state.SetItemsProcessed(state.iterations() * n);
}

// ---------------------------------------------------------------------------

double stat_max(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

void register_benchmarks() {
  // Latency rows: one event per iteration, timed by hand, a fixed count;
  // "max" across repetitions beside Google Benchmark's mean/median/stddev/cv.
  auto events = [](benchmark::internal::Benchmark* b, int n) {
    b->Iterations(n)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->ComputeStatistics("max", &stat_max);
  };

  struct CancelRow {
    const char* name;
    CancelCase c;
    bool polling;
    bool spaced;
  };
  for (const CancelRow& r : {
           CancelRow{"cancel/ref_signal_raw_flock",
                     CancelCase::kRefSignalRawFlock, false, false},
           CancelRow{"cancel/tierlock_stop_kernel", CancelCase::kStopKernel,
                     false, false},
           CancelRow{"cancel/tierlock_stop_kernel_async",
                     CancelCase::kStopKernelAsync, false, false},
           CancelRow{"cancel/tierlock_stop_in_process",
                     CancelCase::kStopInProcess, false, false},
           CancelRow{"cancel/tierlock_polling_stop_kernel",
                     CancelCase::kStopKernel, true, false},
           CancelRow{"timeout/ref_timer_raw_flock",
                     CancelCase::kRefTimerRawFlock, false, false},
           CancelRow{"timeout/ref_cv_wait_until", CancelCase::kRefCvTimeout,
                     false, false},
           CancelRow{"timeout/tierlock_kernel", CancelCase::kTimeoutKernel,
                     false, false},
           CancelRow{"timeout/tierlock_in_process",
                     CancelCase::kTimeoutInProcess, false, false},
           CancelRow{"timeout/tierlock_kernel_spaced",
                     CancelCase::kTimeoutKernel, false, true},
           CancelRow{"timeout/tierlock_in_process_spaced",
                     CancelCase::kTimeoutInProcess, false, true},
           CancelRow{"timeout/tierlock_kernel_spaced_recorded_holder",
                     CancelCase::kTimeoutKernelRecorded, false, true},
           CancelRow{"timeout/tierlock_polling_kernel",
                     CancelCase::kTimeoutKernel, true, false},
       }) {
    events(benchmark::RegisterBenchmark(r.name, BM_Cancel, std::string(r.name),
                                        r.c, r.polling, r.spaced),
           r.spaced ? g_cfg.spaced : g_cfg.cancels);
  }

  struct HandoffRow {
    const char* name;
    Acquirer how;
  };
  for (int cpus : {1, 2}) {
    for (const HandoffRow& r : {
             HandoffRow{"handoff/flock_blocking", Acquirer::kFlockBlocking},
             HandoffRow{"handoff/poll_nb_1ms", Acquirer::kPollNb1ms},
             HandoffRow{"handoff/tierlock_acquire", Acquirer::kTierlock},
             HandoffRow{"handoff/tierlock_acquire_stop",
                        Acquirer::kTierlockStop},
             HandoffRow{"handoff/tierlock_acquire_timeout",
                        Acquirer::kTierlockTimeout},
             HandoffRow{"handoff/tierlock_polling_fallback",
                        Acquirer::kTierlockPollingFallback},
             HandoffRow{"handoff/ref_pipe_wakeup", Acquirer::kRefPipe},
         }) {
      const std::string name =
          std::string(r.name) + "/cpus:" + std::to_string(cpus);
      events(benchmark::RegisterBenchmark(name.c_str(), BM_Handoff, name, r.how,
                                          cpus),
             g_cfg.handoffs);
    }
  }

  auto pools = [](benchmark::internal::Benchmark* b) {
    b->ArgName("pool")->Arg(1)->Arg(2)->Arg(4)->UseRealTime()->Unit(
        benchmark::kMicrosecond);
  };
  pools(benchmark::RegisterBenchmark("async/tierlock_callbacks",
                                     BM_AsyncCallbacks));
  pools(benchmark::RegisterBenchmark("async/tierlock_future_round_trip",
                                     BM_AsyncFutureRoundTrip));
  benchmark::RegisterBenchmark("async/tierlock_sync_loop", BM_SyncLoop)
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("async/ref_flock_loop", BM_FlockLoop)
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
}

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
      wait_until([&] { return proc_locks_waiter(::getpid(), g_dir->ino); },
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

  register_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  peer.stop();
  std::error_code ec;
  fs::remove_all(dir.dir, ec);
  return 0;
}

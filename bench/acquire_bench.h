// bench/acquire_bench.h
//
// What the parts of acquire_bench share (bench/acquire_bench.cc says what the
// binary measures and how):
//   g_cfg, g_dir, g_peer     - the run's configuration, lock directory and
//                              peer process (set up in main).
//   mono_ns, sleep_ns        - CLOCK_MONOTONIC stamps and sleeps.
//   options_*                - AcquireOptions built field by field.
//   wait_until               - polls a predicate until a limit.
//   Latencies                - one repetition's latencies and their counters.
//   latency_events           - the shape of a latency row.
//   Peer, PeerHold           - the other process holding the lock.
//   PollingFallback          - the polling fallback for a scope.
//   register_*_benchmarks    - each part's rows (acquire_{cancel,handoff,
//                              async}_bench.cc), registered by main in that
//                              order.
// The /proc readers are tests/support/proc.h, shared with the tests.
#ifndef TIERLOCK_BENCH_ACQUIRE_BENCH_H_
#define TIERLOCK_BENCH_ACQUIRE_BENCH_H_

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "bench_util.h"
#include "support/proc.h"
#include "tierlock/acquire_options.h"
#include "tierlock/config.h"
#include "tierlock/dir_lock.h"
#include "tierlock/executor.h"
#include "tierlock/guard.h"

namespace tierlock::bench {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;
using testing::has_flock_waiter;
using testing::thread_state;
using testing::thread_syscall;

// tierlock's default interrupt signal (config.h), set explicitly at start so
// the polling rows can switch to 0 and back.
inline int interrupt_signal() { return SIGRTMAX - 7; }
// How long anything here waits for the other side before giving up.
inline constexpr nanoseconds kGiveUp = seconds(5);

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
inline Config g_cfg;

inline std::int64_t mono_ns() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

inline void sleep_ns(std::int64_t ns) {
  if (ns <= 0) return;
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// AcquireOptions built field by field (GCC's -Wmissing-field-initializers
// flags designated initializers that leave members defaulted).
inline tierlock::AcquireOptions options_stop(
    std::stop_token stop, tierlock::WorkerPool* pool = nullptr) {
  tierlock::AcquireOptions o;
  o.stop = std::move(stop);
  o.pool = pool;
  return o;
}
inline tierlock::AcquireOptions options_timeout(nanoseconds timeout) {
  tierlock::AcquireOptions o;
  o.timeout = timeout;
  return o;
}
inline tierlock::AcquireOptions options_pool(tierlock::WorkerPool* pool) {
  tierlock::AcquireOptions o;
  o.pool = pool;
  return o;
}

// Reads the whole of a /proc file with plain read(2) ("" on error).
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

inline void set_iteration_ns(benchmark::State& state, std::int64_t ns) {
  state.SetIterationTime(static_cast<double>(std::max<std::int64_t>(ns, 0)) *
                         1e-9);
}

// The lock directory every benchmark uses (created in main).
double stat_max(const std::vector<double>& v);
// Latency rows: one event per iteration, timed by hand, a fixed count `n`;
// "max" across repetitions beside Google Benchmark's mean/median/stddev/cv.
inline void latency_events(benchmark::internal::Benchmark* b, int n) {
  b->Iterations(n)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->ComputeStatistics("max", &stat_max);
}

struct BenchDir {
  std::string dir;        // canonical mkdtemp directory
  std::string lock_file;  // dir + "/.lock"
  ino_t ino = 0;          // the lock file's inode, as /proc/locks shows it
};
inline const BenchDir* g_dir = nullptr;

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

inline bool pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<std::size_t>(cpu), &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

// Process A and the cancel rows' holder; never returns (acquire_bench.cc).
[[noreturn]] void peer_main(int cmd_fd, int reply_fd, PeerShared* shm,
                            const BenchDir& dir);

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
inline Peer* g_peer = nullptr;

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

inline absl::StatusOr<tierlock::DirLock> open_lock() {
  return tierlock::DirLock::open(g_dir->dir);
}

// Each part's rows, registered by main in this order.
void register_cancel_benchmarks();
void register_handoff_benchmarks();
void register_async_benchmarks();

}  // namespace tierlock::bench

#endif  // TIERLOCK_BENCH_ACQUIRE_BENCH_H_

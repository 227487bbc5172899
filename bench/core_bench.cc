// bench/core_bench.cc
//
// tierlock's core costs beside the baselines a user would otherwise reach for,
// in one binary and one run, so ratios are within a run (docs/perf.md rows
// 1-3):
//   uncontended/  acquire+release on a handle kept across iterations
//                 (baseline: raw flock EX+UN on a kept fd).
//   new_handle/   open a handle per acquire on a directory 10 components deep
//                 (baseline: open+flock+unlock+close).
//   contention/   N threads of one process loop acquire/release of one lock for
//                 a fixed time window; aggregate throughput and fairness
//                 (baseline: std::mutex + flock on one shared fd).
//
// bench/run.sh builds this in Release and runs it; bench/ratios.py turns the
// JSON into the table of medians and ratios. Names are "<row>/<variant>"; a
// variant starting with "ref_" is a reference point, not a competitor.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <boost/interprocess/sync/file_lock.hpp>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench_util.h"
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"
#include "tierlock/mode.h"

namespace {

using namespace tierlock::bench;  // NOLINT: the benchmarks' shared vocabulary

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kLockName = ".lock";
// Components below the mkdtemp directory, so the deep lock directory is
// /tmp/tierlock-bench.XXXXXX/d1/.../d8: 10 components, the depth the
// baseline figures in docs/perf.md use.
constexpr int kDeepLevels = 8;

// The directories every benchmark uses. Created in main before any benchmark
// runs; removed at exit.
struct BenchDirs {
  std::string shallow;       // canonical mkdtemp directory (2 components)
  std::string shallow_lock;  // shallow + "/.lock"
  std::string deep;          // canonical, 10 components
  std::string deep_lock;     // deep + "/.lock"
};
const BenchDirs* g_dirs = nullptr;

// One tierlock acquire + release; false (benchmark skipped) on error.
bool tierlock_cycle(benchmark::State& state, tierlock::DirLock& lock,
                    tierlock::Mode mode) {
  absl::StatusOr<tierlock::Guard> guard = lock.acquire(mode);
  if (!check(state, guard.status())) return false;
  return check(state, guard->release());
}

// ---------------------------------------------------------------------------
// Row 1: uncontended acquire+release, handle reused.

void BM_RefGetppidX2(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(::getppid());
    benchmark::DoNotOptimize(::getppid());
  }
}

// Raw flock on a kept fd onto `path`, with operation `lock_op` then LOCK_UN.
void BM_KeptFlock(benchmark::State& state, const std::string& path,
                  int lock_op) {
  Fd fd(open_lock_fd(path.c_str()));
  if (!fd.ok()) {
    state.SkipWithError(errno_message("open", path).c_str());
    return;
  }
  for (auto _ : state) {
    if (flock_retry(fd.get(), lock_op) != 0 ||
        flock_retry(fd.get(), LOCK_UN) != 0) [[unlikely]] {
      state.SkipWithError(errno_message("flock", path).c_str());
      break;
    }
  }
}

// The floor of a lock-file lock that is sound against the lock file being
// deleted or replaced (the re-check nix's pathlocks and tierlock make after
// every grant): a flock pair on a kept fd plus one fstatat of the path.
void BM_FlockAndPathCheck(benchmark::State& state, const std::string& path) {
  Fd fd(open_lock_fd(path.c_str()));
  if (!fd.ok()) {
    state.SkipWithError(errno_message("open", path).c_str());
    return;
  }
  struct stat st;
  for (auto _ : state) {
    if (flock_retry(fd.get(), LOCK_EX) != 0 ||
        ::fstatat(AT_FDCWD, path.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        flock_retry(fd.get(), LOCK_UN) != 0) [[unlikely]] {
      state.SkipWithError(errno_message("flock/fstatat", path).c_str());
      break;
    }
    benchmark::DoNotOptimize(st.st_ino);
  }
}

void BM_BoostFileLockKept(benchmark::State& state) {
  boost::interprocess::file_lock lock(g_dirs->shallow_lock.c_str());
  for (auto _ : state) {
    lock.lock();
    lock.unlock();
  }
}

void BM_TierlockAcquire(benchmark::State& state, tierlock::Mode mode) {
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(g_dirs->shallow);
  if (!check(state, lock.status())) return;
  for (auto _ : state) {
    if (!tierlock_cycle(state, *lock, mode)) [[unlikely]]
      break;
  }
}

void BM_TierlockTryAcquire(benchmark::State& state) {
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(g_dirs->shallow);
  if (!check(state, lock.status())) return;
  for (auto _ : state) {
    absl::StatusOr<std::optional<tierlock::Guard>> guard = lock->try_acquire();
    if (!check(state, guard.status())) [[unlikely]]
      break;
    if (!guard->has_value()) [[unlikely]] {
      state.SkipWithError("try_acquire: not acquired, uncontended");
      break;
    }
    if (!check(state, (*guard)->release())) [[unlikely]]
      break;
  }
}

// The std Lockable members (lock()/unlock(), as std::scoped_lock uses them).
void BM_TierlockLockable(benchmark::State& state) {
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(g_dirs->shallow);
  if (!check(state, lock.status())) return;
  for (auto _ : state) {
    lock->lock();
    lock->unlock();
  }
}

// ---------------------------------------------------------------------------
// Row 2: a new handle per acquire, directory 10 components deep.

void BM_RefStatLockFile(benchmark::State& state) {
  const char* path = g_dirs->deep_lock.c_str();
  struct stat st;
  for (auto _ : state) {
    if (::fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW) != 0) [[unlikely]] {
      state.SkipWithError(errno_message("stat", g_dirs->deep_lock).c_str());
      break;
    }
    benchmark::DoNotOptimize(st.st_ino);
  }
}

void BM_RefRealpath(benchmark::State& state) {
  const char* dir = g_dirs->deep.c_str();
  char resolved[PATH_MAX];
  for (auto _ : state) {
    if (::realpath(dir, resolved) == nullptr) [[unlikely]] {
      state.SkipWithError(errno_message("realpath", g_dirs->deep).c_str());
      break;
    }
    benchmark::DoNotOptimize(resolved);
  }
}

// open + flock EX + UN + close of `path`; false (skipped) on error.
bool open_flock_close(benchmark::State& state, const char* path) {
  const int fd = open_lock_fd(path);
  if (fd < 0) [[unlikely]] {
    state.SkipWithError(errno_message("open", path).c_str());
    return false;
  }
  const bool ok =
      flock_retry(fd, LOCK_EX) == 0 && flock_retry(fd, LOCK_UN) == 0;
  if (!ok) [[unlikely]] {
    state.SkipWithError(errno_message("flock", path).c_str());
  }
  ::close(fd);
  return ok;
}

void BM_OpenFlockClose(benchmark::State& state) {
  const char* path = g_dirs->deep_lock.c_str();
  for (auto _ : state) {
    if (!open_flock_close(state, path)) [[unlikely]]
      break;
  }
}

void BM_RealpathOpenFlockClose(benchmark::State& state) {
  const char* dir = g_dirs->deep.c_str();
  char resolved[PATH_MAX + 8];
  for (auto _ : state) {
    if (::realpath(dir, resolved) == nullptr) [[unlikely]] {
      state.SkipWithError(errno_message("realpath", g_dirs->deep).c_str());
      break;
    }
    std::strcat(resolved, "/.lock");
    if (!open_flock_close(state, resolved)) [[unlikely]]
      break;
  }
}

void BM_BoostFileLockPerUse(benchmark::State& state) {
  const char* path = g_dirs->deep_lock.c_str();
  for (auto _ : state) {
    boost::interprocess::file_lock lock(path);
    lock.lock();
    lock.unlock();
  }
}

// DirLock::open(dir) + acquire + release + handle destroyed. With `warm`,
// another handle on the same directory stays alive outside the loop, so open
// finds the registry entry; without, every iteration creates the entry and
// closes its descriptor when the handle goes.
void BM_TierlockOpenPerUse(benchmark::State& state, bool warm,
                           const std::string& dir_string) {
  const fs::path dir(dir_string);
  std::optional<tierlock::DirLock> keep;
  if (warm) {
    absl::StatusOr<tierlock::DirLock> lock = tierlock::DirLock::open(dir);
    if (!check(state, lock.status())) return;
    keep.emplace(*std::move(lock));
  }
  for (auto _ : state) {
    absl::StatusOr<tierlock::DirLock> lock = tierlock::DirLock::open(dir);
    if (!check(state, lock.status())) [[unlikely]]
      break;
    if (!tierlock_cycle(state, *lock, tierlock::Mode::kExclusive))
        [[unlikely]] {
      break;
    }
  }
}

// ---------------------------------------------------------------------------
// Row 3: in-process contention on one lock, own threads, fixed time window.

// Acquire-wait latencies in a log-linear histogram: 16 sub-buckets per power of
// two (about 6 % resolution), so recording costs no allocation.
class WaitHistogram {
 public:
  void record(std::uint64_t ns) {
    ++buckets_[index(ns)];
    max_ = std::max(max_, ns);
  }
  void merge(const WaitHistogram& other) {
    for (std::size_t i = 0; i < kBuckets; ++i) buckets_[i] += other.buckets_[i];
    max_ = std::max(max_, other.max_);
  }
  // Returns the upper edge of the bucket holding quantile `q` (0..1), in ns.
  double quantile(double q) const {
    std::uint64_t total = 0;
    for (std::uint64_t n : buckets_) total += n;
    if (total == 0) return 0;
    const auto rank =
        static_cast<std::uint64_t>(q * static_cast<double>(total - 1));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += buckets_[i];
      if (seen > rank) return static_cast<double>(upper_edge(i));
    }
    return static_cast<double>(max_);
  }
  std::uint64_t max() const { return max_; }

 private:
  static constexpr unsigned kSubBits = 4;
  static constexpr std::size_t kBuckets = (64 - kSubBits + 1) << kSubBits;

  static std::size_t index(std::uint64_t ns) {
    if (ns < (1u << kSubBits)) return static_cast<std::size_t>(ns);
    const auto msb = static_cast<unsigned>(std::bit_width(ns) - 1);
    const unsigned shift = msb - kSubBits;
    const std::uint64_t sub = (ns >> shift) & ((1u << kSubBits) - 1);
    return (static_cast<std::size_t>(shift + 1) << kSubBits) +
           static_cast<std::size_t>(sub);
  }
  static std::uint64_t upper_edge(std::size_t i) {
    if (i < (1u << kSubBits)) return i;
    const std::size_t shift = (i >> kSubBits) - 1;
    const std::uint64_t sub = i & ((1u << kSubBits) - 1);
    return (((std::uint64_t{1} << kSubBits) | sub) + 1) << shift;
  }

  std::array<std::uint64_t, kBuckets> buckets_{};
  std::uint64_t max_ = 0;
};

std::chrono::milliseconds contention_window() {
  if (const char* env = std::getenv("TIERLOCK_BENCH_WINDOW_MS")) {
    const long ms = std::strtol(env, nullptr, 10);
    if (ms > 0) return std::chrono::milliseconds(ms);
  }
  return std::chrono::milliseconds(300);
}

// Returns the calling thread's context switches so far (voluntary+involuntary).
std::uint64_t thread_context_switches() {
  struct rusage ru;
  if (::getrusage(RUSAGE_THREAD, &ru) != 0) return 0;
  return static_cast<std::uint64_t>(ru.ru_nvcsw) +
         static_cast<std::uint64_t>(ru.ru_nivcsw);
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Runs `threads` workers for the contention window; each loops
// worker.lock(); worker.unlock(); counting operations and timing each lock().
// `make_worker(i)` is called on worker thread i and returns an object with
// bool lock(), bool unlock() (false: give up, error recorded) and a
// std::string error().
template <typename MakeWorker>
void run_contention(benchmark::State& state, MakeWorker make_worker) {
  const auto threads = static_cast<int>(state.range(0));
  const std::chrono::milliseconds window = contention_window();
  std::uint64_t total_ops = 0;
  double total_seconds = 0;
  std::vector<double> max_over_median;
  std::vector<double> min_over_median;
  WaitHistogram all_waits;
  std::uint64_t total_switches = 0;

  for (auto _ : state) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::atomic<bool> stop{false};
    std::vector<std::uint64_t> ops(static_cast<std::size_t>(threads), 0);
    std::vector<WaitHistogram> waits(static_cast<std::size_t>(threads));
    std::vector<std::uint64_t> switches(static_cast<std::size_t>(threads), 0);
    std::mutex error_mu;
    std::string error;

    std::vector<std::thread> workers;
    workers.reserve(static_cast<std::size_t>(threads));
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        auto worker = make_worker(t);
        const auto i = static_cast<std::size_t>(t);
        std::uint64_t n = 0;
        WaitHistogram& hist = waits[i];
        ready.fetch_add(1);
        while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
        const std::uint64_t switches_before = thread_context_switches();
        while (!stop.load(std::memory_order_relaxed)) {
          const Clock::time_point t0 = Clock::now();
          const bool locked = worker.lock();
          const Clock::time_point t1 = Clock::now();
          if (!locked || !worker.unlock()) [[unlikely]] {
            std::lock_guard<std::mutex> lk(error_mu);
            if (error.empty()) error = worker.error();
            stop.store(true);
            break;
          }
          ++n;
          hist.record(static_cast<std::uint64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0)
                  .count()));
        }
        ops[i] = n;
        switches[i] = thread_context_switches() - switches_before;
      });
    }
    while (ready.load() < threads) std::this_thread::yield();
    const Clock::time_point start = Clock::now();
    go.store(true, std::memory_order_release);
    std::this_thread::sleep_for(window);
    stop.store(true);
    const Clock::time_point end = Clock::now();
    for (std::thread& w : workers) w.join();

    if (!error.empty()) {
      state.SkipWithError(error.c_str());
      break;
    }
    const double seconds = std::chrono::duration<double>(end - start).count();
    state.SetIterationTime(seconds);
    total_seconds += seconds;
    std::vector<double> per_thread(ops.begin(), ops.end());
    for (std::uint64_t n : ops) total_ops += n;
    const double med = median_of(per_thread);
    const auto [lo, hi] =
        std::minmax_element(per_thread.begin(), per_thread.end());
    max_over_median.push_back(med > 0 ? *hi / med : 0);
    min_over_median.push_back(med > 0 ? *lo / med : 0);
    for (const WaitHistogram& h : waits) all_waits.merge(h);
    for (std::uint64_t n : switches) total_switches += n;
  }
  if (total_seconds <= 0) return;
  state.SetItemsProcessed(static_cast<std::int64_t>(total_ops));
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0 : s / static_cast<double>(v.size());
  };
  // Fairness: per-thread operation counts relative to their median (1.0 =
  // every thread got the same share) and the acquire-wait distribution.
  state.counters["ops_max_over_median"] = mean(max_over_median);
  state.counters["ops_min_over_median"] = mean(min_over_median);
  state.counters["wait_p50_us"] = all_waits.quantile(0.50) / 1e3;
  state.counters["wait_p99_us"] = all_waits.quantile(0.99) / 1e3;
  state.counters["wait_max_us"] = static_cast<double>(all_waits.max()) / 1e3;
  // Context switches of the workers per lock operation: ~1 means every
  // acquisition cost a sleep and a wakeup (a convoy).
  state.counters["ctx_switches_per_op"] =
      total_ops > 0
          ? static_cast<double>(total_switches) / static_cast<double>(total_ops)
          : 0;
}

// tierlock: every thread acquires through the same DirLock handle.
void BM_ContentionTierlock(benchmark::State& state) {
  absl::StatusOr<tierlock::DirLock> opened =
      tierlock::DirLock::open(g_dirs->shallow);
  if (!check(state, opened.status())) return;
  struct Worker {
    tierlock::DirLock* dir;
    tierlock::Guard guard;
    absl::Status status;
    bool lock() {
      absl::StatusOr<tierlock::Guard> g = dir->acquire();
      status = g.status();
      if (!g.ok()) return false;
      guard = *std::move(g);
      return true;
    }
    bool unlock() {
      status = guard.release();
      return status.ok();
    }
    std::string error() const { return std::string(status.message()); }
  };
  tierlock::DirLock* lock = &*opened;
  run_contention(state, [lock](int) { return Worker{lock, {}, {}}; });
}

// Baseline: std::mutex in front of flock on one shared descriptor.
void BM_ContentionMutexFlock(benchmark::State& state) {
  Fd fd(open_lock_fd(g_dirs->shallow_lock.c_str()));
  if (!fd.ok()) {
    state.SkipWithError(errno_message("open", g_dirs->shallow_lock).c_str());
    return;
  }
  std::mutex mu;
  struct Worker {
    std::mutex* mu;
    int fd;
    int err = 0;
    bool lock() {
      mu->lock();
      if (flock_retry(fd, LOCK_EX) != 0) {
        err = errno;
        mu->unlock();
        return false;
      }
      return true;
    }
    bool unlock() {
      const bool ok = flock_retry(fd, LOCK_UN) == 0;
      if (!ok) err = errno;
      mu->unlock();
      return ok;
    }
    std::string error() const {
      return std::string("flock: ") + std::strerror(err);
    }
  };
  const int raw = fd.get();
  run_contention(state, [&](int) { return Worker{&mu, raw}; });
}

// Each thread blocks in the kernel on its own descriptor (the kernel queue).
void BM_ContentionOwnFd(benchmark::State& state) {
  struct Worker {
    explicit Worker(const char* path) : fd(open_lock_fd(path)) {
      if (fd < 0) err = errno;
    }
    Worker(Worker&& o) noexcept : fd(std::exchange(o.fd, -1)), err(o.err) {}
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
    Worker& operator=(Worker&&) = delete;
    ~Worker() {
      if (fd >= 0) ::close(fd);
    }
    int fd;
    int err = 0;
    bool lock() {
      if (fd < 0) return false;
      if (flock_retry(fd, LOCK_EX) != 0) {
        err = errno;
        return false;
      }
      return true;
    }
    bool unlock() {
      if (flock_retry(fd, LOCK_UN) != 0) {
        err = errno;
        return false;
      }
      return true;
    }
    std::string error() const {
      return std::string("open/flock: ") + std::strerror(err);
    }
  };
  const char* path = g_dirs->shallow_lock.c_str();
  run_contention(state, [path](int) { return Worker(path); });
}

// Reference: std::mutex alone (no kernel lock).
void BM_ContentionMutexOnly(benchmark::State& state) {
  std::mutex mu;
  struct Worker {
    std::mutex* mu;
    bool lock() {
      mu->lock();
      return true;
    }
    bool unlock() {
      mu->unlock();
      return true;
    }
    std::string error() const { return {}; }
  };
  run_contention(state, [&](int) { return Worker{&mu}; });
}

// ---------------------------------------------------------------------------

void register_benchmarks() {
  using tierlock::Mode;
  auto timed = [](benchmark::internal::Benchmark* b) { b->UseRealTime(); };

  // Row 1.
  timed(benchmark::RegisterBenchmark("uncontended/ref_getppid_x2",
                                     BM_RefGetppidX2));
  const std::string& lock_file = g_dirs->shallow_lock;
  timed(benchmark::RegisterBenchmark("uncontended/flock_ex", BM_KeptFlock,
                                     lock_file, LOCK_EX));
  timed(benchmark::RegisterBenchmark("uncontended/flock_ex_nb", BM_KeptFlock,
                                     lock_file, LOCK_EX | LOCK_NB));
  timed(benchmark::RegisterBenchmark("uncontended/flock_sh", BM_KeptFlock,
                                     lock_file, LOCK_SH));
  timed(benchmark::RegisterBenchmark("uncontended/floor_flock_ex_fstatat",
                                     BM_FlockAndPathCheck, lock_file));
  timed(benchmark::RegisterBenchmark("uncontended/boost_file_lock_kept",
                                     BM_BoostFileLockKept));
  timed(benchmark::RegisterBenchmark("uncontended/tierlock_acquire",
                                     BM_TierlockAcquire, Mode::kExclusive));
  timed(benchmark::RegisterBenchmark("uncontended/tierlock_try_acquire",
                                     BM_TierlockTryAcquire));
  timed(benchmark::RegisterBenchmark("uncontended/tierlock_acquire_shared",
                                     BM_TierlockAcquire, Mode::kShared));
  timed(benchmark::RegisterBenchmark("uncontended/tierlock_lock_unlock",
                                     BM_TierlockLockable));

  // Row 2.
  // Row 1's baseline again, on the deep directory's lock file.
  timed(benchmark::RegisterBenchmark("new_handle/ref_flock_kept_fd",
                                     BM_KeptFlock, g_dirs->deep_lock, LOCK_EX));
  timed(benchmark::RegisterBenchmark("new_handle/ref_stat_lock_file",
                                     BM_RefStatLockFile));
  timed(
      benchmark::RegisterBenchmark("new_handle/ref_realpath", BM_RefRealpath));
  timed(benchmark::RegisterBenchmark("new_handle/open_flock_close",
                                     BM_OpenFlockClose));
  timed(benchmark::RegisterBenchmark("new_handle/realpath_open_flock_close",
                                     BM_RealpathOpenFlockClose));
  timed(benchmark::RegisterBenchmark("new_handle/boost_file_lock_per_use",
                                     BM_BoostFileLockPerUse));
  timed(benchmark::RegisterBenchmark("new_handle/tierlock_open_cold",
                                     BM_TierlockOpenPerUse, false,
                                     g_dirs->deep));
  timed(benchmark::RegisterBenchmark("new_handle/tierlock_open_warm",
                                     BM_TierlockOpenPerUse, true,
                                     g_dirs->deep));
  // The same, but the caller's spelling is not the canonical one (a trailing
  // slash), so the registry fast path cannot compare strings.
  timed(benchmark::RegisterBenchmark(
      "new_handle/tierlock_open_warm_trailing_slash", BM_TierlockOpenPerUse,
      true, g_dirs->deep + "/"));

  // Row 3.
  auto contended = [](benchmark::internal::Benchmark* b) {
    b->ArgName("threads")
        ->Arg(1)
        ->Arg(2)
        ->Arg(4)
        ->Arg(8)
        ->Iterations(1)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  };
  contended(benchmark::RegisterBenchmark("contention/tierlock",
                                         BM_ContentionTierlock));
  contended(benchmark::RegisterBenchmark("contention/mutex_flock_shared_fd",
                                         BM_ContentionMutexFlock));
  contended(benchmark::RegisterBenchmark("contention/flock_own_fd",
                                         BM_ContentionOwnFd));
  contended(benchmark::RegisterBenchmark("contention/ref_mutex_only",
                                         BM_ContentionMutexOnly));
}

// Creates the benchmark directories under $TMPDIR (or /tmp).
bool make_dirs(BenchDirs& dirs) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
      "/tierlock-bench.XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    std::perror("mkdtemp");
    return false;
  }
  std::error_code ec;
  const fs::path shallow = fs::canonical(templ, ec);
  if (ec) {
    std::fprintf(stderr, "canonical %s: %s\n", templ.c_str(),
                 ec.message().c_str());
    return false;
  }
  fs::path deep = shallow;
  for (int i = 1; i <= kDeepLevels; ++i) {
    std::string level = std::to_string(i);
    level.insert(level.begin(),
                 'd');  // not "d" + ...: GCC 12 -Wrestrict false positive
    deep /= level;
  }
  fs::create_directories(deep, ec);
  if (ec) {
    std::fprintf(stderr, "mkdir %s: %s\n", deep.c_str(), ec.message().c_str());
    return false;
  }
  dirs.shallow = shallow.native();
  dirs.shallow_lock = (shallow / kLockName).native();
  dirs.deep = deep.native();
  dirs.deep_lock = (deep / kLockName).native();
  // Boost's file_lock needs the files to exist.
  for (const std::string* p : {&dirs.shallow_lock, &dirs.deep_lock}) {
    Fd fd(open_lock_fd(p->c_str()));
    if (!fd.ok()) {
      std::perror(p->c_str());
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  BenchDirs dirs;
  if (!make_dirs(dirs)) return 1;
  g_dirs = &dirs;
  benchmark::AddCustomContext("bench_dir_deep", dirs.deep);
  benchmark::AddCustomContext("contention_window_ms",
                              std::to_string(contention_window().count()));
#ifdef NDEBUG
  benchmark::AddCustomContext("core_bench_build", "release (NDEBUG)");
#else
  benchmark::AddCustomContext("core_bench_build", "debug (assertions on)");
#endif

  register_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  std::error_code ec;
  fs::remove_all(dirs.shallow, ec);
  return 0;
}

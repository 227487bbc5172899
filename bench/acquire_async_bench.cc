// bench/acquire_async_bench.cc
//
// acquire_bench's async/ rows (bench/acquire_bench.cc): N acquire_async on one
// lock no other process holds, each completion releasing at once, on
// WorkerPools of 1/2/4 threads; baselines: the same N synchronous
// acquire+release, and raw flock, in a loop.

#include <benchmark/benchmark.h>
#include <sys/file.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "acquire_bench.h"
#include "bench_util.h"
#include "tierlock/dir_lock.h"
#include "tierlock/executor.h"
#include "tierlock/guard.h"

namespace tierlock::bench {
namespace {

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
}  // namespace

void register_async_benchmarks() {
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

}  // namespace tierlock::bench

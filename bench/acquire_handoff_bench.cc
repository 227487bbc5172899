// bench/acquire_handoff_bench.cc
//
// acquire_bench's handoff/ rows (bench/acquire_bench.cc): process A (the
// peer) holds the lock with raw flock, process B (this one) is blocked
// acquiring it; A stamps CLOCK_MONOTONIC just before LOCK_UN, B when its
// acquire returns. Baselines and references beside tierlock, in both CPU
// placements.

#include <benchmark/benchmark.h>
#include <sched.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "acquire_bench.h"
#include "bench_util.h"
#include "tierlock/acquire_options.h"
#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"

namespace tierlock::bench {
namespace {

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

}  // namespace

void register_handoff_benchmarks() {
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
      latency_events(benchmark::RegisterBenchmark(name.c_str(), BM_Handoff,
                                                  name, r.how, cpus),
                     g_cfg.handoffs);
    }
  }
}

}  // namespace tierlock::bench

// bench/acquire_cancel_bench.cc
//
// acquire_bench's cancel/ and timeout/ rows (bench/acquire_bench.cc): a
// waiter blocked on the lock, then stop requested (the time until acquire()
// returns kCancelled) or its timeout passing (the return's lateness past the
// deadline), beside raw-flock and condition_variable references.

#include <benchmark/benchmark.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>

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
               [&] { return has_flock_waiter(me, g_dir->ino) || gone(); },
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
    if (kernel && has_flock_waiter(me, g_dir->ino)) ++left_in_kernel;
  }
  lat.report(state);
  state.counters["wrong_outcome"] = wrong_outcome;
  state.counters["left_in_kernel"] = left_in_kernel;
  if (timeout) state.counters["early"] = early;
  if (!first_error.empty()) {
    std::fprintf(stderr, "%s: %s\n", row.c_str(), first_error.c_str());
  }
}

}  // namespace

void register_cancel_benchmarks() {
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
    latency_events(
        benchmark::RegisterBenchmark(r.name, BM_Cancel, std::string(r.name),
                                     r.c, r.polling, r.spaced),
        r.spaced ? g_cfg.spaced : g_cfg.cancels);
  }
}

}  // namespace tierlock::bench

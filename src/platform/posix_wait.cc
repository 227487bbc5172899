// POSIX: interruptible kernel waits, the interrupt signal, and who holds a
// lock.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "platform/platform.h"
#include "platform/posix_sys.h"

namespace tierlock::internal::platform {
namespace {

// -1: not chosen yet (the default is installed on first use); 0: polling.
std::atomic<int> g_signo{-1};
std::mutex g_signal_mu;

extern "C" void tierlock_interrupt_handler(int) {
  // Nothing: its only job is to make the interrupted syscall return EINTR
  // (installed without SA_RESTART).
}

bool is_our_handler(const struct sigaction& sa) {
  return (sa.sa_flags & SA_SIGINFO) == 0 &&
         sa.sa_handler == &tierlock_interrupt_handler;
}

// Installs our handler for `signo` unless the host program has its own.
absl::Status install_locked(int signo) {
  struct sigaction old;
  if (::sigaction(signo, nullptr, &old) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("interrupt signal ", signo, ": not a valid signal"));
  }
  if (is_our_handler(old)) return absl::OkStatus();
  if ((old.sa_flags & SA_SIGINFO) != 0 || old.sa_handler != SIG_DFL) {
    return absl::FailedPreconditionError(absl::StrCat(
        "interrupt signal ", signo,
        ": the program already handles or ignores it; tierlock never "
        "replaces a handler it did not install"));
  }
  struct sigaction sa = {};
  sa.sa_handler = &tierlock_interrupt_handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: flock must return EINTR
  if (::sigaction(signo, &sa, nullptr) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("interrupt signal ", signo, ": cannot install a handler"));
  }
  return absl::OkStatus();
}

int default_signal() { return SIGRTMAX - 7; }

constexpr long kRepeatNs = 200'000;  // re-send every 200 us until disarmed

struct timespec to_timespec(std::chrono::nanoseconds ns) {
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(ns.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns.count() % 1'000'000'000);
  return ts;
}

}  // namespace

absl::Status set_interrupt_signal(int signo) {
  std::lock_guard<std::mutex> lk(g_signal_mu);
  if (signo == 0) {
    g_signo.store(0, std::memory_order_release);
    return absl::OkStatus();
  }
  if (signo == SIGKILL || signo == SIGSTOP || signo <= 0 || signo >= NSIG) {
    return absl::InvalidArgumentError(
        absl::StrCat("interrupt signal ", signo, ": cannot be caught"));
  }
  if (absl::Status st = install_locked(signo); !st.ok()) return st;
  g_signo.store(signo, std::memory_order_release);
  return absl::OkStatus();
}

int interrupt_signal() {
  int signo = g_signo.load(std::memory_order_acquire);
  if (signo >= 0) return signo;
  std::lock_guard<std::mutex> lk(g_signal_mu);
  signo = g_signo.load(std::memory_order_relaxed);
  if (signo < 0) {
    // The default signal is used only if the host leaves it alone;
    // otherwise waits poll (documented in tierlock/config.h).
    signo = install_locked(default_signal()).ok() ? default_signal() : 0;
    g_signo.store(signo, std::memory_order_release);
  }
  return signo;
}

namespace {

// One POSIX timer per thread, created on its first interruptible wait and
// reused: a wait then costs no timer syscalls unless it has a deadline or is
// interrupted. Deleted when the thread exits. A fork()ed child does not
// inherit timers, so a cached one from another pid is abandoned.
struct ThreadTimer {
  timer_t id{};
  bool valid = false;
  int signo = 0;
  pid_t pid = 0;
  ~ThreadTimer() {
    if (valid && pid == ::getpid()) ::timer_delete(id);
  }
};
thread_local ThreadTimer t_timer;

// Returns this thread's timer for `signo`, or nullptr if none can be made.
timer_t* thread_timer(int signo) {
  ThreadTimer& t = t_timer;
  const pid_t pid = ::getpid();
  if (t.valid && t.signo == signo && t.pid == pid) return &t.id;
  if (t.valid && t.pid == pid) ::timer_delete(t.id);  // signal changed
  t.valid = false;
  struct sigevent sev = {};
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = signo;
  sev._sigev_un._tid = ::gettid();
  // Note: the kernel's first timer id in a process is 0, a valid id.
  if (::timer_create(CLOCK_MONOTONIC, &sev, &t.id) != 0) return nullptr;
  t.valid = true;
  t.signo = signo;
  t.pid = pid;
  return &t.id;
}

void arm(timer_t id, int flags, struct timespec first) {
  struct itimerspec its = {};
  its.it_value = first;
  its.it_interval.tv_nsec = kRepeatNs;
  ::timer_settime(id, flags, &its, nullptr);
}

// Deadlines
//
// One thread per process that interrupts waits whose deadline passed. A wait
// with a deadline used to arm its thread's timer for the deadline and disarm
// it when flock returned: the disarm (timer_settime) sat on the path from
// the grant to the caller, and made a timed handoff measurably slower
// than an untimed one on one CPU (docs/perf.md). Registering here costs a mutex
// and, only when the new deadline is before the thread's next look, a
// condition-variable notify, all before the wait blocks; unregistering after
// the grant costs a mutex and no syscall. The thread starts with the first
// timed wait and ends after 50 ms without one; a fork()ed child, which has no
// such thread, makes its own.
class Deadlines {
 public:
  using Clock = InterruptibleWait::Clock;
  using Key = std::tuple<Clock::time_point, std::uint64_t, InterruptibleWait*>;

  // Returns this process's instance.
  static Deadlines& get() {
    static std::atomic<Deadlines*> current{nullptr};
    const pid_t pid = ::getpid();
    Deadlines* d = current.load(std::memory_order_acquire);
    if (d != nullptr && d->pid_ == pid) return *d;
    // First use in this process (or in this fork()ed child: the parent's
    // instance is left alone, its mutex may have been held at the fork).
    auto* fresh = new Deadlines(pid);  // never deleted: its thread uses it
    if (current.compare_exchange_strong(d, fresh, std::memory_order_acq_rel)) {
      return *fresh;
    }
    delete fresh;  // another thread won; its thread has not started
    return *d;
  }

  // Calls `w->interrupt()` from the deadline thread once `when` passes,
  // unless remove() comes first. Returns the key remove() takes, or an id
  // of 0 if the thread cannot be started (then nothing is registered).
  Key add(Clock::time_point when, InterruptibleWait* w) {
    std::lock_guard<std::mutex> lk(mu_);
    Key key{when, next_id_++, w};
    if (!started_) {
      try {
        std::thread([this] { run(); }).detach();
      } catch (const std::system_error&) {
        return Key{when, 0, w};  // out of threads: the caller arms a timer
      }
      started_ = true;
    } else if (when < sleeping_until_) {
      // Only a deadline before the thread's own wake-up needs it now. The
      // common timeout (seconds) is later than its next look (<= kIdle):
      // no futex wake, and on one CPU no switch to it, on the wait's path.
      cv_.notify_one();
    }
    waits_.insert(key);
    return key;
  }

  // After this returns, the deadline thread no longer touches the wait.
  void remove(const Key& key) {
    std::lock_guard<std::mutex> lk(mu_);
    waits_.erase(key);
  }

 private:
  explicit Deadlines(pid_t pid) : pid_(pid) {}

  void run() {
    // The interrupt signal is for waiting threads only.
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      if (waits_.empty()) {
        // Idle: end the thread, so a process leaves no thread of ours
        // behind between bursts of timed waits (the next one starts one
        // before it blocks).
        sleeping_until_ = Clock::now() + kIdle;
        if (cv_.wait_until(lk, sleeping_until_) == std::cv_status::timeout &&
            waits_.empty()) {
          started_ = false;
          return;
        }
        continue;
      }
      const Key first = *waits_.begin();
      const Clock::time_point now = Clock::now();
      if (now < std::get<0>(first)) {
        // remove() does not notify (that would put a futex wake back on the
        // grant path): look again at least every kIdle, so a thread whose
        // waits were all granted notices and ends.
        sleeping_until_ = std::min(std::get<0>(first), now + kIdle);
        cv_.wait_until(lk, sleeping_until_);
        continue;
      }
      waits_.erase(waits_.begin());
      // Under mu_, so the owner's remove() waits for it: the wait is alive.
      std::get<2>(first)->interrupt();
    }
  }

  static constexpr std::chrono::milliseconds kIdle{50};
  const pid_t pid_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<Key> waits_;
  std::uint64_t next_id_ = 1;  // 0: "not registered" to the waits
  bool started_ = false;
  // When the thread wakes up by itself next (it looks at waits_ then).
  Clock::time_point sleeping_until_ = Clock::time_point::min();
};

}  // namespace

InterruptibleWait::InterruptibleWait(std::optional<Clock::time_point> deadline)
    : deadline_(deadline), signo_(interrupt_signal()) {
  if (signo_ == 0) return;
  timer_t* timer = thread_timer(signo_);
  if (timer == nullptr) {
    signo_ = 0;  // out of timers: poll instead
    return;
  }
  timer_ = timer;
  tid_ = ::gettid();
  // The host may block our signal in this thread: unblock it for the wait.
  sigset_t ours, old;
  sigemptyset(&ours);
  sigaddset(&ours, signo_);
  ::pthread_sigmask(SIG_UNBLOCK, &ours, &old);
  restore_mask_ = sigismember(&old, signo_) == 1;
  if (deadline_) {
    // The deadline thread interrupts us when it passes (see Deadlines);
    // lock() then finds the deadline passed and says so.
    deadline_id_ = std::get<1>(Deadlines::get().add(*deadline_, this));
    if (deadline_id_ == 0) {
      // No deadline thread: this thread's timer fires at the deadline.
      // steady_clock is CLOCK_MONOTONIC on Linux/glibc.
      struct timespec at =
          to_timespec(std::chrono::duration_cast<std::chrono::nanoseconds>(
              deadline_->time_since_epoch()));
      if (at.tv_sec == 0 && at.tv_nsec == 0) at.tv_nsec = 1;
      arm(*static_cast<timer_t*>(timer_), TIMER_ABSTIME, at);
      armed_.store(true, std::memory_order_relaxed);
    }
  }
}

InterruptibleWait::~InterruptibleWait() {
  if (timer_ == nullptr) return;
  // The owner calls this after interrupt() can no longer be called by others;
  // the deadline thread is stopped from calling it here. Then disarm
  // before restoring the mask: a signal already generated is delivered (to
  // our no-op handler) while still unblocked, so none is left pending to
  // interrupt the host's own syscalls later.
  if (deadline_id_ != 0) {
    Deadlines::get().remove(Deadlines::Key(*deadline_, deadline_id_, this));
  }
  if (armed_.load(std::memory_order_acquire)) {
    struct itimerspec off = {};
    ::timer_settime(*static_cast<timer_t*>(timer_), 0, &off, nullptr);
  }
  if (restore_mask_) {
    sigset_t ours;
    sigemptyset(&ours);
    sigaddset(&ours, signo_);
    ::pthread_sigmask(SIG_BLOCK, &ours, nullptr);
  }
}

bool InterruptibleWait::deadline_passed() const {
  return deadline_.has_value() && Clock::now() >= *deadline_;
}

void InterruptibleWait::interrupt() {
  interrupted_.store(true, std::memory_order_release);
  if (timer_ != nullptr) {
    // The first signal goes straight to the thread (a timer expiring "now"
    // took 50-80 us to deliver here, tgkill 15-20 us); the timer repeats it
    // every 200 us in case it landed before the thread entered flock.
    ::syscall(SYS_tgkill, ::getpid(), tid_, signo_);
    arm(*static_cast<timer_t*>(timer_), 0,
        to_timespec(std::chrono::nanoseconds(kRepeatNs)));
    armed_.store(true, std::memory_order_release);
  } else {
    std::lock_guard<std::mutex> lk(poll_mu_);
    poll_cv_.notify_all();
  }
}

absl::StatusOr<InterruptibleWait::Result> InterruptibleWait::lock(
    NativeHandle handle, Mode mode, const std::filesystem::path& lock_file) {
  const int op = mode == Mode::kExclusive ? LOCK_EX : LOCK_SH;
  // The deadline first: the deadline thread ends a timed wait through
  // interrupt(), and that is a timeout, not a cancel.
  auto stop_reason = [&]() -> std::optional<Result> {
    if (deadline_passed()) return Result::kDeadline;
    if (interrupted_.load(std::memory_order_acquire)) {
      return Result::kInterrupted;
    }
    return std::nullopt;
  };

  if (timer_ == nullptr) {
    // Polling: a LOCK_NB try, then a short sleep that interrupt() cuts.
    auto backoff = std::chrono::microseconds(50);
    for (;;) {
      if (auto r = stop_reason()) return *r;
      if (posix_sys().flock(handle, op | LOCK_NB) == 0) return Result::kLocked;
      if (errno != EWOULDBLOCK && errno != EINTR) {
        return errno_status(errno, "flock", lock_file);
      }
      auto until = Clock::now() + backoff;
      if (deadline_ && *deadline_ < until) until = *deadline_;
      std::unique_lock<std::mutex> lk(poll_mu_);
      poll_cv_.wait_until(lk, until, [&] {
        return interrupted_.load(std::memory_order_acquire);
      });
      backoff = std::min(backoff * 2, std::chrono::microseconds(1000));
    }
  }

  for (;;) {
    if (auto r = stop_reason()) return *r;
    if (posix_sys().flock(handle, op) == 0) return Result::kLocked;
    if (errno != EINTR) return errno_status(errno, "flock", lock_file);
  }
}

std::int64_t current_pid() { return static_cast<std::int64_t>(::getpid()); }
std::int64_t current_tid() { return static_cast<std::int64_t>(::gettid()); }

std::int64_t coarse_realtime_ns() {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

absl::StatusOr<std::vector<KernelHolder>> read_kernel_holders(
    const FileId& id) {
  std::vector<KernelHolder> out;
  // Plain read(2): this runs on the cancel/timeout path, so no iostreams.
  int fd = ::open("/proc/locks", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat(
        "open '/proc/locks': ",
        std::error_code(errno, std::generic_category()).message(),
        " (the kernel's lock table is needed to see who holds a lock)"));
  }
  std::string text;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; waiters have "->"
  // after the ordinal. The device is major:minor in hex, the inode decimal.
  const dev_t dev = static_cast<dev_t>(id.dev);
  const std::string want =
      absl::StrCat(absl::Hex(major(dev), absl::kZeroPad2), ":",
                   absl::Hex(minor(dev), absl::kZeroPad2), ":", id.ino);
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    // ordinal, [->], type, advisory, access, pid, dev:ino, start, end
    if (f.size() < 6 || f[1] == "->" || f[1] != "FLOCK") continue;
    if (f.size() < 7 || f[5] != want) continue;
    KernelHolder h;
    if (!absl::SimpleAtoi(f[4], &h.pid)) continue;
    h.mode = f[3] == "WRITE" ? Mode::kExclusive : Mode::kShared;
    out.push_back(h);
  }
  return out;
}

}  // namespace tierlock::internal::platform

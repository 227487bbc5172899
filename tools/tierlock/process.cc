// Running the command of `tierlock run`: spawn, forward signals, reap.
#include "process.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cli.h"

namespace tierlock::cli {

Fd::~Fd() { reset(); }

void Fd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Fd take_signals() {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&mask, s);
  ::pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  Fd fd(::signalfd(-1, &mask, SFD_CLOEXEC));
  if (fd.get() < 0) print_error("signalfd", error_text(errno));
  return fd;
}

namespace {

// Prints why the command could not be started; returns its exit code.
int report_spawn_error(const std::string& program, int err) {
  if (err == ENOENT) {
    print_error(program, "command not found");
    return kCommandNotFound;
  }
  print_error(program, error_text(err));
  return err == EACCES || err == ENOEXEC || err == EISDIR ? kCannotExecute
                                                          : kOther;
}

}  // namespace

namespace {

// The NULL-terminated array of pointers into `strings` that exec takes
// (`strings` must outlive it).
std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

pid_t spawn_command(const std::vector<std::string>& command,
                    std::vector<std::string> env, int* exit_code,
                    int inherit_fd) {
  std::vector<std::string> args = command;
  std::vector<char*> envp = pointers(env);
  std::vector<char*> argv = pointers(args);

  posix_spawnattr_t attr;
  ::posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&defaults, s);
  ::posix_spawnattr_setsigmask(&attr, &none);
  ::posix_spawnattr_setsigdefault(&attr, &defaults);
  ::posix_spawnattr_setflags(&attr,
                             POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  // Our descriptors (the lock's, the signalfd) are O_CLOEXEC: the command
  // inherits none of them but `inherit_fd`, whose close-on-exec flag a dup2
  // onto itself clears in the child only (glibc >= 2.29, POSIX 2024).
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  if (inherit_fd >= 0)
    ::posix_spawn_file_actions_adddup2(&actions, inherit_fd, inherit_fd);
  pid_t child = -1;
  const int err = ::posix_spawnp(&child, argv[0], &actions, &attr, argv.data(),
                                 envp.data());
  ::posix_spawn_file_actions_destroy(&actions);
  ::posix_spawnattr_destroy(&attr);
  if (err == 0) return child;
  *exit_code = report_spawn_error(command[0], err);
  return -1;
}

namespace {

// The supervisor of spawn_supervised. It is forked from a process that may
// have threads (lease renewal), so only async-signal-safe calls from here
// on: no allocation, no locks, no stdio.

[[noreturn]] void exit_like(int status) {
  if (WIFEXITED(status)) ::_exit(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) ::_exit(128 + WTERMSIG(status));
  ::_exit(kOther);
}

constexpr std::int64_t kNoDeadline = INT64_MAX;
// Control messages (one int64 each, SOCK_SEQPACKET): a deadline in
// CLOCK_MONOTONIC nanoseconds (> 0), or kStopMessage.
constexpr std::int64_t kStopMessage = -1;
constexpr char kWatchdogFired = 'W';

std::int64_t monotonic_ns() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);  // async-signal-safe
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Appends the decimal digits of `n` > 0 at `out`; returns the new end.
char* append_number(char* out, pid_t n) {
  char digits[16];
  int len = 0;
  for (; n > 0; n /= 10) digits[len++] = static_cast<char>('0' + n % 10);
  while (len > 0) *out++ = digits[--len];
  return out;
}

// Calls fn(child) for each child of `pid`'s main thread
// (/proc/PID/task/PID/children). Children forked by its other threads are
// not listed there; no allocation (the supervisor calls it).
template <typename Fn>
void for_each_child(pid_t pid, Fn&& fn) {
  char path[80] = "/proc/";
  char* end = append_number(path + 6, pid);
  std::memcpy(end, "/task/", 6);
  end = append_number(end + 6, pid);
  std::memcpy(end, "/children", 10);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) < 0 && errno == EINTR) {
  }
  ::close(fd);
  // "pid pid pid ": only numbers followed by a space are whole.
  pid_t child = 0;
  for (ssize_t i = 0; i < n; ++i) {
    if (buf[i] >= '0' && buf[i] <= '9') {
      child = child * 10 + (buf[i] - '0');
    } else {
      if (child > 0) fn(child);
      child = 0;
    }
  }
}

// Sends `sig` to every process below this one, parents before children (so
// a parent that reacts by killing its children races nothing we need).
// Best effort against a tree that changes meanwhile: a grandchild that
// exits and is reaped by its parent between the read and the kill could
// have its pid reused; SIGKILL, which follows, only ever targets our own
// unreaped children.
void signal_tree(int sig) {
  pid_t stack[1024];
  int top = 0;
  for_each_child(::getpid(), [&](pid_t p) {
    if (top < 1024) stack[top++] = p;
  });
  while (top > 0) {
    const pid_t p = stack[--top];
    ::kill(p, sig);
    for_each_child(p, [&](pid_t c) {
      if (top < 1024) stack[top++] = c;
    });
  }
}

// SIGKILLs every child of this (single-threaded) process and reaps them
// until there is none: as the child subreaper, the orphans of a killed
// child become children here and are killed on the next round. `command`
// is -1 once reaped.
[[noreturn]] void kill_tree_and_exit(pid_t command, int exit_code = kOther) {
  if (command > 0)
    ::kill(command, SIGKILL);  // not reaped yet: its pid is still its own
  for (;;) {
    // Our children: their pids are not reused before we reap them.
    for_each_child(::getpid(), [](pid_t p) { ::kill(p, SIGKILL); });
    // Without the children file (CONFIG_PROC_CHILDREN off) only the command
    // was killed; its orphans then outlive us (docs/cli.md).
    int status;
    const pid_t reaped = ::waitpid(-1, &status, 0);
    if (reaped < 0 && errno == ECHILD) ::_exit(exit_code);
  }
}

[[noreturn]] void supervise(pid_t parent, char* const* argv, char* const* envp,
                            int error_pipe, int control, std::int64_t deadline,
                            std::int64_t grace) {
  sigset_t watched;
  sigemptyset(&watched);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1})
    sigaddset(&watched, s);
  ::pthread_sigmask(SIG_BLOCK, &watched, nullptr);
  ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  // If the parent died before prctl, the signal will never come: we have
  // been reparented already. Then nothing was started and nothing may be.
  if (::prctl(PR_SET_PDEATHSIG, SIGUSR1, 0, 0, 0) != 0 ||
      ::getppid() != parent) {
    ::_exit(kOther);
  }
  // Signals and the control socket in one poll, with the deadline as its
  // timeout.
  const int signal_fd = ::signalfd(-1, &watched, SFD_CLOEXEC);
  if (signal_fd < 0) {
    const int err = errno;
    (void)!::write(error_pipe, &err, sizeof err);
    ::_exit(kOther);
  }
  const pid_t self = ::getpid();
  const pid_t command = ::fork();
  if (command < 0) {
    const int err = errno;
    (void)!::write(error_pipe, &err, sizeof err);
    ::_exit(kOther);
  }
  if (command == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (::getppid() != self) ::_exit(kOther);
    struct sigaction dfl = {};
    dfl.sa_handler = SIG_DFL;
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1})
      ::sigaction(s, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
    ::execvpe(argv[0], argv, envp);
    const int err = errno;
    (void)!::write(error_pipe, &err, sizeof err);
    ::_exit(err == ENOENT ? kCommandNotFound : kCannotExecute);
  }
  ::close(error_pipe);
  bool stopping = false;     // supervisor_stop received: the tree goes
  std::int64_t kill_at = 0;  // when stopping: SIGKILL for what is left
  bool command_reaped =
      false;  // when stopping: the command is gone, its pid not ours
  int command_status = 0;
  bool watch_control = true;
  for (;;) {
    // Stopping, the grace ends at the lease's deadline at the latest: a
    // renewal can fail (and the stop come) just before it, and past it the
    // next owner may run.
    const std::int64_t wake = !stopping ? deadline
                              : deadline == kNoDeadline
                                  ? kill_at
                                  : std::min(kill_at, deadline);
    const std::int64_t now = monotonic_ns();
    if (wake != kNoDeadline && now >= wake) {
      if (stopping) {
        kill_tree_and_exit(command_reaped ? -1 : command,
                           command_reaped ? 128 + SIGKILL : kOther);
      }
      // The watchdog: the lease lapsed with nobody renewing it (our parent
      // is stopped or stuck); the next owner may already run. No grace: it
      // would only lengthen the overlap (docs/cli.md).
      (void)::send(control, &kWatchdogFired, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
      kill_tree_and_exit(command);
    }
    struct timespec timeout;
    const struct timespec* timeout_p = nullptr;
    if (wake != kNoDeadline) {
      timeout.tv_sec = (wake - now) / 1'000'000'000;
      timeout.tv_nsec = (wake - now) % 1'000'000'000;
      timeout_p = &timeout;
    }
    struct pollfd fds[2] = {{signal_fd, POLLIN, 0}, {control, POLLIN, 0}};
    if (::ppoll(fds, watch_control ? 2 : 1, timeout_p, nullptr) < 0)
      continue;  // EINTR
    if (watch_control && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      std::int64_t message = 0;
      const ssize_t n = ::recv(control, &message, sizeof message, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        // Our parent closed it: it is dying (the death signal follows) or
        // gave up on us. Either way nobody renews the lease now.
        watch_control = false;
        if (::getppid() != parent)
          kill_tree_and_exit(command_reaped ? -1 : command);
      } else if (n == sizeof message && !stopping) {
        if (message == kStopMessage) {
          stopping = true;
          kill_at = monotonic_ns() + grace;
          signal_tree(SIGTERM);
        } else if (message > 0) {
          deadline = message;
        }
      }
    }
    if (!(fds[0].revents & POLLIN)) continue;
    struct signalfd_siginfo info;
    if (::read(signal_fd, &info, sizeof info) != sizeof info) continue;
    const int sig = static_cast<int>(info.ssi_signo);
    if (sig == SIGUSR1) {
      if (::getppid() != parent)
        kill_tree_and_exit(command_reaped ? -1 : command);
      continue;  // not the death signal: somebody's kill
    }
    if (sig == SIGCHLD) {
      // Orphans of the tree are ours too: reap them. The command's exit ends
      // us, unless we are stopping the tree: then its last process does.
      int status;
      pid_t reaped;
      while ((reaped = ::waitpid(-1, &status, WNOHANG)) > 0) {
        if (reaped != command) continue;
        if (!stopping) exit_like(status);
        command_reaped = true;
        command_status = status;
      }
      if (reaped < 0 && errno == ECHILD && stopping) exit_like(command_status);
      continue;
    }
    if (info.ssi_code != SI_KERNEL && !command_reaped) ::kill(command, sig);
  }
}

}  // namespace

Supervised spawn_supervised(const std::vector<std::string>& command,
                            std::vector<std::string> env,
                            const SupervisorOptions& options, int* exit_code) {
  std::vector<std::string> args = command;
  std::vector<char*> envp = pointers(env);
  std::vector<char*> argv = pointers(args);
  const std::int64_t deadline =
      options.deadline == std::chrono::steady_clock::time_point::max()
          ? kNoDeadline
          : std::chrono::duration_cast<std::chrono::nanoseconds>(
                options.deadline.time_since_epoch())
                .count();
  const std::int64_t grace = std::max<std::int64_t>(0, options.grace.count());
  Supervised result;
  // The command's exec error (its errno), or EOF once it has exec'd.
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    print_error("pipe2", error_text(errno));
    *exit_code = kOther;
    return result;
  }
  Fd read_end(pipe_fds[0]);
  // Messages keep their boundaries (SEQPACKET): one deadline per read.
  int control_fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, control_fds) !=
      0) {
    print_error("socketpair", error_text(errno));
    ::close(pipe_fds[1]);
    *exit_code = kOther;
    return result;
  }
  Fd control(control_fds[0]);
  const pid_t parent = ::getpid();
  const pid_t supervisor = ::fork();
  if (supervisor == 0) {
    ::close(pipe_fds[0]);
    ::close(control_fds[0]);
    supervise(parent, argv.data(), envp.data(), pipe_fds[1], control_fds[1],
              deadline, grace);
  }
  const int fork_error = errno;
  ::close(pipe_fds[1]);
  ::close(control_fds[1]);
  if (supervisor < 0) {
    print_error("fork", error_text(fork_error));
    *exit_code = kOther;
    return result;
  }
  int err = 0;
  ssize_t n;
  while ((n = ::read(read_end.get(), &err, sizeof err)) < 0 && errno == EINTR) {
  }
  if (n != static_cast<ssize_t>(sizeof err)) {  // exec'd
    result.pid = supervisor;
    result.control = std::move(control);
    return result;
  }
  int status;
  while (::waitpid(supervisor, &status, 0) < 0 && errno == EINTR) {
  }
  *exit_code = report_spawn_error(command[0], err);
  return result;
}

namespace {

bool send_message(int control_fd, std::int64_t message) {
  ssize_t n;
  while ((n = ::send(control_fd, &message, sizeof message,
                     MSG_DONTWAIT | MSG_NOSIGNAL)) < 0 &&
         errno == EINTR) {
  }
  return n == static_cast<ssize_t>(sizeof message);
}

}  // namespace

bool supervisor_set_deadline(int control_fd,
                             std::chrono::steady_clock::time_point deadline) {
  if (deadline == std::chrono::steady_clock::time_point::max()) return true;
  const std::int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              deadline.time_since_epoch())
                              .count();
  return send_message(control_fd, std::max<std::int64_t>(ns, 1));
}

bool supervisor_stop(int control_fd) {
  return send_message(control_fd, kStopMessage);
}

bool supervisor_watchdog_fired(int control_fd) {
  char byte = 0;
  ssize_t n;
  while ((n = ::recv(control_fd, &byte, 1, MSG_DONTWAIT)) < 0 &&
         errno == EINTR) {
  }
  return n == 1 && byte == kWatchdogFired;
}

int wait_forwarding(pid_t child, int signal_fd, int event_fd,
                    const std::function<void()>& on_event) {
  bool watch_event = event_fd >= 0;
  for (;;) {
    // Not reaped until it is known to have exited (WNOWAIT), so `child` is
    // never a reused pid when a signal is forwarded.
    siginfo_t info = {};
    if (::waitid(P_PID, static_cast<id_t>(child), &info,
                 WEXITED | WNOHANG | WNOWAIT) == 0 &&
        info.si_pid == child) {
      break;
    }
    struct pollfd fds[2] = {{signal_fd, POLLIN, 0}, {event_fd, POLLIN, 0}};
    if (::poll(fds, watch_event ? 2 : 1, -1) < 0 && errno != EINTR) break;
    if (fds[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (::read(signal_fd, &si, sizeof si) == sizeof si &&
          si.ssi_signo != SIGCHLD) {
        ::kill(child, static_cast<int>(si.ssi_signo));
      }
    }
    if (watch_event && (fds[1].revents & POLLIN)) {
      watch_event = false;
      if (on_event) on_event();
    }
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return kOther;
}

absl::Status wait_cancellable(
    const std::function<void(std::stop_token)>& acquire, int signal_fd,
    int* signal_received, const std::function<void()>& waiting_message,
    std::chrono::milliseconds message_after) {
  Fd done(::eventfd(0, EFD_CLOEXEC));
  if (done.get() < 0) {
    return absl::InternalError(absl::StrCat("eventfd: ", error_text(errno)));
  }
  std::stop_source stop;
  std::thread waiter([&] {
    acquire(stop.get_token());
    notify(done.get());
  });
  const auto message_at = std::chrono::steady_clock::now() + message_after;
  bool message_due = static_cast<bool>(waiting_message);
  for (;;) {
    int timeout_ms = -1;
    if (message_due) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(
          message_at - std::chrono::steady_clock::now());
      timeout_ms = static_cast<int>(std::max<std::int64_t>(0, left.count()));
    }
    struct pollfd fds[2] = {{done.get(), POLLIN, 0}, {signal_fd, POLLIN, 0}};
    const int n = ::poll(fds, 2, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 && message_due) {
      message_due = false;
      waiting_message();
      continue;
    }
    if (fds[1].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (::read(signal_fd, &si, sizeof si) == sizeof si &&
          si.ssi_signo != SIGCHLD && *signal_received == 0) {
        *signal_received = static_cast<int>(si.ssi_signo);
        stop.request_stop();  // the acquire returns kCancelled, holding nothing
      }
    }
    if (fds[0].revents & POLLIN) break;
  }
  waiter.join();
  return absl::OkStatus();
}

void notify(int fd) {
  const std::uint64_t one = 1;
  while (::write(fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

std::string signal_name(int sig) {
  switch (sig) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGHUP:
      return "SIGHUP";
    default:
      return absl::StrCat("signal ", sig);
  }
}

}  // namespace tierlock::cli

// Running the command of `tierlock run`: spawn, forward signals, reap.
#include "process.h"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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
  return err == EACCES || err == ENOEXEC || err == EISDIR ? kCannotExecute : kOther;
}

}  // namespace

pid_t spawn_command(const std::vector<std::string>& command,
                    std::vector<std::string> env, int* exit_code, int inherit_fd) {
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = command;
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawnattr_t attr;
  ::posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&defaults, s);
  ::posix_spawnattr_setsigmask(&attr, &none);
  ::posix_spawnattr_setsigdefault(&attr, &defaults);
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  // Our descriptors (the lock's, the signalfd) are O_CLOEXEC: the command
  // inherits none of them but `inherit_fd`, whose close-on-exec flag a dup2
  // onto itself clears in the child only (glibc >= 2.29, POSIX 2024).
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  if (inherit_fd >= 0) ::posix_spawn_file_actions_adddup2(&actions, inherit_fd, inherit_fd);
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

// SIGKILLs every child of this (single-threaded) process and reaps them
// until there is none: as the child subreaper, the orphans of a killed
// child become children here and are killed on the next round.
[[noreturn]] void kill_tree_and_exit(pid_t command) {
  char path[64] = "/proc/self/task/";
  {
    char digits[16];
    int n = 0;
    for (pid_t p = ::getpid(); p > 0; p /= 10) digits[n++] = static_cast<char>('0' + p % 10);
    std::size_t len = std::strlen(path);
    while (n > 0) path[len++] = digits[--n];
    std::memcpy(path + len, "/children", 10);
  }
  ::kill(command, SIGKILL);  // not reaped yet (only a SIGCHLD round reaps it, and exits)
  for (;;) {
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) < 0 && errno == EINTR) {
      }
      ::close(fd);
      // "pid pid pid ": only numbers followed by a space are whole.
      pid_t pid = 0;
      for (ssize_t i = 0; i < n; ++i) {
        if (buf[i] >= '0' && buf[i] <= '9') {
          pid = pid * 10 + (buf[i] - '0');
        } else {
          if (pid > 0) ::kill(pid, SIGKILL);  // our child: its pid is not reused before we reap it
          pid = 0;
        }
      }
    }
    // Without the children file (CONFIG_PROC_CHILDREN off) only the command
    // was killed; its orphans then outlive us (docs/cli.md).
    int status;
    const pid_t reaped = ::waitpid(-1, &status, 0);
    if (reaped < 0 && errno == ECHILD) ::_exit(kOther);
  }
}

[[noreturn]] void supervise(pid_t parent, char* const* argv, char* const* envp,
                            int error_pipe) {
  sigset_t watched;
  sigemptyset(&watched);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1}) sigaddset(&watched, s);
  ::sigprocmask(SIG_BLOCK, &watched, nullptr);
  ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  // If the parent died before prctl, the signal will never come: we have
  // been reparented already. Then nothing was started and nothing may be.
  if (::prctl(PR_SET_PDEATHSIG, SIGUSR1, 0, 0, 0) != 0 || ::getppid() != parent) {
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
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1}) ::sigaction(s, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvpe(argv[0], argv, envp);
    const int err = errno;
    (void)!::write(error_pipe, &err, sizeof err);
    ::_exit(err == ENOENT ? kCommandNotFound : kCannotExecute);
  }
  ::close(error_pipe);
  for (;;) {
    siginfo_t info;
    const int sig = ::sigwaitinfo(&watched, &info);
    if (sig < 0) continue;  // EINTR
    if (sig == SIGUSR1) {
      if (::getppid() != parent) kill_tree_and_exit(command);
      continue;  // not the death signal: somebody's kill
    }
    if (sig == SIGCHLD) {
      // Orphans of the tree are ours too: reap them; the command's exit ends us.
      int status;
      pid_t reaped;
      while ((reaped = ::waitpid(-1, &status, WNOHANG)) > 0) {
        if (reaped == command) exit_like(status);
      }
      continue;
    }
    if (info.si_code != SI_KERNEL) ::kill(command, sig);
  }
}

}  // namespace

pid_t spawn_supervised(const std::vector<std::string>& command,
                       std::vector<std::string> env, int* exit_code) {
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = command;
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The command's exec error (its errno), or EOF once it has exec'd.
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    print_error("pipe2", error_text(errno));
    *exit_code = kOther;
    return -1;
  }
  Fd read_end(pipe_fds[0]);
  const pid_t parent = ::getpid();
  const pid_t supervisor = ::fork();
  if (supervisor == 0) {
    ::close(pipe_fds[0]);
    supervise(parent, argv.data(), envp.data(), pipe_fds[1]);
  }
  const int fork_error = errno;
  ::close(pipe_fds[1]);
  if (supervisor < 0) {
    print_error("fork", error_text(fork_error));
    *exit_code = kOther;
    return -1;
  }
  int err = 0;
  ssize_t n;
  while ((n = ::read(read_end.get(), &err, sizeof err)) < 0 && errno == EINTR) {
  }
  if (n != static_cast<ssize_t>(sizeof err)) return supervisor;  // exec'd
  int status;
  while (::waitpid(supervisor, &status, 0) < 0 && errno == EINTR) {
  }
  *exit_code = report_spawn_error(command[0], err);
  return -1;
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
      if (::read(signal_fd, &si, sizeof si) == sizeof si && si.ssi_signo != SIGCHLD) {
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

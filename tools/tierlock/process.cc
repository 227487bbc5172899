// Running the command of `tierlock run`: spawn, forward signals, reap.
#include "process.h"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cli.h"

namespace tierlock::cli {

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
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

pid_t spawn_command(const std::vector<std::string>& command,
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

  posix_spawnattr_t attr;
  ::posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&defaults, s);
  ::posix_spawnattr_setsigmask(&attr, &none);
  ::posix_spawnattr_setsigdefault(&attr, &defaults);
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t child = -1;
  // Our descriptors (the lock's, the signalfd) are O_CLOEXEC: the command
  // inherits none of them.
  const int err = ::posix_spawnp(&child, argv[0], nullptr, &attr, argv.data(),
                                 envp.data());
  ::posix_spawnattr_destroy(&attr);
  if (err == 0) return child;
  if (err == ENOENT) {
    print_error(command[0], "command not found");
    *exit_code = kCommandNotFound;
  } else {
    print_error(command[0], error_text(err));
    *exit_code = err == EACCES || err == ENOEXEC || err == EISDIR ? kCannotExecute
                                                                  : kOther;
  }
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

#include "support/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "support/proc.h"

namespace tierlock::testing {
namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void ignore_sigpipe_once() {
  // A write to a pipe whose reader died must fail with EPIPE, not kill the
  // test.
  static const bool done = [] {
    ::signal(SIGPIPE, SIG_IGN);
    return true;
  }();
  (void)done;
}

void close_fd(int& fd) noexcept {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - Clock::now());
  if (left.count() <= 0) return 0;
  return static_cast<int>(left.count());
}

// Moves `fd` onto `target` in a forked child (clearing close-on-exec).
void move_fd_in_child(int fd, int target) {
  if (fd == target) {
    int flags = ::fcntl(fd, F_GETFD);
    ::fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
  } else {
    ::dup2(fd, target);
  }
}

ExitStatus decode(int wstatus) {
  ExitStatus s;
  if (WIFEXITED(wstatus)) {
    s.code = WEXITSTATUS(wstatus);
  } else if (WIFSIGNALED(wstatus)) {
    s.code = 128 + WTERMSIG(wstatus);
  }
  return s;
}

}  // namespace

std::string ExitStatus::describe() const {
  if (timed_out) return "timed out (killed)";
  if (code > 128) return "killed by signal " + std::to_string(code - 128);
  return "exit code " + std::to_string(code);
}

// ---------------------------------------------------------------- LineChannel

LineChannel::LineChannel(LineChannel&& other) noexcept
    : rfd_(std::exchange(other.rfd_, -1)),
      wfd_(std::exchange(other.wfd_, -1)),
      buf_(std::move(other.buf_)),
      eof_(other.eof_) {}

LineChannel& LineChannel::operator=(LineChannel&& other) noexcept {
  if (this != &other) {
    close_fd(rfd_);
    close_fd(wfd_);
    rfd_ = std::exchange(other.rfd_, -1);
    wfd_ = std::exchange(other.wfd_, -1);
    buf_ = std::move(other.buf_);
    eof_ = other.eof_;
  }
  return *this;
}

LineChannel::~LineChannel() {
  close_fd(rfd_);
  close_fd(wfd_);
}

bool LineChannel::write_line(std::string_view line) {
  if (wfd_ < 0) return false;
  ignore_sigpipe_once();
  std::string data(line);
  data.push_back('\n');
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(wfd_, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

bool LineChannel::fill(std::chrono::milliseconds timeout) {
  if (rfd_ < 0 || eof_) return true;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    struct pollfd p = {rfd_, POLLIN, 0};
    int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;  // timeout (or poll error)
    char tmp[4096];
    ssize_t n = ::read(rfd_, tmp, sizeof tmp);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      eof_ = true;
      return true;
    }
    buf_.append(tmp, static_cast<std::size_t>(n));
    return true;
  }
}

std::optional<std::string> LineChannel::read_line(
    std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    std::size_t nl = buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      return line;
    }
    if (eof_ || rfd_ < 0) return std::nullopt;
    if (!fill(std::chrono::milliseconds(remaining_ms(deadline)))) {
      return std::nullopt;
    }
  }
}

bool LineChannel::readable_now() {
  for (;;) {
    if (buf_.find('\n') != std::string::npos || eof_ || rfd_ < 0) return true;
    if (!fill(std::chrono::milliseconds(0))) return false;
  }
}

std::string LineChannel::read_all(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!eof_ && rfd_ >= 0) {
    if (!fill(std::chrono::milliseconds(remaining_ms(deadline)))) break;
  }
  return std::exchange(buf_, std::string());
}

void LineChannel::close_write() { close_fd(wfd_); }
void LineChannel::close_read() { close_fd(rfd_); }

// -------------------------------------------------------------------- Process

bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  const char state = process_state(pid);
  return state == '\0' || state == 'Z';
}

std::string find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string dir = dirs.substr(start, end - start);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

Process Process::spawn(const std::vector<std::string>& argv) {
  ignore_sigpipe_once();
  if (argv.empty()) throw std::invalid_argument("spawn: empty argv");
  std::string program = find_program(argv[0]);
  if (program.empty()) program = argv[0];
  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  int in[2];
  int out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) throw_errno("pipe2");
  if (::pipe2(out, O_CLOEXEC) != 0) {
    int saved = errno;
    ::close(in[0]);
    ::close(in[1]);
    errno = saved;
    throw_errno("pipe2");
  }
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    ::signal(SIGPIPE, SIG_DFL);
    if (out[1] == 0) out[1] = ::fcntl(out[1], F_DUPFD_CLOEXEC, 3);
    move_fd_in_child(in[0], 0);
    move_fd_in_child(out[1], 1);
    ::execv(program.c_str(), cargv.data());
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  Process p;
  p.pid_ = pid;
  p.pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  p.io_ = LineChannel(out[0], in[1]);
  return p;
}

Process Process::fork(const std::function<int(LineChannel&)>& body) {
  ignore_sigpipe_once();
  int p2c[2];
  int c2p[2];
  if (::pipe2(p2c, O_CLOEXEC) != 0) throw_errno("pipe2");
  if (::pipe2(c2p, O_CLOEXEC) != 0) {
    int saved = errno;
    ::close(p2c[0]);
    ::close(p2c[1]);
    errno = saved;
    throw_errno("pipe2");
  }
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    ::close(p2c[1]);
    ::close(c2p[0]);
    int rc = 125;
    {
      LineChannel ch(p2c[0], c2p[1]);
      try {
        rc = body(ch);
      } catch (...) {
        rc = 125;
      }
    }
    ::_exit(rc);
  }
  ::close(p2c[0]);
  ::close(c2p[1]);
  Process p;
  p.pid_ = pid;
  p.pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  p.io_ = LineChannel(c2p[0], p2c[1]);
  return p;
}

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      status_(std::exchange(other.status_, std::nullopt)),
      io_(std::move(other.io_)) {}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    kill_and_reap();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::exchange(other.pidfd_, -1);
    status_ = std::exchange(other.status_, std::nullopt);
    io_ = std::move(other.io_);
  }
  return *this;
}

Process::~Process() { kill_and_reap(); }

void Process::kill_and_reap() noexcept {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
  close_fd(pidfd_);
  pid_ = -1;
}

bool Process::exited_now() {
  if (status_) return true;
  siginfo_t info;
  std::memset(&info, 0, sizeof info);
  if (::waitid(P_PID, static_cast<id_t>(pid_), &info,
               WEXITED | WNOHANG | WNOWAIT) != 0) {
    return false;
  }
  return info.si_pid == pid_;
}

ExitStatus Process::wait(std::chrono::milliseconds timeout) {
  if (status_) return *status_;
  const auto deadline = Clock::now() + timeout;
  bool done = false;
  if (pidfd_ >= 0) {
    for (;;) {
      struct pollfd p = {pidfd_, POLLIN, 0};
      int r = ::poll(&p, 1, remaining_ms(deadline));
      if (r < 0 && errno == EINTR) continue;
      done = r > 0;
      break;
    }
  } else {
    while (!(done = exited_now()) && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  ExitStatus s;
  if (!done) {
    ::kill(pid_, SIGKILL);
    s.timed_out = true;
  }
  int st = 0;
  pid_t r;
  while ((r = ::waitpid(pid_, &st, 0)) < 0 && errno == EINTR) {
  }
  if (!s.timed_out && r == pid_) s = decode(st);
  status_ = s;
  close_fd(pidfd_);
  return s;
}

RunResult run(const std::vector<std::string>& argv,
              std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  Process p = Process::spawn(argv);
  p.close_stdin();
  RunResult r;
  r.out = p.io().read_all(timeout);
  r.status = p.wait(std::chrono::milliseconds(remaining_ms(deadline)));
  return r;
}

}  // namespace tierlock::testing

// tests/support/subprocess.h
//
// Real processes for cross-process tests:
//   kTimeout    - the bound on every wait in the tests (generous: sanitizer
//   builds). ExitStatus  - how a process ended. LineChannel - newline-delimited
//   messages over a pair of pipes, with timeouts. Process     - a child
//   (fork+exec of a program, or fork running a function)
//                 whose stdin/stdout are pipes; killed and reaped on
//                 destruction.
//   run         - runs a program to completion and captures its stdout.
#ifndef TIERLOCK_TESTS_SUPPORT_SUBPROCESS_H_
#define TIERLOCK_TESTS_SUPPORT_SUBPROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tierlock::testing {

// Every bounded wait in the tests uses this unless it says otherwise. A wait
// that succeeds returns as soon as its condition holds; this only bounds how
// long a broken build takes to fail.
inline constexpr std::chrono::milliseconds kTimeout{30'000};

struct ExitStatus {
  // Exit code if the process exited; 128 + signal if it was killed by one;
  // -1 if it had to be killed because the wait timed out (or waitpid failed).
  int code = -1;
  bool timed_out = false;
  std::string describe() const;
};

// Newline-delimited messages over two descriptors (owned; closed on
// destruction). Lines are returned without the '\n'.
class LineChannel {
 public:
  LineChannel() = default;
  LineChannel(int read_fd, int write_fd) : rfd_(read_fd), wfd_(write_fd) {}
  LineChannel(LineChannel&& other) noexcept;
  LineChannel& operator=(LineChannel&& other) noexcept;
  ~LineChannel();

  // Writes `line` and a '\n'. Returns false on error (e.g. the reader is gone).
  bool write_line(std::string_view line);
  // Reads one line, waiting at most `timeout`; nullopt on timeout or EOF.
  std::optional<std::string> read_line(
      std::chrono::milliseconds timeout = kTimeout);
  // Returns true if a whole line or EOF can be read now without blocking.
  bool readable_now();
  // Reads everything up to EOF (at most `timeout`).
  std::string read_all(std::chrono::milliseconds timeout = kTimeout);
  // Closes the writing side (the peer then sees EOF).
  void close_write();
  void close_read();

 private:
  // Reads what is available within `timeout` into buf_. Returns false on
  // timeout; sets eof_ at EOF.
  bool fill(std::chrono::milliseconds timeout);

  int rfd_ = -1;
  int wfd_ = -1;
  std::string buf_;
  bool eof_ = false;
};

class Process {
 public:
  // Starts `argv` (argv[0] is a path, or a name searched in $PATH) with stdin
  // and stdout connected to pipes; stderr is inherited. Throws
  // std::system_error if the process cannot be started (a failed exec makes
  // the child exit 127).
  static Process spawn(const std::vector<std::string>& argv);

  // Forks; the child runs `body` with a channel to the parent and _exits with
  // its return value (125 if it throws). The child must not use gtest
  // assertions: report through the channel and the exit code. Fork only while
  // no other thread of the test is running.
  static Process fork(const std::function<int(LineChannel&)>& body);

  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  ~Process();  // SIGKILLs and reaps the child if it is still running

  pid_t pid() const { return pid_; }
  // The child's stdin/stdout (or the forked body's channel).
  LineChannel& io() { return io_; }
  bool write_line(std::string_view line) { return io_.write_line(line); }
  std::optional<std::string> read_line(
      std::chrono::milliseconds timeout = kTimeout) {
    return io_.read_line(timeout);
  }
  void close_stdin() { io_.close_write(); }

  // Returns true once the child has exited (without reaping it).
  bool exited_now();
  // Waits for the child to exit, at most `timeout`; after that it is killed
  // and the status says timed_out. Idempotent.
  ExitStatus wait(std::chrono::milliseconds timeout = kTimeout);

 private:
  Process() = default;
  void kill_and_reap() noexcept;

  pid_t pid_ = -1;
  int pidfd_ = -1;
  std::optional<ExitStatus> status_;
  LineChannel io_;
};

struct RunResult {
  ExitStatus status;
  std::string out;  // stdout
};

// Runs `argv` with stdin closed (EOF) to completion, at most `timeout`.
RunResult run(const std::vector<std::string>& argv,
              std::chrono::milliseconds timeout = kTimeout);

// Returns the full path of `name` found in $PATH (or `name` if it contains
// '/'), or empty if not found.
std::string find_program(const std::string& name);

// True once `pid` has exited: gone, or a zombie nobody reaped yet. Never
// throws (a process that ends while its /proc entry is read counts as gone).
bool process_gone(pid_t pid);

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_SUBPROCESS_H_

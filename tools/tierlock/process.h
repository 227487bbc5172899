// tools/tierlock/process.h
//
// Running the command of `tierlock run` (directory locks and leases alike):
//   Fd               - owns one descriptor.
//   take_signals     - blocks the signals `run` forwards; a signalfd for them.
//   spawn_command    - starts the command with signals at their defaults.
//   spawn_supervised - the same under a supervisor that kills the command's
//                      whole tree if this process dies, on request, or at a
//                      deadline this process did not move on (leases).
//   supervisor_*     - talk to it: move the deadline, stop the command.
//   wait_forwarding  - forwards signals to it until it exits, reaps it.
//   wait_cancellable - runs a blocking acquire on a thread; a signal cancels
//                      it; an optional message once it has waited a while.
//   notify           - signals an eventfd.
//   signal_name      - "SIGINT", "SIGTERM", "SIGHUP" or "signal N".
#ifndef TIERLOCK_TOOLS_TIERLOCK_PROCESS_H_
#define TIERLOCK_TOOLS_TIERLOCK_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <stop_token>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace tierlock::cli {

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd();
  Fd(Fd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = other.fd_;
      other.fd_ = -1;
    }
    return *this;
  }
  void reset();
  int get() const { return fd_; }

 private:
  int fd_;
};

// Blocks SIGINT, SIGTERM, SIGHUP and SIGCHLD in the calling thread (call it
// before any thread exists, so every thread inherits the mask and they are
// only ever read from the descriptor) and returns a signalfd for them. On
// failure prints why and returns an Fd holding -1.
Fd take_signals();

// Starts `command` (argv[0] searched in PATH) with environment `env`, an
// empty signal mask and SIGINT/SIGTERM/SIGHUP/SIGCHLD at their defaults.
// Returns its pid; on failure prints why and returns -1 with the exit code
// in `*exit_code` (kCommandNotFound, kCannotExecute or kOther). With
// `inherit_fd` >= 3, the command gets that descriptor at the same number
// without close-on-exec (our copy keeps it); all our other descriptors are
// close-on-exec and stay ours.
pid_t spawn_command(const std::vector<std::string>& command,
                    std::vector<std::string> env, int* exit_code,
                    int inherit_fd = -1);

// What the supervisor of spawn_supervised enforces beyond this process's
// death (leases).
struct SupervisorOptions {
  // Watchdog: the command's whole tree is SIGKILLed at this time unless
  // supervisor_set_deadline moved it later first. An absolute
  // CLOCK_MONOTONIC time (steady_clock), shared by every process on the
  // machine, so it holds while this process is stopped or stalled and can
  // tell the supervisor nothing. max(): no deadline.
  std::chrono::steady_clock::time_point deadline =
      std::chrono::steady_clock::time_point::max();
  // supervisor_stop: how long the tree has between SIGTERM and SIGKILL.
  std::chrono::nanoseconds grace{0};
};

struct Supervised {
  pid_t pid = -1;  // the supervisor's (wait for it as for the command)
  Fd control;      // this end of the control socket (supervisor_* below)
};

// Like spawn_command, but the command runs under a supervisor: a child of
// this process (forked, not exec'd) that
//   - gets SIGUSR1 when this process dies (PR_SET_PDEATHSIG, checked against
//     getppid() for the race with a death before prctl), or sees the control
//     socket close, and then SIGKILLs the command and every process
//     descending from it (it is their child subreaper,
//     PR_SET_CHILD_SUBREAPER, so orphans of the tree, daemons that
//     double-fork and setsid included, are reparented to it and found in
//     /proc/PID/task/PID/children) until none is left, and exits;
//   - does the same at `options.deadline` (the watchdog), first sending one
//     byte back on the control socket (supervisor_watchdog_fired);
//   - on supervisor_stop, sends SIGTERM to every process of the tree, then
//     SIGKILLs what is left of it after `options.grace`, and exits once the
//     tree is empty (not when the command alone exits: what it started in
//     the background goes too);
//   - forwards the signals sent to it (SIGINT, SIGTERM, SIGHUP: what
//     wait_forwarding sends) to the command, ignoring the terminal's own
//     (the command is in the same process group and gets those directly);
//   - otherwise exits with the command's status when it exits (128+N if
//     killed by signal N), leaving what the command started running, as
//     spawn_command.
// The command gets PR_SET_PDEATHSIG=SIGKILL for the supervisor's death.
// Returns the supervisor (pid -1 on error, reported as spawn_command does).
// Must be called on the main thread: a death signal is sent when the thread
// that forked exits, not the process.
Supervised spawn_supervised(const std::vector<std::string>& command,
                            std::vector<std::string> env,
                            const SupervisorOptions& options, int* exit_code);

// Moves the watchdog's deadline to `deadline` (ignored once the supervisor
// is stopping the command). Never blocks; false if the supervisor is gone.
bool supervisor_set_deadline(int control_fd,
                             std::chrono::steady_clock::time_point deadline);
// Asks the supervisor to stop the command's tree: SIGTERM now, SIGKILL after
// the grace. Never blocks; false if the supervisor is gone.
bool supervisor_stop(int control_fd);
// Returns true if the watchdog fired (reads the byte it sends; never blocks).
bool supervisor_watchdog_fired(int control_fd);

// Blocks until `child` exits, forwarding every signal read from `signal_fd`
// (a signalfd) but SIGCHLD to it. With `event_fd` >= 0, calls `on_event`
// once when it becomes readable (and stops watching it). Reaps the child and
// returns its status as an exit code (128+N if killed by signal N).
int wait_forwarding(pid_t child, int signal_fd, int event_fd = -1,
                    const std::function<void()>& on_event = {});

// Runs `acquire` on a new thread and blocks until it returns, watching
// `signal_fd` (a signalfd) meanwhile: the first signal but SIGCHLD is stored
// in `*signal_received` and requests a stop on the token `acquire` gets
// (which must then return promptly, holding nothing). With `waiting_message`
// set, calls it once on this thread if `acquire` is still running after
// `message_after`. The stop token is how a blocking acquire is interrupted
// without a signal handler: the library's acquires take one. kInternal if
// the thread's completion cannot be watched (no eventfd); `acquire` has not
// run then.
absl::Status wait_cancellable(
    const std::function<void(std::stop_token)>& acquire, int signal_fd,
    int* signal_received, const std::function<void()>& waiting_message = {},
    std::chrono::milliseconds message_after = std::chrono::milliseconds(500));

// Adds one to the eventfd `fd` (EINTR retried).
void notify(int fd);

// Returns "SIGINT", "SIGTERM", "SIGHUP", or "signal N" for another `sig`.
std::string signal_name(int sig);

}  // namespace tierlock::cli

#endif  // TIERLOCK_TOOLS_TIERLOCK_PROCESS_H_

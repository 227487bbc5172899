// lock_dir: lock a directory with tierlock, optionally running a command under
// it.
//
//   lock_dir [--shared] [--try] DIR [-- COMMAND ARGS...]
//
// Opens DIR's lock (DIR/.lock), acquires it exclusively (or shared with
// --shared), prints "locked <lock file>", then runs COMMAND (fork + execvp, no
// shell) while holding the lock and releases it when COMMAND ends. Without a
// command it releases at once: a quick "can I lock this?" check.
//
// Exit status: COMMAND's status (128+N if it was killed by signal N); 0 without
// a command; 75 (EX_TEMPFAIL) if --try found the lock held elsewhere; 1 on a
// tierlock error; 2 on a usage error; 126/127 if COMMAND cannot be executed.
//
// While COMMAND runs, lock_dir ignores SIGINT and SIGQUIT (as system(3) does)
// so that a Ctrl-C reaches COMMAND but cannot end the lock's holder before
// COMMAND.
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "tierlock/tierlock.h"

namespace {

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitBusy = 75;  // EX_TEMPFAIL from <sysexits.h>

constexpr std::string_view kUsage =
    "usage: lock_dir [--shared] [--try] DIR [-- COMMAND ARGS...]\n"
    "  Locks DIR (through DIR/.lock) and runs COMMAND while holding the lock.\n"
    "  --shared  take a shared lock instead of an exclusive one\n"
    "  --try     do not wait: exit 75 if the lock is held elsewhere\n";

struct Options {
  tierlock::Mode mode = tierlock::Mode::kExclusive;
  bool try_only = false;
  std::string dir;
  std::vector<char*> command;  // argv-style, null-terminated when non-empty
};

// Parses argv into `options`; returns an exit code to stop with, or -1.
int parse(int argc, char** argv, Options& options) {
  int i = 1;
  for (; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      return 0;
    }
    if (arg == "--shared") {
      options.mode = tierlock::Mode::kShared;
    } else if (arg == "--try") {
      options.try_only = true;
    } else if (arg.size() > 1 && arg.front() == '-') {
      std::cerr << "lock_dir: unknown option '" << arg << "'\n" << kUsage;
      return kExitUsage;
    } else if (options.dir.empty()) {
      options.dir = std::string(arg);
    } else {
      std::cerr << "lock_dir: unexpected argument '" << arg
                << "' (put the command after --)\n"
                << kUsage;
      return kExitUsage;
    }
  }
  if (options.dir.empty()) {
    std::cerr << "lock_dir: missing DIR\n" << kUsage;
    return kExitUsage;
  }
  for (; i < argc; ++i) options.command.push_back(argv[i]);
  if (!options.command.empty()) options.command.push_back(nullptr);
  return -1;
}

int error(absl::string_view message) {
  std::cerr << "lock_dir: " << message << "\n";
  return kExitError;
}

// Runs the command in a child process and returns its exit status as a shell
// would report it.
int run_command(std::vector<char*>& command) {
  struct sigaction ignore = {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  struct sigaction old_int = {};
  struct sigaction old_quit = {};
  sigaction(SIGINT, &ignore, &old_int);
  sigaction(SIGQUIT, &ignore, &old_quit);

  // Built before fork: after fork the child may only make async-signal-safe
  // calls (another thread may have held the allocator's lock).
  const std::string exec_failed =
      std::string("lock_dir: exec '") + command[0] + "': ";
  std::cout.flush();  // or the child inherits, and repeats, buffered output
  std::cerr.flush();
  const pid_t pid = fork();
  if (pid == 0) {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGQUIT, &old_quit, nullptr);
    execvp(command[0], command.data());
    const int err = errno;
    const char* reason = strerrordesc_np(err);  // a static string, no locale
    if (reason == nullptr) reason = "cannot execute";
    [[maybe_unused]] ssize_t n =
        write(STDERR_FILENO, exec_failed.data(), exec_failed.size());
    n = write(STDERR_FILENO, reason, std::strlen(reason));
    n = write(STDERR_FILENO, "\n", 1);
    _exit(err == ENOENT ? 127 : 126);
  }

  int status = 0;
  int result = 0;
  if (pid < 0) {
    result = error(std::string("fork: ") + std::strerror(errno));
  } else {
    pid_t waited = 0;
    do {
      waited = waitpid(pid, &status, 0);
    } while (waited < 0 && errno == EINTR);
    if (waited < 0) {
      result = error(std::string("waitpid: ") + std::strerror(errno));
    } else if (WIFEXITED(status)) {
      result = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      result = 128 + WTERMSIG(status);
    } else {
      result = kExitError;
    }
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGQUIT, &old_quit, nullptr);
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (const int rc = parse(argc, argv, options); rc >= 0) return rc;

  absl::StatusOr<tierlock::DirLock> lock = tierlock::DirLock::open(options.dir);
  if (!lock.ok()) return error(lock.status().message());

  tierlock::Guard guard;
  if (options.try_only) {
    absl::StatusOr<std::optional<tierlock::Guard>> got =
        lock->try_acquire(options.mode);
    if (!got.ok()) return error(got.status().message());
    if (!got->has_value()) {
      std::cerr << "lock_dir: " << lock->lock_file().string()
                << ": held by another holder\n";
      return kExitBusy;
    }
    guard = std::move(**got);
  } else {
    absl::StatusOr<tierlock::Guard> got = lock->acquire(options.mode);
    if (!got.ok()) return error(got.status().message());
    guard = std::move(*got);
  }
  std::cout << "locked " << lock->lock_file().string() << std::endl;

  const int rc = options.command.empty() ? 0 : run_command(options.command);

  if (absl::Status released = guard.release(); !released.ok()) {
    error(released.message());
    return rc == 0 ? kExitError : rc;
  }
  return rc;
}

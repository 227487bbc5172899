// tierlock lock --fd N: lock (or unlock) a descriptor the caller opened, as
// `flock N` does, for scripts written around one:
//
//   exec 9>ws/.lock
//   tierlock lock --fd 9 || exit
//   ...            # locked while the shell keeps fd 9 open
//   exec 9>&-      # or: tierlock lock -u --fd 9
//
// flock(2) locks belong to the open file description, which the shell and
// this process share: the lock stays held by the shell's descriptor after
// tierlock exits, and the kernel drops it when the last descriptor on it is
// closed. The wait is a blocking flock(2) that SIGALRM interrupts (no
// SA_RESTART), as in flock(1): once for the waiting message, once at the
// timeout. SIGINT and friends keep their default action: the process dies
// waiting, and a lock it never got is not held.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "cli.h"
#include "tierlock/holder.h"
#include "tierlock/text.h"

namespace tierlock::cli {
namespace {

struct LockFdOptions {
  int fd = -1;
  bool shared = false;
  bool unlock = false;
  bool no_wait = false;
  std::optional<std::string> timeout;
  int conflict_code = kConflict;
  bool quiet = false;
  bool verbose = false;
};

void on_alarm(int) {}

// Arms SIGALRM to fire after `after` and then every 10 ms (0 disarms): a
// first signal that lands just before flock(2) is entered is not lost.
void arm_alarm(std::chrono::nanoseconds after) {
  struct itimerval t = {};
  if (after.count() > 0) {
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(after).count();
    t.it_value.tv_sec = static_cast<time_t>(us / 1000000);
    t.it_value.tv_usec = static_cast<suseconds_t>(us % 1000000);
    if (t.it_value.tv_sec == 0 && t.it_value.tv_usec == 0)
      t.it_value.tv_usec = 1;
    t.it_interval.tv_usec = 10000;
  }
  ::setitimer(ITIMER_REAL, &t, nullptr);
}

// The file `fd` is open on, from /proc/self/fd (for messages and for
// naming its holders).
std::string fd_path(int fd) {
  std::error_code ec;
  std::filesystem::path p =
      std::filesystem::read_symlink(absl::StrCat("/proc/self/fd/", fd), ec);
  return ec ? absl::StrCat("fd ", fd) : p.string();
}

// "held exclusively by pid 1234 'make'" for the file `fd` is open on.
std::string who_holds(const std::string& path) {
  const std::filesystem::path p(path);
  if (!p.is_absolute() || !p.has_filename()) return "held";
  absl::StatusOr<LockState> state =
      inspect_lock(p.parent_path(), p.filename().string());
  return state.ok() ? describe_holders(state->holders)
                    : std::string(state.status().message());
}

int run_lock(const LockFdOptions& o) {
  if (o.fd < 0) {
    print_error("--fd",
                absl::StrCat("must be a descriptor number >= 0, not ", o.fd));
    return kUsage;
  }
  if (o.conflict_code < 1 || o.conflict_code > 255) {
    print_error("--conflict-exit-code",
                absl::StrCat("must be 1..255, not ", o.conflict_code));
    return kUsage;
  }
  if (o.quiet && o.verbose) {
    print_error("--verbose", "and --quiet cannot be given together");
    return kUsage;
  }
  std::optional<std::chrono::nanoseconds> timeout;
  if (o.timeout.has_value() && !parse_timeout(*o.timeout, &timeout)) {
    print_error("--timeout",
                absl::StrCat("must be a number of seconds >= 0 (huge or "
                             "'inf': no timeout), not '",
                             escape_text(*o.timeout), "'"));
    return kUsage;
  }
  struct stat st;
  if (::fstat(o.fd, &st) != 0) {
    print_error(absl::StrCat("fd ", o.fd),
                absl::StrCat(error_text(errno), " (open it first, e.g. `exec ",
                             o.fd, ">DIR/.lock`)"));
    return kUsage;
  }
  const std::string path = fd_path(o.fd);
  if (o.unlock) {
    if (::flock(o.fd, LOCK_UN) != 0) {
      print_error(path, absl::StrCat("unlock: ", error_text(errno)));
      return kOther;
    }
    if (o.verbose) print_error(path, "unlocked");
    return kOk;
  }
  const int op = o.shared ? LOCK_SH : LOCK_EX;
  const auto started = std::chrono::steady_clock::now();
  if (::flock(o.fd, op | LOCK_NB) == 0) {
    if (o.verbose)
      print_error(path,
                  absl::StrCat("locked (", o.shared ? "shared" : "exclusive",
                               ") without waiting"));
    return kOk;
  }
  if (errno != EWOULDBLOCK) {
    print_error(path, absl::StrCat("flock: ", error_text(errno)));
    return kOther;
  }
  const bool tries_only =
      o.no_wait || (timeout.has_value() && timeout->count() == 0);
  if (tries_only) {
    if (!o.quiet) print_error(path, who_holds(path));
    return o.conflict_code;
  }
  struct sigaction sa = {};
  sa.sa_handler = on_alarm;  // no SA_RESTART: flock returns EINTR
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGALRM, &sa, nullptr);
  const std::optional<std::chrono::steady_clock::time_point> deadline =
      timeout.has_value() ? std::optional(started + *timeout) : std::nullopt;
  bool message_due = !o.quiet;
  std::string waited_for;
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if (deadline.has_value() && now >= *deadline) {
      if (!o.quiet)
        print_error(path, absl::StrCat("timed out after ",
                                       human_duration(now - started), "; ",
                                       who_holds(path)));
      return o.conflict_code;
    }
    const auto message_at =
        started + (o.verbose ? std::chrono::milliseconds(0)
                             : std::chrono::milliseconds(500));
    if (message_due && now >= message_at) {
      message_due = false;
      waited_for = who_holds(path);
      print_error(path, absl::StrCat("waiting (", waited_for, ")"));
    }
    std::optional<std::chrono::steady_clock::time_point> wake = deadline;
    if (message_due && (!wake.has_value() || message_at < *wake))
      wake = message_at;
    arm_alarm(wake.has_value() ? *wake - now : std::chrono::nanoseconds(0));
    const int r = ::flock(o.fd, op);
    const int err = errno;
    arm_alarm(std::chrono::nanoseconds(0));
    if (r == 0) break;
    if (err != EINTR) {
      print_error(path, absl::StrCat("flock: ", error_text(err)));
      return kOther;
    }
  }
  if (o.verbose) {
    print_error(
        path,
        absl::StrCat("locked (", o.shared ? "shared" : "exclusive", ") after ",
                     human_duration(std::chrono::steady_clock::now() - started),
                     waited_for.empty()
                         ? std::string()
                         : absl::StrCat("; waited for: ", waited_for)));
  }
  return kOk;
}

}  // namespace

void setup_lock(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<LockFdOptions>();
  CLI::App* lock = app.add_subcommand(
      "lock",
      "tierlock lock [-s] [-n] [-w SECONDS] [-E N] [-u] [-q|--verbose] "
      "--fd N\n\n"
      "Lock the file that descriptor N is open on, as `flock N` does: for "
      "scripts that open the lock file themselves (`exec 9>ws/.lock; "
      "tierlock lock --fd 9`). The lock belongs to the open file description "
      "the shell shares with tierlock, so it stays held after tierlock exits, "
      "until the shell closes N (`exec 9>&-`) or unlocks it (`tierlock lock "
      "-u --fd 9`). It is the same lock `tierlock run` and flock(1) take on "
      "that file. While waiting, the holder is named on stderr after ~0.5 s.");
  lock->add_option("--fd", o->fd, "The descriptor to lock (required)")
      ->type_name("N")
      ->required();
  lock->add_flag("-s,--shared", o->shared, "Take a shared lock");
  lock->add_flag("-u,--unlock", o->unlock,
                 "Unlock the description (for every process sharing it)");
  lock->add_flag("-n,--no-wait", o->no_wait,
                 "If the lock is held, exit at once with the conflict code");
  lock->add_option("-w,--timeout", o->timeout,
                   "Give up after SECONDS with the conflict code")
      ->type_name("SECONDS");
  lock->add_option("-E,--conflict-exit-code", o->conflict_code,
                   "Exit code when the lock is held; default 75")
      ->type_name("N");
  lock->add_flag("--verbose", o->verbose,
                 "Say who held the lock and how long the wait took");
  lock->add_flag("-q,--quiet", o->quiet,
                 "No waiting message, no message when the lock is held");
  lock->footer(
      "Exit codes: 0 locked (or unlocked); 75 (or -E N) the lock is held; 64 "
      "usage (N is not open); 1 any other error.\n"
      "Example: exec 9>build/.lock && tierlock lock -w 30 --fd 9 && make");
  lock->callback([o, exit_code] { *exit_code = run_lock(*o); });
}

}  // namespace tierlock::cli

// tierlock run: lock a directory, run a command (no shell) while holding the
// lock, release, and exit with the command's status.
//
// Signals: SIGINT, SIGTERM and SIGHUP (and SIGCHLD) are blocked from the start
// and read from a signalfd, so there is no handler and no polling. While
// waiting for the lock, one of them cancels the wait (the library's acquire
// takes a std::stop_token) and tierlock exits 128+N holding nothing; while
// the command runs, they are forwarded to it.
//
// The common case costs no thread: one non-blocking try first. Only when the
// lock is held does a thread block in acquire() while this one waits on the
// signalfd (wait_cancellable, process.h; the waiting message after ~0.5 s).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli.h"
#include "lease_run.h"
#include "process.h"
#include "tierlock/text.h"
#include "tierlock/tierlock.h"

extern char** environ;

namespace tierlock::cli {
namespace {

constexpr std::chrono::milliseconds kWaitingMessageAfter{500};

struct RunOptions {
  bool shared = false;
  bool no_wait = false;
  std::optional<std::string> timeout;  // parsed by parse_timeout
  int conflict_code = kConflict;
  std::string tier;  // "LEVEL[:NAME]"
  std::string lock_name = ".lock";
  bool create = false;
  bool quiet = false;
  bool close = false;          // the command does not inherit the lock
  bool refuse_unsafe = false;  // LockOptions::refuse_unsafe_lock_file
  bool reentrant = false;      // an ancestor's hold of this lock is ours too
  bool verbose = false;        // say what was waited for, how long, on whom
  std::optional<std::string> shell_command;  // -c: /bin/sh -c STRING
  std::string dir;
  std::vector<std::string> command;
  // Leases (lease_run.cc): with --backend there is no DIR.
  std::string backend;
  std::string key;
  double ttl_s = 30;
  std::optional<double> kill_after_s;
};

// Parses "LEVEL[:NAME]".
std::optional<Tier> parse_tier(const std::string& text, std::string* name) {
  const std::size_t colon = text.find(':');
  const std::string_view level_text = std::string_view(text).substr(0, colon);
  int level = 0;
  auto [end, ec] = std::from_chars(
      level_text.data(), level_text.data() + level_text.size(), level);
  if (ec != std::errc() || end != level_text.data() + level_text.size() ||
      level_text.empty()) {
    return std::nullopt;
  }
  *name = colon == std::string::npos ? std::string() : text.substr(colon + 1);
  return Tier{level, *name};
}

// The environment of the command: ours, with TIERLOCK_DIR set to the locked
// directory and TIERLOCK_HELD to the tiered locks held for it: those our own
// parent declared plus `lock` if it has a tier (docs/design.md, "Tier
// ordering"), so a child that takes a lower tier is refused there too.
// TIERLOCK_FD names the lock's descriptor the command inherits (-1: none,
// and none inherited from an outer run is advertised either).
std::vector<std::string> child_environment(const DirLock& lock, int lock_fd) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "TIERLOCK_DIR=", 13) == 0) continue;
    if (std::strncmp(*e, "TIERLOCK_HELD=", 14) == 0) continue;
    if (std::strncmp(*e, "TIERLOCK_FD=", 12) == 0) continue;
    env.emplace_back(*e);
  }
  env.push_back(absl::StrCat("TIERLOCK_DIR=", lock.directory().native()));
  if (lock_fd >= 0) env.push_back(absl::StrCat("TIERLOCK_FD=", lock_fd));
  // The current context is the run's (bound in run_main), where the hold is.
  if (std::string held = LockContext::current().held_env(); !held.empty()) {
    env.push_back(std::string(kHeldEnvVar) + "=" + held);
  }
  return env;
}

// The pids of this process's ancestors, parent first, from /proc/PID/stat
// (field 4, after the parenthesised name, which may hold ')' itself).
std::vector<std::int64_t> ancestors() {
  std::vector<std::int64_t> out;
  std::int64_t pid = ::getppid();
  for (int depth = 0; pid > 1 && depth < 256; ++depth) {
    out.push_back(pid);
    std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
    std::string stat((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    const std::size_t close = stat.rfind(')');
    if (close == std::string::npos) break;
    char state = 0;
    long long parent = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %lld", &state, &parent) !=
        2) {
      break;
    }
    pid = parent;
  }
  return out;
}

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// The value of the environment variable `name`, or null: a plain read of
// environ (getenv is not thread-safe by contract; nothing here changes the
// environment).
const char* env_value(std::string_view name) {
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    if (entry.size() > name.size() && entry[name.size()] == '=' &&
        entry.substr(0, name.size()) == name) {
      return *e + name.size() + 1;
    }
  }
  return nullptr;
}

// Returns the holder through which an ancestor of this process holds
// `lock`'s lock file, if one does: then a wait for it would wait for
// ourselves. Only looked into when what an outer `tierlock run` exports
// points at this lock: TIERLOCK_FD is open on the same file (device and
// inode), TIERLOCK_DIR is the same directory, or TIERLOCK_HELD lists the
// same file; names are never compared as text (symlinks, bind mounts,
// `ws` vs `./ws/`). The kernel's lock table (inspect_lock) then says whether
// a holder of that file is an ancestor. The inherited descriptor itself is
// enough proof: its lock is the one an ancestor took.
std::optional<Holder> held_by_ancestor(const DirLock& lock,
                                       const std::string& lock_name) {
  // Not under a tierlock run at all: no syscall on the common path.
  if (env_value("TIERLOCK_FD") == nullptr &&
      env_value("TIERLOCK_DIR") == nullptr &&
      env_value(kHeldEnvVar) == nullptr) {
    return std::nullopt;
  }
  struct stat file;
  if (::lstat(lock.lock_file().c_str(), &file) != 0) return std::nullopt;
  bool hinted = false;
  bool inherited_fd = false;
  if (const char* fd_text = env_value("TIERLOCK_FD"); fd_text != nullptr) {
    int fd = -1;
    const char* end = fd_text + std::strlen(fd_text);
    struct stat s;
    if (std::from_chars(fd_text, end, fd).ptr == end && fd >= 3 &&
        ::fstat(fd, &s) == 0 && same_file(s, file)) {
      hinted = inherited_fd = true;
    }
  }
  if (const char* dir = env_value("TIERLOCK_DIR"); !hinted && dir) {
    struct stat a, b;
    hinted = ::stat(dir, &a) == 0 &&
             ::stat(lock.directory().c_str(), &b) == 0 && same_file(a, b);
  }
  if (!hinted) {
    for (const HeldLock& held : LockContext::inherited()) {
      struct stat s;
      if (::stat(held.lock_file.c_str(), &s) == 0 && same_file(s, file)) {
        hinted = true;
        break;
      }
    }
  }
  if (!hinted) return std::nullopt;
  absl::StatusOr<LockState> state = inspect_lock(lock.directory(), lock_name);
  if (!state.ok() || state->holders.empty()) return std::nullopt;
  const std::vector<std::int64_t> up = ancestors();
  auto is_ancestor = [&](const std::optional<std::int64_t>& pid) {
    return pid.has_value() && std::find(up.begin(), up.end(), *pid) != up.end();
  };
  for (const Holder& h : state->holders) {
    if (is_ancestor(h.pid) || is_ancestor(h.taker_pid)) return h;
  }
  if (inherited_fd) return state->holders.front();
  return std::nullopt;
}

// "tier 10 'workspace'", or "tier 10" without a name; escaped.
std::string tier_words(const std::optional<Tier>& tier) {
  if (!tier.has_value()) return "an untiered lock";
  std::string out = absl::StrCat("tier ", tier->level);
  if (!tier->name.empty())
    absl::StrAppend(&out, " '", escape_text(tier->name), "'");
  return out;
}

// Who holds `held`, in the words of a shell user.
std::string holder_words(const HeldLock& held) {
  std::string out = absl::StrCat(tier_words(held.tier), " (",
                                 escape_text(held.lock_file.native()));
  if (held.inherited_from_pid != 0) {
    absl::StrAppend(&out, ", held by the parent process, pid ",
                    held.inherited_from_pid, ", an outer tierlock run)");
  } else {
    absl::StrAppend(&out, ", held by this run)");
  }
  return out;
}

// The lock-order refusal as one line for a shell user: what was refused,
// which held lock it conflicts with, what to do with tierlock's options.
// No C++ advice and no source locations: those are the library's report.
std::string tier_refusal(const TierViolation& v) {
  const std::string taking = tier_words(v.acquiring.tier);
  const std::string held = holder_words(v.conflicting);
  switch (v.kind) {
    case TierViolation::Kind::kSameTier:
      return absl::StrCat(
          "lock order violation: ", taking, " is already taken by ", held,
          "; two locks of one tier cannot be nested (the next run could take "
          "them the other way round): give the inner run a higher --tier, or "
          "lock one directory that covers both");
    case TierViolation::Kind::kLearnedCycle:
      return absl::StrCat(
          "lock order violation: taking ", taking, " while holding ", held,
          " reverses an order taken before; take these locks in one order");
    case TierViolation::Kind::kTierOrder:
    default:
      return absl::StrCat(
          "lock order violation: ", taking, " cannot be taken while holding ",
          held,
          "; tiers must be taken in increasing order: take the lower --tier "
          "in the outer run, or run this one outside the outer run");
  }
}

// Waits for the lock on a thread while this thread watches the signalfd:
// cancels on a signal, prints the waiting message once after ~0.5 s.
// Returns the acquire's result and, if it was cancelled by a signal, which.
absl::StatusOr<Guard> wait_for_lock(
    DirLock& lock, const RunOptions& o, const LockContext& task,
    std::optional<std::chrono::nanoseconds> timeout, int signal_fd,
    int* signal_received, std::string* waited_for) {
  AcquireOptions options;
  options.mode = o.shared ? Mode::kShared : Mode::kExclusive;
  options.timeout = timeout;
  absl::StatusOr<Guard> result = absl::UnknownError("not run");
  auto acquire = [&](std::stop_token stop) {
    LockContext::Scope bind(
        task);  // the hold belongs to the run, not this thread
    options.stop = std::move(stop);
    result = lock.acquire(std::move(options));
  };
  auto message = [&] {
    absl::StatusOr<LockState> state =
        inspect_lock(lock.directory(), o.lock_name);
    std::string who = state.ok() ? describe_holders(state->holders)
                                 : std::string(state.status().message());
    *waited_for = who;
    std::string line = absl::StrCat("tierlock: waiting for ",
                                    escape_text(lock.lock_file().native()),
                                    " (", safe_text(who), ")\n");
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
  };
  // --verbose: the holder is named as the wait starts, not after 0.5 s.
  absl::Status watched = wait_cancellable(
      acquire, signal_fd, signal_received,
      o.quiet ? std::function<void()>() : message,
      o.verbose ? std::chrono::milliseconds(0) : kWaitingMessageAfter);
  if (!watched.ok()) return watched;
  return result;
}

int conflict(const RunOptions& o, const DirLock& lock, absl::string_view why) {
  if (!o.quiet) {
    absl::StatusOr<LockState> state =
        inspect_lock(lock.directory(), o.lock_name);
    print_error(lock.lock_file().native(),
                absl::StrCat(why, state.ok() ? describe_holders(state->holders)
                                             : "held"));
  }
  return o.conflict_code;
}

// Runs the command and forwards signals to it until it exits. Unless
// --close, the command inherits a duplicate of the lock's descriptor (as
// with flock(1)): the kernel then keeps the lock while the command, or
// anything it started that keeps the descriptor, runs, even if this process
// is SIGKILLed. The duplicate is >= 3 (never stdin/out/err) and close-on-
// exec here, so only the command gets it (spawn_command).
int run_command(const RunOptions& o, const DirLock& lock, const Guard& guard,
                int signal_fd) {
  Fd lock_fd;
  if (!o.close) {
    lock_fd = Fd(::fcntl(guard.native_handle(), F_DUPFD_CLOEXEC, 3));
    if (lock_fd.get() < 0) {
      print_error(
          lock.lock_file().native(),
          absl::StrCat("duplicating the lock's descriptor for the command: ",
                       error_text(errno), " (--close runs it without)"));
      return kOther;
    }
  }
  int exit_code = kOther;
  const pid_t child =
      spawn_command(o.command, child_environment(lock, lock_fd.get()),
                    &exit_code, lock_fd.get());
  lock_fd = Fd();  // the command has its copy; ours would only outlive the hold
  if (child < 0) return exit_code;
  return wait_forwarding(child, signal_fd);
}

// True if `name` would be found as a command: it has a '/' and is there, or
// an executable regular file of that name is in a PATH directory.
bool command_exists(const std::string& name) {
  struct stat s;
  if (name.find('/') != std::string::npos)
    return ::stat(name.c_str(), &s) == 0 && !S_ISDIR(s.st_mode);
  const char* path = env_value("PATH");
  std::string_view rest = path != nullptr ? path : "/usr/bin:/bin";
  for (;;) {
    const std::size_t colon = rest.find(':');
    std::string dir(rest.substr(0, colon));
    if (dir.empty()) dir = ".";
    std::string file = std::move(dir);
    file += '/';
    file += name;
    if (::stat(file.c_str(), &s) == 0 && S_ISREG(s.st_mode) &&
        ::access(file.c_str(), X_OK) == 0) {
      return true;
    }
    if (colon == std::string_view::npos) return false;
    rest.remove_prefix(colon + 1);
  }
}

// Runs the command directly under an ancestor's hold of the lock
// (--reentrant): nothing is taken or released here, and the environment
// (TIERLOCK_DIR, TIERLOCK_FD, TIERLOCK_HELD) passes through unchanged, as
// the ancestor's hold does.
int run_under_ancestor(const RunOptions& o, int signal_fd) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  int exit_code = kOther;
  const pid_t child = spawn_command(o.command, std::move(env), &exit_code);
  if (child < 0) return exit_code;
  return wait_forwarding(child, signal_fd);
}

int run_run(RunOptions o, std::vector<std::string> operands,
            bool after_marker) {
  const bool lease_mode = !o.backend.empty() || !o.key.empty();
  if (o.shell_command.has_value()) {
    // -c STRING is the whole command: only DIR (and one `--`) may be left.
    std::size_t rest = operands.size();
    if (!lease_mode && rest > 0) --rest;  // DIR
    if (rest > 0 && operands.back() == "--") --rest;
    if (rest > 0) {
      print_error("-c",
                  absl::StrCat("is the whole command: nothing may follow ",
                               lease_mode ? "the options" : "DIR", " (got '",
                               escape_text(operands.back()), "')"));
      return kUsage;
    }
    if (!operands.empty() && operands.back() == "--") operands.pop_back();
    for (const char* a : {"/bin/sh", "-c"}) operands.emplace_back(a);
    operands.push_back(*o.shell_command);
  }
  if (lease_mode && !operands.empty()) {
    // `--backend URL --key K ws -- make`: the DIR form, where a lease takes
    // none. A directory cannot be run, so the first operand is a DIR when it
    // is a directory that is not also a command of that name in PATH.
    const std::string& first = operands.front();
    struct stat s;
    if (::stat(first.c_str(), &s) == 0 && S_ISDIR(s.st_mode) &&
        ((operands.size() > 1 && operands[1] == "--") ||
         !command_exists(first))) {
      print_error(first,
                  "DIR is not allowed with --backend (a lease has no "
                  "directory: tierlock run --backend URL --key NAME [--] "
                  "COMMAND [ARG...])");
      return kUsage;
    }
  }
  if (std::string error; !split_operands(operands, after_marker, !lease_mode,
                                         &o.dir, &o.command, &error)) {
    print_error("run", error);
    return kUsage;
  }
  if (!o.shell_command.has_value() && o.command.size() == 2 &&
      o.command[0] == "-c") {
    // flock(1)'s form: `DIR -c 'STRING'`.
    o.command = {"/bin/sh", "-c", o.command[1]};
  }
  if (o.quiet && o.verbose) {
    print_error("--verbose", "and --quiet cannot be given together");
    return kUsage;
  }
  if (lease_mode && (o.reentrant || o.verbose)) {
    print_error(o.reentrant ? "--reentrant" : "--verbose",
                "is for directory locks (not --backend)");
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
  if (!lease_mode && o.kill_after_s.has_value()) {
    print_error("--kill-after", "is for leases (--backend)");
    return kUsage;
  }
  if (lease_mode) {
    if (o.backend.empty()) {
      print_error("--key", "needs --backend");
      return kUsage;
    }
    if (o.shared || o.create || !o.tier.empty() || o.lock_name != ".lock" ||
        o.close || o.refuse_unsafe) {
      print_error("--backend",
                  "--shared, --create, --tier, --lock-name, --close and "
                  "--refuse-unsafe "
                  "are for directory locks");
      return kUsage;
    }
    LeaseRunOptions lo;
    lo.backend = o.backend;
    lo.key = o.key;
    lo.ttl_s = o.ttl_s;
    lo.kill_after_s = o.kill_after_s;
    lo.no_wait = o.no_wait;
    lo.timeout = o.timeout;
    lo.conflict_code = o.conflict_code;
    lo.quiet = o.quiet;
    lo.command =
        o.command;  // no DIR with --backend: the first operand is COMMAND
    return run_lease(lo);
  }
  if (o.conflict_code < 1 || o.conflict_code > 255) {
    print_error("--conflict-exit-code",
                absl::StrCat("must be 1..255, not ", o.conflict_code));
    return kUsage;
  }
  if (o.lock_name.empty() || o.lock_name == "." || o.lock_name == ".." ||
      o.lock_name.find('/') != std::string::npos) {
    print_error("--lock-name", absl::StrCat("must be a plain file name, not '",
                                            escape_text(o.lock_name), "'"));
    return kUsage;
  }
  LockOptions lock_options;
  lock_options.lock_file_name = o.lock_name;
  lock_options.create_directory = o.create;
  lock_options.refuse_unsafe_lock_file = o.refuse_unsafe;
  std::string tier_name;
  if (!o.tier.empty()) {
    lock_options.tier = parse_tier(o.tier, &tier_name);
    if (!lock_options.tier.has_value()) {
      print_error(
          "--tier",
          absl::StrCat("expected LEVEL[:NAME] with an integer LEVEL, not '",
                       escape_text(o.tier), "'"));
      return kUsage;
    }
  }

  // Before any thread exists (see take_signals).
  Fd signal_fd = take_signals();
  if (signal_fd.get() < 0) return kOther;

  absl::StatusOr<DirLock> lock = DirLock::open(o.dir, lock_options);
  if (!lock.ok()) {
    const absl::Status& st = lock.status();
    // kNotFound may come from something other than DIR (a lock file that
    // cannot be created in /proc): DIR is called missing only if it is.
    struct stat dir_stat;
    if (st.code() == absl::StatusCode::kNotFound &&
        ::stat(o.dir.c_str(), &dir_stat) != 0 &&
        (errno == ENOENT || errno == ENOTDIR)) {
      print_error(
          o.dir,
          o.create
              ? "no such directory, nor its parent (--create makes one level)"
              : "no such directory (--create creates it)");
      return kNoDirectory;
    } else if (tierlock::error_kind(st) ==
               tierlock::ErrorKind::kNotADirectory) {
      print_error(o.dir, "not a directory");
      return kNoDirectory;
    }
    print_error(o.dir, st.message());
    return st.code() == absl::StatusCode::kNotFound ? kOther
                                                    : exit_code_for(st);
  }
  const Mode mode = o.shared ? Mode::kShared : Mode::kExclusive;

  // `tierlock run ws -- tierlock run ws -- …`: an ancestor holds this lock,
  // so a wait would be for ourselves, forever. Shared under shared does not
  // wait and is taken as usual (unless --reentrant).
  if (std::optional<Holder> up = held_by_ancestor(*lock, o.lock_name);
      up.has_value() && (o.reentrant || up->mode == Mode::kExclusive ||
                         mode == Mode::kExclusive)) {
    const std::string who = describe_holders({*up});
    if (!o.reentrant) {
      print_error(lock->lock_file().native(),
                  absl::StrCat("already ", who,
                               ", an ancestor of this process: waiting for it "
                               "would wait forever (--reentrant runs COMMAND "
                               "under that lock)"));
      return kSelfDeadlock;
    }
    if (up->mode == Mode::kShared && mode == Mode::kExclusive) {
      print_error(lock->lock_file().native(),
                  absl::StrCat("--reentrant: ", who,
                               ", an ancestor of this process; an exclusive "
                               "run cannot share it and would wait forever"));
      return kSelfDeadlock;
    }
    if (o.verbose) {
      print_error(lock->lock_file().native(),
                  absl::StrCat("--reentrant: ", who,
                               ", an ancestor; running under that lock"));
    }
    return run_under_ancestor(o, signal_fd.get());
  }
  if (std::string why = lock->unsafe_reason(); !why.empty() && !o.quiet) {
    print_error(lock->lock_file().native(),
                absl::StrCat(
                    "warning: ", why,
                    " (a deleted lock file no longer excludes; --refuse-unsafe "
                    "refuses such a lock file)"));
  }
  // Tier order is always checked here, against the tiers our parent declared
  // in TIERLOCK_HELD: a violation prints the report and fails (exit 1) before
  // waiting, whatever the library's build default.
  set_tier_check_mode(TierCheckMode::kFail);
  // The library's report (C++ call sites, acquire_all advice) is for
  // programs; a shell user gets one line in tierlock's terms instead
  // (tier_refusal). The handler runs on the acquiring thread, which is
  // joined before `refusal` is read.
  auto refusal = std::make_shared<std::optional<std::string>>();
  auto refusal_mutex = std::make_shared<std::mutex>();
  set_tier_violation_handler([refusal, refusal_mutex](const TierViolation& v) {
    std::lock_guard<std::mutex> hold(*refusal_mutex);
    if (!refusal->has_value()) *refusal = tier_refusal(v);
  });
  const auto started = std::chrono::steady_clock::now();
  std::string waited_for;
  LockContext task("tierlock run");
  LockContext::Scope bind(task);

  // A run that may wait is a blocking acquire, and the library checks tier
  // order only for those (a try cannot deadlock, so it is never refused).
  // When an order check can apply (a tier here, or tiers our parent holds),
  // the acquire is therefore a blocking one from the start, whether or not
  // the lock happens to be free; otherwise the common case costs one try
  // and no thread.
  const bool tries_only =
      o.no_wait || (timeout.has_value() && timeout->count() == 0);
  const bool checked_wait = !tries_only && (lock_options.tier.has_value() ||
                                            !LockContext::inherited().empty());
  std::optional<Guard> guard;
  if (!checked_wait) {
    absl::StatusOr<std::optional<Guard>> tried = lock->try_acquire(mode);
    if (!tried.ok()) {
      print_error(lock->lock_file().native(), tried.status().message());
      return exit_code_for(tried.status());
    }
    guard = *std::move(tried);
  }
  if (!guard.has_value()) {
    if (tries_only) return conflict(o, *lock, "");
    int signal_received = 0;
    absl::StatusOr<Guard> got =
        wait_for_lock(*lock, o, task, timeout, signal_fd.get(),
                      &signal_received, &waited_for);
    if (signal_received != 0) {
      // Cancelled (or granted in the same instant: released right here).
      if (got.ok()) (void)got->release();
      print_error(lock->lock_file().native(),
                  absl::StrCat("interrupted by ", signal_name(signal_received),
                               " while waiting; nothing held"));
      return 128 + signal_received;
    }
    if (!got.ok()) {
      if (got.status().code() == absl::StatusCode::kDeadlineExceeded) {
        return conflict(
            o, *lock,
            absl::StrCat(
                "timed out after ",
                human_duration(std::chrono::steady_clock::now() - started),
                "; "));
      }
      {
        std::lock_guard<std::mutex> hold(*refusal_mutex);
        if (refusal->has_value()) {
          print_error(lock->lock_file().native(), **refusal);
          return exit_code_for(got.status());
        }
      }
      print_error(lock->lock_file().native(), got.status().message());
      return exit_code_for(got.status());
    }
    guard.emplace(*std::move(got));
  }
  const auto locked_at = std::chrono::steady_clock::now();
  if (o.verbose) {
    print_error(lock->lock_file().native(),
                absl::StrCat("locked (", std::string(mode_name(mode)),
                             ") after ", human_duration(locked_at - started),
                             waited_for.empty()
                                 ? std::string(" without waiting")
                                 : absl::StrCat("; waited for: ", waited_for)));
  }
  const int code = run_command(o, *lock, *guard, signal_fd.get());
  if (absl::Status released = guard->release(); !released.ok()) {
    print_error(lock->lock_file().native(), released.message());
  } else if (o.verbose) {
    print_error(lock->lock_file().native(),
                absl::StrCat("released after ",
                             human_duration(std::chrono::steady_clock::now() -
                                            locked_at),
                             " (the command exited ", code, ")"));
  }
  return code;
}

}  // namespace

void setup_run(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* run = app.add_subcommand(
      "run",
      "tierlock run [-s] [-n] [-w SECONDS] [-E N] [--tier LEVEL[:NAME]] "
      "[--lock-name NAME] [--create] [-o] [--refuse-unsafe] [--reentrant] "
      "[-q|--verbose] DIR [--] COMMAND [ARG...]\n"
      "tierlock run [OPTIONS] DIR -c 'SHELL COMMAND'\n"
      "tierlock run --backend URL --key NAME [OPTIONS] [--] COMMAND "
      "[ARG...]\n\n"
      "Lock DIR (exclusively unless --shared), run COMMAND with its arguments "
      "(no shell) while holding the lock, release it, and exit with the "
      "command's status (128+N if it was killed by signal N). Options end at "
      "DIR: everything from COMMAND on is the command's, verbatim (`tierlock "
      "run ws make -s` passes -s to make). The lock is the file DIR/.lock held "
      "with flock(2): flock(1) and Python's filelock on that file see it. Like "
      "flock(1), the command inherits the lock's descriptor (its number in "
      "TIERLOCK_FD): the lock stays held while the command runs even if "
      "tierlock is killed; a daemon the command starts should close it. "
      "While waiting, the holder is named on stderr after ~0.5 s. SIGINT, "
      "SIGTERM and SIGHUP are forwarded to the command; while waiting they "
      "cancel the wait (exit 130, 143, 129; nothing held). The command gets "
      "TIERLOCK_DIR (the locked directory, canonical) and TIERLOCK_FD. A run "
      "inside a run of the same lock (a script that re-runs itself under "
      "tierlock) fails at once with exit 70 instead of waiting for itself; "
      "with --reentrant it runs COMMAND under the outer run's lock.");
  run->add_flag(
      "-s,--shared", o->shared,
      "Take a shared lock (several shared holders at once; no exclusive one)");
  run->add_flag("-n,--no-wait", o->no_wait,
                "If the lock is held, exit at once with the conflict code");
  run->add_option(
         "-w,--timeout", o->timeout,
         "Give up after SECONDS (decimal; a huge value or 'inf' waits forever) "
         "with the conflict code")
      ->type_name("SECONDS");
  run->add_option(
         "-E,--conflict-exit-code", o->conflict_code,
         "Exit code when the lock is held (--no-wait, --timeout); default 75")
      ->type_name("N");
  run->add_option("--tier", o->tier,
                  "The lock's tier: integer LEVEL, optional NAME (recorded for "
                  "`tierlock status`)")
      ->type_name("LEVEL[:NAME]");
  run->add_option("--lock-name", o->lock_name,
                  "The lock file's name inside DIR (default .lock)")
      ->type_name("NAME");
  run->add_flag(
      "--create", o->create,
      "Create DIR if it does not exist (one level: its parent must exist)");
  run->add_flag(
      "-o,--close", o->close,
      "The command does not inherit the lock's descriptor (no TIERLOCK_FD). "
      "Risk: if tierlock is killed (SIGKILL, OOM), the lock is released while "
      "the command still runs");
  run->add_flag(
      "--refuse-unsafe", o->refuse_unsafe,
      "Refuse (exit 1) a lock file that another user could delete or replace; "
      "without it such a lock file only gets a warning");
  run->add_option("-c,--command", o->shell_command,
                  "Run STRING with /bin/sh -c (as flock -c); nothing may "
                  "follow DIR then. `DIR -c STRING` works too")
      ->type_name("STRING");
  run->add_flag(
      "--reentrant", o->reentrant,
      "If an ancestor process (an outer tierlock run) already holds this "
      "lock, run COMMAND under its hold instead of failing with exit 70 "
      "(a shared hold does not cover an exclusive run)");
  run->add_flag("--verbose", o->verbose,
                "Say on stderr who held the lock when the wait started, how "
                "long it took, and when it is released");
  run->add_flag("-q,--quiet", o->quiet,
                "No waiting message, no message when the lock is held, no "
                "unsafe-lock-file "
                "warning");
  run->add_option(
         "--backend", o->backend,
         "Hold a lease instead of a directory lock: postgres://… (lease table, "
         "fencing), postgres+advisory://…, "
         "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], sqlite:PATH "
         ", etcd://HOST[:PORT][,...]. No DIR then; the command gets "
         "TIERLOCK_TOKEN and is killed if tierlock dies")
      ->type_name("URL");
  run->add_option("--key", o->key, "The lease's key (with --backend)")
      ->type_name("NAME");
  run->add_option("--ttl", o->ttl_s,
                  "The lease's time-to-live, renewed every ttl/3 (with "
                  "--backend; default 30)")
      ->type_name("SECONDS");
  run->add_option(
         "--kill-after", o->kill_after_s,
         "When the lease is lost: SIGTERM to every process of the command, "
         "SIGKILL after this many seconds (with --backend; default min(5, "
         "ttl/3)); "
         "tierlock then exits 74")
      ->type_name("SECONDS");
  // Options end at the first operand: DIR, COMMAND and its arguments are
  // left unparsed (remaining()). A `--` before the first operand ends
  // the subcommand's parse in CLI11 2.1 and the rest is left to the parent
  // app (main.cc makes it a prefix command too).
  run->prefix_command();
  run->footer(
      "Exit codes: the command's status; 75 (or -E N) the lock is held; 64 "
      "usage; 70 an ancestor holds this lock (see --reentrant); 74 the lease "
      "was lost (--backend: the command was stopped); 66 "
      "no such directory; 77 permission denied; 126 command cannot be "
      "executed; 127 command not found; 129/130/143 SIGHUP/SIGINT/SIGTERM "
      "while "
      "waiting; 1 any other error (an unsafe lock file with --refuse-unsafe, a "
      "lock-order violation).\n"
      "Example: tierlock run -w 30 build/ make -j8\n"
      "Lease: tierlock run --backend sqlite:/var/lib/ci/leases.db --key "
      "nightly ./job.sh");
  run->callback([o, exit_code, run] {
    std::vector<std::string> operands = run->remaining();
    bool after_marker = false;
    if (operands.empty()) {
      operands = run->get_parent()->remaining();
      after_marker = !operands.empty();
    }
    *exit_code = run_run(*o, std::move(operands), after_marker);
  });
}

}  // namespace tierlock::cli

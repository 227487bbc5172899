// tierlock run --backend: hold a lease (tierlock/lease.h) while a command
// runs. Signals as for directory locks (run.cc): SIGINT/SIGTERM/SIGHUP are
// read from a signalfd; while waiting they cancel the acquire (nothing held),
// while the command runs they are forwarded to it. The lease is auto-renewed
// (ttl/3); if it is lost anyway (renewal failed, expired, connection gone),
// the command gets SIGTERM and tierlock says so.
#include "lease_run.h"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cli.h"
#include "tierlock/lease.h"
#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
#include "tierlock/lease_postgres.h"
#endif
#ifdef TIERLOCK_HAVE_LEASE_SQLITE
#include "tierlock/lease_sqlite.h"
#endif
#ifdef TIERLOCK_HAVE_LEASE_REDIS
#include "tierlock/lease_redis.h"
#endif

extern char** environ;

namespace tierlock::cli {
namespace {

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

void notify(int fd) {
  const std::uint64_t one = 1;
  while (::write(fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

// Makes the backend a URL names. kInvalidArgument for a URL no built backend
// takes (the message lists the forms).
absl::StatusOr<std::shared_ptr<LeaseBackend>> backend_for(const std::string& url) {
  const std::string forms =
      "postgres://… (lease table), postgres+advisory://…, redis://HOST[:PORT][/DB], "
      "sqlite:PATH";
#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
  for (const char* scheme : {"postgres://", "postgresql://", "postgres+advisory://",
                             "postgresql+advisory://"}) {
    if (!absl::StartsWith(url, scheme)) continue;
    PostgresLeaseOptions o;
    const bool advisory = absl::StrContains(scheme, "+advisory");
    o.mode = advisory ? PostgresLeaseOptions::Mode::kAdvisory
                      : PostgresLeaseOptions::Mode::kLeaseTable;
    o.conninfo = advisory ? "postgresql://" + url.substr(std::strlen(scheme)) : url;
    absl::StatusOr<std::shared_ptr<PostgresLeaseBackend>> b = PostgresLeaseBackend::create(o);
    if (!b.ok()) return b.status();
    return std::shared_ptr<LeaseBackend>(*b);
  }
#endif
#ifdef TIERLOCK_HAVE_LEASE_REDIS
  if (absl::StartsWith(url, "redis://")) {
    RedisLeaseOptions o;
    std::string rest = url.substr(8);
    if (const std::size_t slash = rest.find('/'); slash != std::string::npos) {
      if (!absl::SimpleAtoi(rest.substr(slash + 1), &o.database)) {
        return absl::InvalidArgumentError(absl::StrCat("--backend '", url, "': bad database"));
      }
      rest.resize(slash);
    }
    if (const std::size_t colon = rest.rfind(':'); colon != std::string::npos) {
      if (!absl::SimpleAtoi(rest.substr(colon + 1), &o.port)) {
        return absl::InvalidArgumentError(absl::StrCat("--backend '", url, "': bad port"));
      }
      rest.resize(colon);
    }
    if (!rest.empty()) o.host = rest;
    absl::StatusOr<std::shared_ptr<RedisLeaseBackend>> b = RedisLeaseBackend::create(o);
    if (!b.ok()) return b.status();
    return std::shared_ptr<LeaseBackend>(*b);
  }
#endif
#ifdef TIERLOCK_HAVE_LEASE_SQLITE
  if (absl::StartsWith(url, "sqlite:")) {
    SqliteLeaseOptions o;
    o.path = url.substr(7);
    absl::StatusOr<std::shared_ptr<SqliteLeaseBackend>> b = SqliteLeaseBackend::create(o);
    if (!b.ok()) return b.status();
    return std::shared_ptr<LeaseBackend>(*b);
  }
#endif
  return absl::InvalidArgumentError(absl::StrCat(
      "--backend '", url, "': not a backend this tierlock was built with (", forms, ")"));
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

int spawn_and_wait(const LeaseRunOptions& o, const Lease& lease, int signal_fd) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (absl::StartsWith(*e, "TIERLOCK_TOKEN=") || absl::StartsWith(*e, "TIERLOCK_LEASE_")) {
      continue;
    }
    env.emplace_back(*e);
  }
  if (lease.token()) env.push_back(absl::StrCat("TIERLOCK_TOKEN=", *lease.token()));
  env.push_back(absl::StrCat("TIERLOCK_LEASE_KEY=", lease.key()));
  env.push_back(absl::StrCat("TIERLOCK_LEASE_OWNER=", lease.owner_id()));
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = o.command;
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
  const int err =
      ::posix_spawnp(&child, argv[0], nullptr, &attr, argv.data(), envp.data());
  ::posix_spawnattr_destroy(&attr);
  if (err != 0) {
    if (err == ENOENT) {
      print_error(o.command[0], "command not found");
      return kCommandNotFound;
    }
    print_error(o.command[0], error_text(err));
    return err == EACCES || err == ENOEXEC || err == EISDIR ? kCannotExecute : kOther;
  }
  // lost() -> an eventfd this loop watches.
  Fd lost_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const int lost_raw = lost_fd.get();
  std::stop_callback on_lost(lease.lost(), [lost_raw] { notify(lost_raw); });
  bool lost_reported = false;
  for (;;) {
    siginfo_t info = {};
    if (::waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
        info.si_pid == child) {
      break;
    }
    struct pollfd fds[2] = {{signal_fd, POLLIN, 0}, {lost_raw, POLLIN, 0}};
    if (::poll(fds, lost_reported ? 1 : 2, -1) < 0 && errno != EINTR) break;
    if (fds[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (::read(signal_fd, &si, sizeof si) == sizeof si && si.ssi_signo != SIGCHLD) {
        ::kill(child, static_cast<int>(si.ssi_signo));
      }
    }
    if (!lost_reported && (fds[1].revents & POLLIN)) {
      lost_reported = true;
      if (!o.quiet) {
        print_error(absl::StrCat("lease '", printable(lease.key()), "'"),
                    "lost (not renewed in time, or the service said another owner "
                    "holds it); sending SIGTERM to the command");
      }
      ::kill(child, SIGTERM);
    }
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return kOther;
}

}  // namespace

int run_lease(const LeaseRunOptions& o) {
  const std::string what = absl::StrCat("lease '", printable(o.key), "'");
  if (o.command.empty()) {
    print_error("run", "no command given (usage: tierlock run --backend URL --key NAME -- COMMAND [ARG...])");
    return kUsage;
  }
  if (o.key.empty()) {
    print_error("--key", "required with --backend");
    return kUsage;
  }
  if (!std::isfinite(o.ttl_s) || o.ttl_s <= 0) {
    print_error("--ttl", absl::StrCat("must be a number of seconds > 0, not ", o.ttl_s));
    return kUsage;
  }
  if (o.timeout_s.has_value() && (!std::isfinite(*o.timeout_s) || *o.timeout_s < 0)) {
    print_error("--timeout", absl::StrCat("must be a number of seconds >= 0, not ", *o.timeout_s));
    return kUsage;
  }
  if (o.conflict_code < 1 || o.conflict_code > 255) {
    print_error("--conflict-exit-code", absl::StrCat("must be 1..255, not ", o.conflict_code));
    return kUsage;
  }
  if (absl::Status s = validate_lease_key(o.key); !s.ok()) {
    print_error("--key", s.message());
    return kUsage;
  }

  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&mask, s);
  ::pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  Fd signal_fd(::signalfd(-1, &mask, SFD_CLOEXEC));
  if (signal_fd.get() < 0) {
    print_error("signalfd", error_text(errno));
    return kOther;
  }

  absl::StatusOr<std::shared_ptr<LeaseBackend>> backend = backend_for(o.backend);
  if (!backend.ok()) {
    print_error("--backend", backend.status().message());
    return backend.status().code() == absl::StatusCode::kInvalidArgument
               ? kUsage
               : exit_code_for(backend.status());
  }
  LeaseOptions lease_options;
  if ((*backend)->capabilities().ttl) {
    lease_options.ttl = std::chrono::milliseconds(std::llround(o.ttl_s * 1000));
    lease_options.auto_renew = true;
  }
  absl::StatusOr<LeaseLock> locks = LeaseLock::create(*backend, lease_options);
  if (!locks.ok()) {
    print_error("--ttl", locks.status().message());
    return kUsage;
  }

  // One try first: no thread when the key is free.
  absl::StatusOr<std::optional<Lease>> tried = locks->try_acquire(o.key);
  if (!tried.ok()) {
    print_error(what, tried.status().message());
    return exit_code_for(tried.status());
  }
  std::optional<Lease> lease = *std::move(tried);
  if (!lease.has_value()) {
    if (o.no_wait || (o.timeout_s.has_value() && *o.timeout_s == 0)) {
      if (!o.quiet) print_error(what, "held by another owner");
      return o.conflict_code;
    }
    if (!o.quiet) print_error(what, "held by another owner; waiting");
    Fd done(::eventfd(0, EFD_CLOEXEC));
    std::stop_source stop;
    AcquireOptions options;
    options.stop = stop.get_token();
    if (o.timeout_s) {
      options.timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::duration<double>(*o.timeout_s));
    }
    absl::StatusOr<Lease> got = absl::UnknownError("not run");
    std::thread waiter([&] {
      got = locks->acquire(o.key, std::move(options));
      notify(done.get());
    });
    int signal_received = 0;
    for (;;) {
      struct pollfd fds[2] = {{done.get(), POLLIN, 0}, {signal_fd.get(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0 && errno == EINTR) continue;
      if (fds[1].revents & POLLIN) {
        struct signalfd_siginfo si;
        if (::read(signal_fd.get(), &si, sizeof si) == sizeof si && si.ssi_signo != SIGCHLD &&
            signal_received == 0) {
          signal_received = static_cast<int>(si.ssi_signo);
          stop.request_stop();
        }
      }
      if (fds[0].revents & POLLIN) break;
    }
    waiter.join();
    if (signal_received != 0) {
      if (got.ok()) (void)got->release();
      print_error(what, absl::StrCat("interrupted by ", signal_name(signal_received),
                                     " while waiting; nothing held"));
      return 128 + signal_received;
    }
    if (!got.ok()) {
      if (got.status().code() == absl::StatusCode::kDeadlineExceeded) {
        if (!o.quiet) print_error(what, absl::StrCat("timed out after ", *o.timeout_s, " s"));
        return o.conflict_code;
      }
      print_error(what, got.status().message());
      return exit_code_for(got.status());
    }
    lease.emplace(*std::move(got));
  }
  const int code = spawn_and_wait(o, *lease, signal_fd.get());
  absl::StatusOr<bool> released = lease->release();
  if (!released.ok()) {
    print_error(what, released.status().message());
  } else if (!*released && !o.quiet) {
    print_error(what, "was lost before the command finished");
  }
  return code;
}

}  // namespace tierlock::cli

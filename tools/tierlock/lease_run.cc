// tierlock run --backend: hold a lease (tierlock/lease.h) while a command
// runs. Signals as for directory locks (run.cc): SIGINT/SIGTERM/SIGHUP are
// read from a signalfd; while waiting they cancel the acquire (nothing held),
// while the command runs they are forwarded to it. The lease is auto-renewed
// (ttl/3); if it is lost anyway (renewal failed, expired, connection gone),
// every process of the command gets SIGTERM, SIGKILL after --kill-after,
// and tierlock exits kLeaseLost. The supervisor's watchdog does the same
// (SIGKILL at once) if this process is stopped past the lease's validity.
#include "lease_run.h"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli.h"
#include "process.h"
#include "tierlock/lease.h"
#include "tierlock/text.h"
#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
#include "tierlock/lease_postgres.h"
#endif
#ifdef TIERLOCK_HAVE_LEASE_SQLITE
#include "tierlock/lease_sqlite.h"
#endif
#ifdef TIERLOCK_HAVE_LEASE_REDIS
#include "tierlock/lease_redis.h"
#endif
#ifdef TIERLOCK_HAVE_LEASE_ETCD
#include "tierlock/lease_etcd.h"
#endif

extern char** environ;

namespace tierlock::cli {
namespace {

// Makes the backend a URL names. kInvalidArgument for a URL no built backend
// takes (the message lists the forms).
absl::StatusOr<std::shared_ptr<LeaseBackend>> backend_for(
    const std::string& url) {
  const std::string forms =
      "postgres://… (lease table), postgres+advisory://…, "
      "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], "
      "sqlite:PATH, etcd://HOST[:PORT][,HOST[:PORT]...]";
#ifdef TIERLOCK_HAVE_LEASE_POSTGRES
  for (const char* scheme :
       {"postgres://", "postgresql://", "postgres+advisory://",
        "postgresql+advisory://"}) {
    if (!absl::StartsWith(url, scheme)) continue;
    PostgresLeaseOptions o;
    const bool advisory = absl::StrContains(scheme, "+advisory");
    o.mode = advisory ? PostgresLeaseOptions::Mode::kAdvisory
                      : PostgresLeaseOptions::Mode::kLeaseTable;
    o.conninfo =
        advisory ? "postgresql://" + url.substr(std::strlen(scheme)) : url;
    absl::StatusOr<std::shared_ptr<PostgresLeaseBackend>> b =
        PostgresLeaseBackend::create(o);
    if (!b.ok()) return b.status();
    return std::shared_ptr<LeaseBackend>(*b);
  }
#endif
#ifdef TIERLOCK_HAVE_LEASE_REDIS
  if (absl::StartsWith(url, "redis://")) {
    // from_url takes the credentials too; its errors hide the password.
    absl::StatusOr<RedisLeaseOptions> o = RedisLeaseOptions::from_url(url);
    if (!o.ok()) return o.status();
    absl::StatusOr<std::shared_ptr<RedisLeaseBackend>> b =
        RedisLeaseBackend::create(*o);
    if (!b.ok()) return b.status();
    return std::shared_ptr<LeaseBackend>(*b);
  }
#endif
#ifdef TIERLOCK_HAVE_LEASE_ETCD
  if (absl::StartsWith(url, "etcd://")) {
    absl::StatusOr<EtcdLeaseOptions> o = EtcdLeaseOptions::from_url(url);
    if (!o.ok()) return o.status();
    absl::StatusOr<std::shared_ptr<EtcdLeaseBackend>> b =
        EtcdLeaseBackend::create(*o);
    if (!b.ok()) return b.status();
    return std::shared_ptr<LeaseBackend>(*b);
  }
#endif
#ifdef TIERLOCK_HAVE_LEASE_SQLITE
  if (absl::StartsWith(url, "sqlite:")) {
    SqliteLeaseOptions o;
    o.path = url.substr(7);
    absl::StatusOr<std::shared_ptr<SqliteLeaseBackend>> b =
        SqliteLeaseBackend::create(o);
    if (!b.ok()) return b.status();
    return std::shared_ptr<LeaseBackend>(*b);
  }
#endif
  return absl::InvalidArgumentError(absl::StrCat(
      "--backend '", redact_url(url),
      "': not a backend this tierlock was built with (", forms, ")"));
}

// "held by pid 12 'job' on host since ..., token 7" when the backend can
// say who holds `key`, else "held by another owner".
std::string held_by(const LeaseLock& locks, const std::string& key) {
  absl::StatusOr<std::optional<Holder>> h = locks.holder(key);
  if (!h.ok() || !h->has_value()) return "held by another owner";
  return absl::StrCat("held by ", describe_lease_holder(**h));
}

// Runs the command under the supervisor and waits for it, forwarding
// signals. Returns the command's status, or kLeaseLost if the lease was lost
// while it ran (then the command was stopped: by the supervisor on our
// request, SIGTERM and SIGKILL after `grace`, or by its watchdog if we did
// not move the deadline on in time).
int spawn_and_wait(const LeaseRunOptions& o, const Lease& lease, int signal_fd,
                   std::chrono::nanoseconds grace) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (absl::StartsWith(*e, "TIERLOCK_TOKEN=") ||
        absl::StartsWith(*e, "TIERLOCK_LEASE_")) {
      continue;
    }
    env.emplace_back(*e);
  }
  if (lease.token())
    env.push_back(absl::StrCat("TIERLOCK_TOKEN=", *lease.token()));
  env.push_back(absl::StrCat("TIERLOCK_LEASE_KEY=", lease.key()));
  env.push_back(absl::StrCat("TIERLOCK_LEASE_OWNER=", lease.owner_id()));
  int exit_code = kOther;
  // Supervised: if this process dies (SIGKILL, OOM), the lease is no longer
  // renewed (and an advisory lock goes with the connection), so the command
  // and everything it started is killed rather than run on with a stale
  // token. If this process is stopped or stalls, it cannot say anything, so
  // the supervisor holds the lease's validity as an absolute deadline and
  // kills the tree itself when it passes (spawn_supervised).
  //
  // The supervisor's deadline is a little before valid_until(): killing a
  // tree and seeing it die takes time (tens of ms on a loaded machine), and
  // valid_until() is only the clock-drift margin ahead of the service's own
  // expiry. ttl/20, within [20 ms, 500 ms].
  const auto stop_margin =
      std::clamp(std::chrono::milliseconds(std::llround(o.ttl_s * 50)),
                 std::chrono::milliseconds(20), std::chrono::milliseconds(500));
  SupervisorOptions supervisor_options;
  std::chrono::steady_clock::time_point deadline = lease.valid_until();
  supervisor_options.deadline = deadline - stop_margin;
  supervisor_options.grace = grace;
  Supervised child = spawn_supervised(o.command, std::move(env),
                                      supervisor_options, &exit_code);
  if (child.pid < 0) return exit_code;
  // lost() -> an eventfd the wait watches.
  Fd lost_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const int lost_raw = lost_fd.get();
  std::stop_callback on_lost(lease.lost(), [lost_raw] { notify(lost_raw); });
  const std::string what = absl::StrCat("lease '", lease.key(), "'");
  // Renewals come every ttl/3: a new valid_until reaches the supervisor
  // within a tenth of the ttl of it (bounded to 10 ms..1 s).
  const auto refresh = std::clamp(
      std::chrono::milliseconds(std::llround(o.ttl_s * 100)),
      std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
  bool lost = false;
  bool watch_control = true;
  const auto watchdog_fired = [&] {
    lost = true;
    watch_control = false;
    if (!o.quiet) {
      print_error(
          what,
          "not renewed in time (the service did not answer before the end of "
          "its validity, or tierlock was stopped or stalled); the command and "
          "its processes were killed");
    }
  };
  for (;;) {
    // Not reaped until it is known to have exited (WNOWAIT), so the pid is
    // never a reused one when a signal is forwarded.
    siginfo_t info = {};
    if (::waitid(P_PID, static_cast<id_t>(child.pid), &info,
                 WEXITED | WNOHANG | WNOWAIT) == 0 &&
        info.si_pid == child.pid) {
      break;
    }
    struct pollfd fds[3] = {
        {signal_fd, POLLIN, 0},
        {watch_control ? child.control.get() : -1, POLLIN, 0},
        {lost ? -1 : lost_raw, POLLIN, 0}};
    if (::poll(fds, 3, static_cast<int>(refresh.count())) < 0 && errno != EINTR)
      break;
    if (fds[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (::read(signal_fd, &si, sizeof si) == sizeof si &&
          si.ssi_signo != SIGCHLD) {
        ::kill(child.pid, static_cast<int>(si.ssi_signo));
      }
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (supervisor_watchdog_fired(child.control.get())) {
        watchdog_fired();
      } else {
        watch_control = false;  // closed: the supervisor is exiting
      }
    }
    if (!lost && (fds[2].revents & POLLIN)) {
      lost = true;
      if (!o.quiet) {
        print_error(
            what, absl::StrCat(
                      "lost (not renewed in time, or the service said another "
                      "owner holds it); stopping the command: SIGTERM to its "
                      "processes, SIGKILL after ",
                      human_duration(grace)));
      }
      supervisor_stop(child.control.get());
    }
    if (!lost) {
      const auto valid_until = lease.valid_until();
      if (valid_until != deadline) {
        deadline = valid_until;
        supervisor_set_deadline(child.control.get(), deadline - stop_margin);
      }
    }
  }
  int status = 0;
  while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!lost && watch_control && supervisor_watchdog_fired(child.control.get()))
    watchdog_fired();
  // Lost just as the command ended: part of its run may have been unleased.
  if (!lost && lease.lost().stop_requested()) {
    lost = true;
    if (!o.quiet) print_error(what, "lost while the command was running");
  }
  if (lost) return kLeaseLost;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return kOther;
}

}  // namespace

int run_lease(const LeaseRunOptions& o) {
  const std::string what =
      absl::StrCat("lease '", o.key, "'");  // print_error escapes it
  if (o.command.empty()) {
    print_error("run",
                "no command given (usage: tierlock run --backend URL --key "
                "NAME -- COMMAND [ARG...])");
    return kUsage;
  }
  if (o.key.empty()) {
    print_error("--key", "required with --backend");
    return kUsage;
  }
  // Bounded above too: milliseconds of a huge double would overflow.
  if (!std::isfinite(o.ttl_s) || o.ttl_s <= 0 || o.ttl_s >= kForeverSeconds) {
    print_error("--ttl", absl::StrCat("must be a number of seconds > 0 and < ",
                                      kForeverSeconds, ", not ", o.ttl_s));
    return kUsage;
  }
  std::optional<std::chrono::nanoseconds> timeout;
  if (o.timeout.has_value() && !parse_timeout(*o.timeout, &timeout)) {
    print_error("--timeout",
                absl::StrCat("must be a number of seconds >= 0 (huge or 'inf': "
                             "no timeout), not '",
                             escape_text(*o.timeout), "'"));
    return kUsage;
  }
  if (o.conflict_code < 1 || o.conflict_code > 255) {
    print_error("--conflict-exit-code",
                absl::StrCat("must be 1..255, not ", o.conflict_code));
    return kUsage;
  }
  // Well below the TTL, so a command that ignores SIGTERM is gone long
  // before a lease of the next owner would be (docs/cli.md).
  const double kill_after_s =
      o.kill_after_s.value_or(std::min(5.0, o.ttl_s / 3));
  if (!std::isfinite(kill_after_s) || kill_after_s < 0 ||
      kill_after_s >= kForeverSeconds) {
    print_error("--kill-after",
                absl::StrCat("must be a number of seconds >= 0 and < ",
                             kForeverSeconds, ", not ", kill_after_s));
    return kUsage;
  }
  const auto grace = std::chrono::nanoseconds(std::llround(kill_after_s * 1e9));
  if (absl::Status s = validate_lease_key(o.key); !s.ok()) {
    print_error("--key", s.message());
    return kUsage;
  }

  // Before any thread exists (see take_signals).
  Fd signal_fd = take_signals();
  if (signal_fd.get() < 0) return kOther;

  absl::StatusOr<std::shared_ptr<LeaseBackend>> backend =
      backend_for(o.backend);
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
    if (o.no_wait || (timeout.has_value() && timeout->count() == 0)) {
      if (!o.quiet) print_error(what, held_by(*locks, o.key));
      return o.conflict_code;
    }
    if (!o.quiet) {
      print_error(what, absl::StrCat(held_by(*locks, o.key), "; waiting"));
    }
    const auto started = std::chrono::steady_clock::now();
    AcquireOptions options;
    options.timeout = timeout;
    absl::StatusOr<Lease> got = absl::UnknownError("not run");
    int signal_received = 0;
    absl::Status watched = wait_cancellable(
        [&](std::stop_token stop) {
          options.stop = std::move(stop);
          got = locks->acquire(o.key, std::move(options));
        },
        signal_fd.get(), &signal_received);
    if (!watched.ok()) {
      print_error(what, watched.message());
      return exit_code_for(watched);
    }
    if (signal_received != 0) {
      if (got.ok()) (void)got->release();
      print_error(what,
                  absl::StrCat("interrupted by ", signal_name(signal_received),
                               " while waiting; nothing held"));
      return 128 + signal_received;
    }
    if (!got.ok()) {
      if (got.status().code() == absl::StatusCode::kDeadlineExceeded) {
        if (!o.quiet)
          print_error(
              what,
              absl::StrCat(
                  "timed out after ",
                  human_duration(std::chrono::steady_clock::now() - started),
                  " (", held_by(*locks, o.key), ")"));
        return o.conflict_code;
      }
      print_error(what, got.status().message());
      return exit_code_for(got.status());
    }
    lease.emplace(*std::move(got));
  }
  const int code = spawn_and_wait(o, *lease, signal_fd.get(), grace);
  absl::StatusOr<bool> released = lease->release();
  if (!released.ok()) {
    print_error(what, released.status().message());
  } else if (!*released && !o.quiet && code != kLeaseLost) {  // already said
    print_error(what, "was lost before the command finished");
  }
  return code;
}

int run_lease_status(const LeaseStatusOptions& o) {
  if (absl::Status s = validate_lease_key(o.key); !s.ok()) {
    print_error("--key", s.message());
    return kUsage;
  }
  absl::StatusOr<std::shared_ptr<LeaseBackend>> backend =
      backend_for(o.backend);
  if (!backend.ok()) {
    print_error("--backend", backend.status().message());
    return backend.status().code() == absl::StatusCode::kInvalidArgument
               ? kUsage
               : kOther;
  }
  absl::StatusOr<LeaseLock> locks = LeaseLock::create(*backend);
  if (!locks.ok()) {
    print_error("--backend", locks.status().message());
    return kOther;
  }
  absl::StatusOr<std::optional<Holder>> h = locks->holder(o.key);
  if (!h.ok()) {
    print_error(absl::StrCat("lease '", o.key, "'"), h.status().message());
    return kOther;
  }
  print_lease_status(redact_url(o.backend), (*backend)->name(), o.key, *h,
                     o.json);
  return kOk;
}

}  // namespace tierlock::cli

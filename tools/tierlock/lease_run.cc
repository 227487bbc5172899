// tierlock run --backend: hold a lease (tierlock/lease.h) while a command
// runs. Signals as for directory locks (run.cc): SIGINT/SIGTERM/SIGHUP are
// read from a signalfd; while waiting they cancel the acquire (nothing held),
// while the command runs they are forwarded to it. The lease is auto-renewed
// (ttl/3); if it is lost anyway (renewal failed, expired, connection gone),
// the command gets SIGTERM and tierlock says so.
#include "lease_run.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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

extern char** environ;

namespace tierlock::cli {
namespace {


// Makes the backend a URL names. kInvalidArgument for a URL no built backend
// takes (the message lists the forms).
absl::StatusOr<std::shared_ptr<LeaseBackend>> backend_for(const std::string& url) {
  const std::string forms =
      "postgres://… (lease table), postgres+advisory://…, "
      "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], "
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
    // from_url takes the credentials too; its errors hide the password.
    absl::StatusOr<RedisLeaseOptions> o = RedisLeaseOptions::from_url(url);
    if (!o.ok()) return o.status();
    absl::StatusOr<std::shared_ptr<RedisLeaseBackend>> b = RedisLeaseBackend::create(*o);
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
      "--backend '", redact_url(url), "': not a backend this tierlock was built with (", forms, ")"));
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
  int exit_code = kOther;
  // Supervised: if this process dies (SIGKILL, OOM), the lease is no longer
  // renewed (and an advisory lock goes with the connection), so the command
  // and everything it started is killed rather than run on with a stale
  // token (spawn_supervised).
  const pid_t child = spawn_supervised(o.command, std::move(env), &exit_code);
  if (child < 0) return exit_code;
  // lost() -> an eventfd the wait watches: the command gets SIGTERM.
  Fd lost_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const int lost_raw = lost_fd.get();
  std::stop_callback on_lost(lease.lost(), [lost_raw] { notify(lost_raw); });
  return wait_forwarding(child, signal_fd, lost_raw, [&] {
    if (!o.quiet) {
      print_error(absl::StrCat("lease '", lease.key(), "'"),
                  "lost (not renewed in time, or the service said another owner "
                  "holds it); sending SIGTERM to the command");
    }
    ::kill(child, SIGTERM);
  });
}

}  // namespace

int run_lease(const LeaseRunOptions& o) {
  const std::string what = absl::StrCat("lease '", o.key, "'");  // print_error escapes it
  if (o.command.empty()) {
    print_error("run", "no command given (usage: tierlock run --backend URL --key NAME -- COMMAND [ARG...])");
    return kUsage;
  }
  if (o.key.empty()) {
    print_error("--key", "required with --backend");
    return kUsage;
  }
  // Bounded above too: milliseconds of a huge double would overflow.
  if (!std::isfinite(o.ttl_s) || o.ttl_s <= 0 || o.ttl_s >= kForeverSeconds) {
    print_error("--ttl", absl::StrCat("must be a number of seconds > 0 and < ", kForeverSeconds,
                                      ", not ", o.ttl_s));
    return kUsage;
  }
  std::optional<std::chrono::nanoseconds> timeout;
  if (o.timeout.has_value() && !parse_timeout(*o.timeout, &timeout)) {
    print_error("--timeout", absl::StrCat("must be a number of seconds >= 0 (huge or 'inf': "
                                          "no timeout), not '",
                                          escape_text(*o.timeout), "'"));
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

  // Before any thread exists (see take_signals).
  Fd signal_fd = take_signals();
  if (signal_fd.get() < 0) return kOther;

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
    if (o.no_wait || (timeout.has_value() && timeout->count() == 0)) {
      if (!o.quiet) print_error(what, "held by another owner");
      return o.conflict_code;
    }
    if (!o.quiet) print_error(what, "held by another owner; waiting");
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
      print_error(what, absl::StrCat("interrupted by ", signal_name(signal_received),
                                     " while waiting; nothing held"));
      return 128 + signal_received;
    }
    if (!got.ok()) {
      if (got.status().code() == absl::StatusCode::kDeadlineExceeded) {
        if (!o.quiet) print_error(what, absl::StrCat("timed out after ", escape_text(*o.timeout), " s"));
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

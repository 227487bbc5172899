// tools/tierlock/lease_run.h
//
// `tierlock run --backend URL --key NAME`: run a command under a lease
// (tierlock/lease.h) instead of a directory lock:
//   LeaseRunOptions - the lease-specific options of `tierlock run`.
//   run_lease       - acquires, runs the command with TIERLOCK_TOKEN, releases.
//   LeaseStatusOptions / run_lease_status - `tierlock status --backend URL
//                     --key K`: who holds the lease (LeaseLock::holder).
#ifndef TIERLOCK_TOOLS_TIERLOCK_LEASE_RUN_H_
#define TIERLOCK_TOOLS_TIERLOCK_LEASE_RUN_H_

#include <optional>
#include <string>
#include <vector>

namespace tierlock::cli {

struct LeaseRunOptions {
  std::string
      backend;  // postgres://…, postgres+advisory://…, redis://…, sqlite:PATH
  std::string key;
  double ttl_s = 30;
  bool no_wait = false;
  std::optional<std::string> timeout;  // --timeout as given (parse_timeout)
  int conflict_code = 75;
  bool quiet = false;
  // --kill-after: SIGTERM to SIGKILL when the lease is lost; nullopt means
  // the default, min(5 s, ttl/3).
  std::optional<double> kill_after_s;
  std::vector<std::string> command;
};

// Returns the exit code (docs/cli.md, "Leases").
int run_lease(const LeaseRunOptions& options);

struct LeaseStatusOptions {
  std::string backend;  // as for LeaseRunOptions
  std::string key;
  bool json = false;
};

// Prints who holds the lease (print_lease_status, status.cc). Returns 0, or
// 1 after an error line (the backend cannot be reached or cannot tell), or
// 64 for a URL no built backend takes. In the `tierlock` command: execs
// `tierlock-lease`, as run_lease does.
int run_lease_status(const LeaseStatusOptions& options);

}  // namespace tierlock::cli

#endif  // TIERLOCK_TOOLS_TIERLOCK_LEASE_RUN_H_

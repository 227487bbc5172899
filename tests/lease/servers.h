// tests/lease/servers.h
//
// Real database servers for the lease tests: each
// on 127.0.0.1, a free port, a temporary data directory, started and stopped
// by the test (never a system service, never a fixed port):
//   PostgresServer - initdb + pg_ctl as the `postgres` user (setpriv).
//   RedisServer    - redis-server --daemonize.
//   PgbouncerServer - pgbouncer in front of a PostgresServer, as the
//                    `postgres` user (it refuses to run as root).
//   free_port      - a port nobody listens on right now.
// start() returns an error naming the missing program or the failed step;
// tests treat that as a failure, not a skip (CI installs the servers).
#ifndef TIERLOCK_TESTS_LEASE_SERVERS_H_
#define TIERLOCK_TESTS_LEASE_SERVERS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "support/temp_dir.h"

namespace tierlock::testing {

// `s` quoted for /bin/sh (single quotes; an embedded quote as '\'').
std::string sh_quote(const std::string& s);

int free_port();

class PostgresServer {
 public:
  static absl::StatusOr<std::unique_ptr<PostgresServer>> start();
  ~PostgresServer();  // stops (immediate) and removes the data directory
  int port() const { return port_; }
  // A libpq connection string for database `postgres` as user `tl`.
  std::string conninfo() const;
  // Stops (-m immediate: a crash) / starts again on the same port and data.
  absl::Status stop();
  absl::Status restart_server();
  // The log, for failure messages.
  std::string log() const;

 private:
  PostgresServer() = default;
  absl::Status pg_ctl(const std::string& args);
  absl::Status init_data();
  TempDir dir_;
  std::string bin_;
  int port_ = 0;
  bool running_ = false;
};

class RedisServer {
 public:
  static absl::StatusOr<std::unique_ptr<RedisServer>> start();
  ~RedisServer();  // SIGKILLs it
  int port() const { return port_; }
  std::string url() const {
    return "redis://127.0.0.1:" + std::to_string(port_);
  }
  absl::Status stop();            // SIGKILL, waits until gone
  absl::Status restart_server();  // starts again on the same port (empty data)
  // Runs redis-cli with `args`; returns its stdout.
  absl::StatusOr<std::string> cli(const std::string& args);

 private:
  RedisServer() = default;
  absl::Status launch();
  TempDir dir_;
  int port_ = 0;
  int pid_ = -1;
};

class PgbouncerServer {
 public:
  struct Options {
    std::string pool_mode = "transaction";  // session | transaction | statement
    int pool_size = 2;                      // server connections per database
    // pgbouncer's server_round_robin: hand out idle server connections in
    // turn instead of the most recently used one first (LIFO, its default).
    bool round_robin = false;
  };
  static absl::StatusOr<std::unique_ptr<PgbouncerServer>> start(
      const PostgresServer& backend, Options options);
  ~PgbouncerServer();  // SIGKILLs it
  int port() const { return port_; }
  // A libpq connection string for database `postgres` as user `tl`.
  std::string conninfo() const;
  std::string log() const;

 private:
  PgbouncerServer() = default;
  absl::Status launch(const PostgresServer& backend, const Options& options);
  TempDir dir_;
  int port_ = 0;
  int pid_ = -1;
};

// The process-wide shared servers of a test binary (started on first use,
// stopped at exit by a gtest Environment). Tests use unique keys.
PostgresServer& shared_postgres();
RedisServer& shared_redis();

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_LEASE_SERVERS_H_

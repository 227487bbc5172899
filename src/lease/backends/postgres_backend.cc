// src/lease/postgres_backend.cc
//
// PostgresLeaseBackend (tierlock/lease_postgres.h). Every statement goes
// through Pg::run: PQsendQueryParams, then poll(2) on the socket (and on a
// stop pipe) until the result, a deadline or a stop; a deadline or stop sends
// PQcancel and the caller closes the connection if it cannot prove what the
// statement did.
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/string_util.h"
#include "lease/backends/conn_pool.h"
#include "lease/backends/fair_wait.h"
#include "lease/grant_meta.h"
#include "lease/lease_state.h"
#include "tierlock/lease_postgres.h"

namespace tierlock {

using internal::SteadyTime;
using internal::to_absl;

namespace {

using Clock = std::chrono::steady_clock;

struct PgFree {
  void operator()(PGconn* c) const { PQfinish(c); }
  void operator()(PGresult* r) const { PQclear(r); }
};
using Conn = std::unique_ptr<PGconn, PgFree>;
using Result = std::unique_ptr<PGresult, PgFree>;

std::string pg_error(PGconn* c) {
  std::string m = c ? PQerrorMessage(c) : "out of memory";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  std::replace(m.begin(), m.end(), '\n', ' ');
  return m;
}

// Returns `message` (from libpq, about `conninfo`) safe to show: libpq
// quotes parts of a connection string it cannot parse ("invalid
// percent-encoded token: \"s3cr%zzet\"", "missing \"=\" after \"cret\""), so
// for a malformed one that holds a password its detail is withheld; otherwise
// the password's value is hidden wherever it appears, and every URL and
// password=... in the message is redacted (redact_url).
std::string redacted(std::string message, const std::string& conninfo) {
  const bool has_password = redact_url(conninfo) != conninfo;
  if (conninfo.find('=') != std::string::npos ||
      conninfo.find("://") != std::string::npos) {
    char* parse_error = nullptr;
    PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &parse_error);
    PQfreemem(parse_error);
    if (parsed == nullptr && has_password) {
      return absl::StrCat(
          "malformed connection string '", redact_url(conninfo),
          "' (libpq's detail withheld: it may quote the password)");
    }
    for (PQconninfoOption* o = parsed; o != nullptr && o->keyword != nullptr;
         ++o) {
      const std::string_view key = o->keyword;
      if (o->val == nullptr || *o->val == '\0' || key.size() < 8 ||
          key.substr(key.size() - 8) != "password") {
        continue;
      }
      const std::string secret = o->val;
      for (std::size_t at = message.find(secret); at != std::string::npos;
           at = message.find(secret, at + 3)) {
        message.replace(at, secret.size(), "***");
      }
    }
    PQconninfoFree(parsed);
  }
  return redact_url(message);
}

absl::StatusOr<Conn> connect(const std::string& conninfo,
                             std::chrono::milliseconds io_timeout) {
  // libpq's connect_timeout is whole seconds, at least 2.
  const std::string connect_timeout = std::to_string(
      std::max<std::int64_t>(2, (io_timeout.count() + 999) / 1000));
  // Ours first, the caller's conninfo (expanded from dbname) last: it wins.
  const char* keys[] = {
      "keepalives",       "keepalives_idle",  "keepalives_interval",
      "keepalives_count", "tcp_user_timeout", "connect_timeout",
      "application_name", "dbname",           nullptr};
  const char* values[] = {"1",        "10",
                          "5",        "3",
                          "10000",    connect_timeout.c_str(),
                          "tierlock", conninfo.c_str(),
                          nullptr};
  Conn c(PQconnectdbParams(keys, values, /*expand_dbname=*/1));
  if (!c || PQstatus(c.get()) != CONNECTION_OK) {
    return absl::UnavailableError(absl::StrCat(
        "connect to PostgreSQL: ", redacted(pg_error(c.get()), conninfo)));
  }
  // A library does not write the server's notices to stderr.
  PQsetNoticeProcessor(
      c.get(), [](void*, const char*) {}, nullptr);
  if (PQsetnonblocking(c.get(), 1) != 0) {
    return absl::UnavailableError(absl::StrCat(
        "PQsetnonblocking: ", redacted(pg_error(c.get()), conninfo)));
  }
  return c;
}

using internal::StopPipe;

enum class Outcome { kDone, kTimedOut, kStopped, kBroken };

struct RunResult {
  Outcome outcome = Outcome::kBroken;
  Result result;      // kDone: the last result
  std::string error;  // kBroken: why
};

// Sends `sql` and waits for its result. On deadline/stop, sends PQcancel and
// returns kTimedOut/kStopped; the connection is then in an unknown state and
// the caller must close it (or drain it).
//
// `cancel`: send PQcancel on deadline/stop (a blocked pg_advisory_lock must
// leave the server's wait queue at once). Ordinary statements do not: the
// caller closes the connection, which ends them, and libpq 15's PQcancel
// blocks (no timeout) when the network is frozen.
RunResult run(PGconn* c, const char* sql,
              const std::vector<std::string>& params, SteadyTime deadline,
              const std::stop_token& stop = {}, bool cancel = false) {
  RunResult out;
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const std::string& p : params) values.push_back(p.c_str());
  // Without parameters: the simple protocol, which allows several statements.
  const int sent =
      values.empty()
          ? PQsendQuery(c, sql)
          : PQsendQueryParams(c, sql, static_cast<int>(values.size()), nullptr,
                              values.data(), nullptr, nullptr, 0);
  if (sent == 0) {
    out.error = pg_error(c);
    return out;
  }
  StopPipe stop_pipe(stop);
  for (;;) {
    const int flushed = PQflush(c);
    if (flushed < 0) {
      out.error = pg_error(c);
      return out;
    }
    if (flushed == 0 && !PQisBusy(c)) break;
    if (stop.stop_requested() || Clock::now() >= deadline) {
      out.outcome =
          stop.stop_requested() ? Outcome::kStopped : Outcome::kTimedOut;
      if (PGcancel* request = cancel ? PQgetCancel(c) : nullptr) {
        char buf[256];
        (void)PQcancel(request, buf, sizeof buf);
        PQfreeCancel(request);
      }
      return out;
    }
    pollfd fds[2] = {
        {PQsocket(c), static_cast<short>(POLLIN | (flushed ? POLLOUT : 0)), 0},
        {stop_pipe.fd(), POLLIN, 0}};
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    const int timeout =
        static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 60'000));
    const int n = ::poll(fds, stop_pipe.fd() >= 0 ? 2 : 1, timeout);
    if (n < 0 && errno != EINTR) {
      out.error = "poll failed";
      return out;
    }
    if (n > 0 && (fds[0].revents & (POLLIN | POLLERR | POLLHUP)) != 0) {
      if (PQconsumeInput(c) == 0) {
        out.error = pg_error(c);
        return out;
      }
    }
  }
  Result last;
  while (PGresult* r = PQgetResult(c)) last.reset(r);
  if (!last) {
    out.error = pg_error(c);
    return out;
  }
  const ExecStatusType st = PQresultStatus(last.get());
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    std::string m = PQresultErrorMessage(last.get());
    while (!m.empty() && m.back() == '\n') m.pop_back();
    out.error = m;
    out.result = std::move(last);
    return out;  // kBroken with a server error
  }
  out.outcome = Outcome::kDone;
  out.result = std::move(last);
  return out;
}

// Runs a statement bounded by io_timeout; any failure is an error status.
absl::StatusOr<Result> run_checked(PGconn* c, const char* what, const char* sql,
                                   const std::vector<std::string>& params,
                                   std::chrono::milliseconds io_timeout) {
  RunResult r = run(c, sql, params, Clock::now() + io_timeout);
  switch (r.outcome) {
    case Outcome::kDone:
      return std::move(r.result);
    case Outcome::kTimedOut:
    case Outcome::kStopped:
      return absl::UnavailableError(absl::StrCat(
          what, ": no answer within ", io_timeout.count(), " ms (cancelled)"));
    case Outcome::kBroken:
      break;
  }
  return absl::UnavailableError(absl::StrCat(what, ": ", r.error));
}

bool bool_value(const Result& r) {
  return PQntuples(r.get()) > 0 && PQgetvalue(r.get(), 0, 0)[0] == 't';
}

bool valid_identifier(const std::string& s) {
  if (s.empty() || s.size() > 48) return false;
  if (!(std::islower(static_cast<unsigned char>(s[0])) || s[0] == '_'))
    return false;
  return std::all_of(s.begin(), s.end(), [](char ch) {
    const auto u = static_cast<unsigned char>(ch);
    return std::islower(u) || std::isdigit(u) || ch == '_';
  });
}

}  // namespace

// The backend's state, shared with its sessions. Lease-table mode keeps its
// connections in a pool: a statement takes one (waiting for the background
// connector if none is ready, bounded like any wait), gives it back after a
// clean answer, or drops it (closed at once, which also ends a statement the
// server may still be running) after any failure or timeout, and the
// connector opens a replacement in the background, retrying with backoff
// while the server is unreachable. No lock is held across I/O, so a lease
// whose connection froze never holds up another lease.
struct PostgresLeaseBackend::Shared {
  PostgresLeaseOptions options;
  std::shared_ptr<internal::ConnPool<Conn>> pool;  // lease-table mode only
  std::string sql_acquire, sql_extend, sql_release, sql_holder;
  // Lease-table waiters: join (or refresh), grab at the head, leave.
  std::string sql_join, sql_wait_grab, sql_leave;

  ~Shared() {
    if (pool) pool->shutdown();
  }

  // Runs one statement, each wait (for a connection too) bounded by
  // io_timeout and by `deadline` (a renewal passes the lease's validity).
  // `sent` (optional) is set once a connection was had: the statement may
  // then have reached the server.
  absl::StatusOr<Result> exec(
      const char* what, const std::string& sql,
      const std::vector<std::string>& params,
      Clock::time_point deadline = Clock::time_point::max(),
      bool* sent = nullptr) {
    auto budget = [&] {
      if (deadline == Clock::time_point::max()) return options.io_timeout;
      return std::min(options.io_timeout,
                      std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - Clock::now()));
    };
    auto expired = [&](std::string_view detail) {
      return absl::DeadlineExceededError(absl::StrCat(
          what, ": the lease's validity ended first", to_absl(detail)));
    };
    if (budget() <= std::chrono::milliseconds::zero()) return expired("");
    absl::StatusOr<Conn> c = pool->take(Clock::now() + budget(), "PostgreSQL");
    if (!c.ok()) {
      if (budget() <= std::chrono::milliseconds::zero()) {
        return expired(absl::StrCat(" (", c.status().message(), ")"));
      }
      return absl::UnavailableError(
          absl::StrCat(what, ": ", c.status().message()));
    }
    if (sent != nullptr) *sent = true;
    if (budget() <= std::chrono::milliseconds::zero()) {
      pool->give_back(*std::move(c));  // unused: still sound
      return expired("");
    }
    absl::StatusOr<Result> r =
        run_checked(c->get(), what, sql.c_str(), params, budget());
    if (r.ok() && PQstatus(c->get()) == CONNECTION_OK) {
      pool->give_back(*std::move(c));
    } else {
      pool->drop(*std::move(c));
    }
    return r;
  }
};

namespace {

// Whether server session $2 holds advisory lock $1 (the bigint form of
// pg_advisory_lock: classid and objid are its two halves, objsubid 1).
#define TL_SESSION_HOLDS_ADVISORY                                       \
  "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND " \
  "l.pid = $2::int AND l.granted AND l.objsubid = 1 AND "               \
  "((l.classid::bigint << 32) | l.objid::bigint) = $1::bigint)"

// Unlocks in the session that took the lock, or returns NULL (and the pid
// it ran in) when the statement landed in another one.
constexpr char kReleaseAdvisory[] =
    "SELECT CASE WHEN pg_backend_pid() = $2::int THEN "
    "pg_advisory_unlock($1::bigint) "
    "END, pg_backend_pid()";
// Terminates the grant's session if it still holds the lock and is idle
// (between transactions: no client of the pooler is using it). From
// PostgreSQL 14 on, waiting up to $3 ms for it to end.
constexpr char kTerminateStrayWhere[] =
    " FROM pg_stat_activity WHERE pid = $2::int AND state = 'idle' "
    "AND " TL_SESSION_HOLDS_ADVISORY;
constexpr char kStillHeld[] = "SELECT " TL_SESSION_HOLDS_ADVISORY;

// Behind a transaction pooler, a lock taken by one statement stays with that
// server connection after our client connection closes, and blocks the key
// until the pooler closes that connection (pgbouncer's server_lifetime: an
// hour). Frees it: a few unlocks that act only in the grant's session (a
// pooler that rotates its connections reaches it), then, if that session
// still holds the lock and is idle, pg_terminate_backend (the pooler replaces
// the server connection). Returns what happened, for an error message.
std::string drop_stray_lock(PGconn* c, std::int64_t id,
                            const std::string& grant_pid,
                            std::chrono::milliseconds io_timeout) {
  const std::string key = std::to_string(id);
  std::string unknown =
      absl::StrCat("server session ", grant_pid,
                   " may still hold the lock; `SELECT pg_terminate_backend(",
                   grant_pid, ")` frees it");
  constexpr int kUnlockTries = 4;
  for (int i = 0; i < kUnlockTries; ++i) {
    RunResult r =
        run(c, kReleaseAdvisory, {key, grant_pid}, Clock::now() + io_timeout);
    if (r.outcome != Outcome::kDone)
      return unknown;  // the connection is unusable
    if (!PQgetisnull(r.result.get(), 0, 0)) {
      return absl::StrCat("the lock taken in server session ", grant_pid,
                          " was released there");
    }
  }
  std::vector<std::string> params = {key, grant_pid};
  std::string terminate = "SELECT pg_terminate_backend(pid)";
  if (PQserverVersion(c) >= 140000) {
    // Waits for the session to end, up to half the statement's own bound.
    terminate = "SELECT pg_terminate_backend(pid, $3::bigint)";
    params.push_back(
        std::to_string(std::max<std::int64_t>(1, io_timeout.count() / 2)));
  }
  terminate += kTerminateStrayWhere;
  RunResult t = run(c, terminate.c_str(), params, Clock::now() + io_timeout);
  if (t.outcome != Outcome::kDone) return unknown;
  RunResult held =
      run(c, kStillHeld, {key, grant_pid}, Clock::now() + io_timeout);
  if (held.outcome == Outcome::kDone && !bool_value(held.result)) {
    return absl::StrCat("server session ", grant_pid,
                        ", which held the lock, was terminated to free it");
  }
  return unknown;
}

class AdvisorySession final : public LeaseSession {
 public:
  AdvisorySession(Conn conn, std::int64_t id, std::string grant_pid,
                  std::chrono::milliseconds io_timeout)
      : conn_(std::move(conn)),
        id_(id),
        grant_pid_(std::move(grant_pid)),
        io_timeout_(io_timeout) {}
  std::optional<std::uint64_t> token() const override { return std::nullopt; }
  absl::StatusOr<bool> extend(std::chrono::milliseconds) override {
    return absl::UnimplementedError("advisory leases have no ttl");
  }
  absl::StatusOr<bool> release() override {
    if (!conn_ || PQstatus(conn_.get()) != CONNECTION_OK) {
      conn_.reset();
      return false;  // the connection, and with it the lock, is gone
    }
    // Unlocks only in the session that took the lock: behind a transaction
    // pooler that reused the grant's server connection for the check (so the
    // acquire passed it), the release may run in another one.
    RunResult r =
        run(conn_.get(), kReleaseAdvisory, {std::to_string(id_), grant_pid_},
            Clock::now() + io_timeout_);
    if (r.outcome != Outcome::kDone) {
      // Closing the connection releases the lock whatever the answer was.
      conn_.reset();
      return absl::UnavailableError(absl::StrCat(
          "pg_advisory_unlock: ", r.error.empty() ? "no answer" : r.error,
          " (the connection is closed, which releases the lock)"));
    }
    if (!PQgetisnull(r.result.get(), 0, 0)) {
      conn_.reset();
      return bool_value(r.result);
    }
    const std::string outcome =
        drop_stray_lock(conn_.get(), id_, grant_pid_, io_timeout_);
    conn_.reset();
    return absl::FailedPreconditionError(
        absl::StrCat("pg_advisory_unlock: the release ran in server session ",
                     PQgetvalue(r.result.get(), 0, 1), ", not in ", grant_pid_,
                     " that took the lock (transaction pooling, e.g. pgbouncer "
                     "pool_mode=transaction): ",
                     outcome));
  }
  int watch_fd() const override { return conn_ ? PQsocket(conn_.get()) : -1; }
  bool check_connection() override {
    if (!conn_) return false;
    if (PQconsumeInput(conn_.get()) == 0 ||
        PQstatus(conn_.get()) != CONNECTION_OK) {
      return false;
    }
    while (PGnotify* n = PQnotifies(conn_.get())) PQfreemem(n);
    return true;
  }

 private:
  Conn conn_;
  std::int64_t id_;
  std::string grant_pid_;  // the server session (backend pid) holding the lock
  std::chrono::milliseconds io_timeout_;
};

class TableSession final : public LeaseSession {
 public:
  TableSession(std::shared_ptr<PostgresLeaseBackend::Shared> shared,
               std::string key, std::string owner, std::uint64_t token)
      : shared_(std::move(shared)),
        key_(std::move(key)),
        owner_(std::move(owner)),
        token_(token) {}
  std::optional<std::uint64_t> token() const override { return token_; }
  absl::StatusOr<bool> extend(std::chrono::milliseconds ttl) override {
    return extend_before(ttl, Clock::time_point::max());
  }
  absl::StatusOr<bool> extend_before(std::chrono::milliseconds ttl,
                                     Clock::time_point deadline) override {
    absl::StatusOr<Result> r = shared_->exec(
        "extend", shared_->sql_extend,
        {key_, owner_, std::to_string(token_), std::to_string(ttl.count())},
        deadline);
    if (!r.ok()) return r.status();
    return PQntuples(r->get()) == 1;
  }
  absl::StatusOr<bool> release() override {
    absl::StatusOr<Result> r =
        shared_->exec("release", shared_->sql_release,
                      {key_, owner_, std::to_string(token_)});
    if (!r.ok()) return r.status();
    return bool_value(*r);
  }

 private:
  std::shared_ptr<PostgresLeaseBackend::Shared> shared_;
  std::string key_;
  std::string owner_;
  std::uint64_t token_;
};

constexpr char kTryAdvisory[] =
    "SELECT pg_try_advisory_lock($1::bigint), pg_backend_pid()";
constexpr char kWaitAdvisory[] =
    "SELECT pg_advisory_lock($1::bigint), pg_backend_pid()";
// Runs as a separate statement: under transaction pooling it may land on
// another server session than the grant's ($2), or the lock may be gone.
constexpr char kCheckAdvisory[] =
    "SELECT pg_backend_pid(), " TL_SESSION_HOLDS_ADVISORY;
#undef TL_SESSION_HOLDS_ADVISORY

}  // namespace

std::int64_t PostgresLeaseBackend::advisory_key(std::string_view key) {
  std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64 offset basis
  for (char ch : key) {
    h ^= static_cast<unsigned char>(ch);
    h *= 0x100000001b3ULL;  // FNV prime
  }
  return static_cast<std::int64_t>(h);
}

namespace {
std::unique_ptr<internal::WaitSteps> pg_wait_steps(
    const std::shared_ptr<PostgresLeaseBackend::Shared>& sh,
    LeaseRequest request);
}  // namespace

absl::StatusOr<std::shared_ptr<PostgresLeaseBackend>>
PostgresLeaseBackend::create(PostgresLeaseOptions options) {
  using PgMode = PostgresLeaseOptions::Mode;
  if (options.io_timeout <= std::chrono::milliseconds::zero()) {
    return absl::InvalidArgumentError(
        "PostgreSQL leases: io_timeout must be positive");
  }
  if (options.mode == PgMode::kLeaseTable && !valid_identifier(options.table)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PostgreSQL leases: table name '", options.table,
        "' is not a plain lowercase identifier ([a-z_][a-z0-9_]{0,47})"));
  }
  auto shared = std::make_shared<Shared>();
  shared->options = std::move(options);
  absl::StatusOr<Conn> c =
      connect(shared->options.conninfo, shared->options.io_timeout);
  if (!c.ok()) return c.status();
  if (shared->options.mode == PgMode::kLeaseTable) {
    const std::string& t = shared->options.table;
    // One creator at a time (CREATE .. IF NOT EXISTS races on the catalog).
    const std::string setup = absl::StrCat(
        "BEGIN; SELECT pg_advisory_xact_lock(", advisory_key("tierlock:setup"),
        "); ", "CREATE SEQUENCE IF NOT EXISTS ", t, "_token; ",
        "CREATE TABLE IF NOT EXISTS ", t,
        " (key text PRIMARY KEY, owner text NOT NULL, token bigint NOT NULL, "
        "expires_at timestamptz NOT NULL, "
        "acquired_at timestamptz NOT NULL DEFAULT clock_timestamp()); ",
        // Waiters queue per key in ticket order; each row lives until its
        // expiry unless refreshed.
        "CREATE SEQUENCE IF NOT EXISTS ", t, "_ticket; ",
        "CREATE TABLE IF NOT EXISTS ", t,
        "_waiters (key text NOT NULL, waiter text NOT NULL, ",
        "ticket bigint NOT NULL, expires_at timestamptz NOT NULL, PRIMARY KEY "
        "(key, waiter)); ",
        "CREATE INDEX IF NOT EXISTS ", t, "_waiters_order ON ", t,
        "_waiters (key, ticket); ",
        // Who was granted each key (holder_of): a side table, so a table
        // made by an older tierlock gains it here and is itself unchanged.
        // One row per key, replaced at each grant; it describes the lease
        // only while its owner equals the lease row's. bytea: a host name
        // or command line need not be valid in the server's encoding.
        "CREATE TABLE IF NOT EXISTS ", t,
        "_holders (key text PRIMARY KEY, owner text NOT NULL, token bigint "
        "NOT NULL, host bytea, pid bigint, program bytea, since timestamptz); ",
        "COMMIT;");
    absl::StatusOr<Result> r =
        run_checked(c->get(), "create lease table", setup.c_str(), {},
                    shared->options.io_timeout);
    if (!r.ok()) return r.status();
    const std::string w = absl::StrCat(t, "_waiters");
    // The key's live queue head ($1: the key).
    const std::string head =
        absl::StrCat("SELECT waiter, expires_at FROM ", w,
                     " WHERE key = $1 AND "
                     "expires_at > clock_timestamp() ORDER BY ticket LIMIT 1");
    // Takes the key ($1, owner $2, ttl $3 ms) if free, under `cond`.
    auto grant = [&](std::string_view cond) {
      return absl::StrCat(
          "INSERT INTO ", t,
          " AS l (key, owner, token, expires_at) "
          "SELECT $1::text, $2::text, nextval('",
          t,
          "_token'), "
          "clock_timestamp() + $3::bigint * interval '1 millisecond' WHERE ",
          to_absl(cond),
          " ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, "
          "token = GREATEST(EXCLUDED.token, l.token + 1), expires_at = "
          "EXCLUDED.expires_at, "
          "acquired_at = clock_timestamp() WHERE l.expires_at <= "
          "clock_timestamp() "
          "RETURNING token");
    };
    // Records the grant of CTE g ($4 host and $6 program in hex, $5 pid)
    // in the same statement: a data-modifying CTE runs whether or not the
    // query reads it.
    const std::string record = absl::StrCat(
        "who AS (INSERT INTO ", t,
        "_holders AS o (key, owner, token, host, pid, program, since) "
        "SELECT $1, $2, token, decode($4::text, 'hex'), $5::bigint, "
        "decode($6::text, 'hex'), clock_timestamp() FROM g "
        "ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, token = "
        "EXCLUDED.token, host = EXCLUDED.host, pid = EXCLUDED.pid, program = "
        "EXCLUDED.program, since = EXCLUDED.since)");
    // A try barges only while no live waiter is queued.
    shared->sql_acquire = absl::StrCat(
        "WITH g AS (",
        grant(absl::StrCat(
            "NOT EXISTS (SELECT 1 FROM ", w,
            " WHERE key = $1 AND expires_at > clock_timestamp())")),
        "), ", record, " SELECT token FROM g");
    shared->sql_holder = absl::StrCat(
        "SELECT l.owner, l.token, encode(o.host, 'hex'), o.pid, "
        "encode(o.program, 'hex'), "
        "(EXTRACT(epoch FROM o.since) * 1000)::bigint FROM ",
        t, " l LEFT JOIN ", t,
        "_holders o ON o.key = l.key AND o.owner = l.owner "
        "WHERE l.key = $1 AND l.expires_at > clock_timestamp()");
    // A waiter ($2) joins at the tail, or pushes its expiry to $3 ms from
    // now; the key's expired waiters (dead) go.
    shared->sql_join = absl::StrCat(
        "WITH purge AS (DELETE FROM ", w,
        " WHERE key = $1 AND waiter <> $2 AND "
        "expires_at <= clock_timestamp()) "
        "INSERT INTO ",
        w, " (key, waiter, ticket, expires_at) VALUES ($1, $2, nextval('", t,
        "_ticket'), clock_timestamp() + $3::bigint * interval '1 millisecond') "
        "ON CONFLICT (key, waiter) DO UPDATE SET expires_at = "
        "EXCLUDED.expires_at");
    // The waiter takes the key at the head (and leaves the queue). Returns
    // the token or NULL, and ms until the state can change without a wake:
    // the lease's expiry when heading the queue, else the head's.
    shared->sql_wait_grab =
        absl::StrCat("WITH head AS (", head, "), g AS (",
                     grant("EXISTS (SELECT 1 FROM head WHERE waiter = $2)"),
                     "), ", record, ", d AS (DELETE FROM ", w,
                     " WHERE key = $1 AND waiter = $2 AND "
                     "EXISTS (SELECT 1 FROM g)) "
                     "SELECT (SELECT token FROM g), GREATEST(0, CEIL(1000 * "
                     "EXTRACT(epoch FROM "
                     "(CASE WHEN (SELECT waiter FROM head) = $2 THEN (SELECT "
                     "expires_at FROM ",
                     t,
                     " WHERE key = $1) ELSE (SELECT expires_at FROM head) END) "
                     "- clock_timestamp())))::bigint");
    // NOTIFY to the live head's own channel (tlw_<waiter id>); delivered
    // at commit, after the change it announces.
    const std::string wake_head = absl::StrCat(
        "SELECT pg_notify('tlw_' || h.waiter, '') FROM (SELECT waiter FROM ", w,
        " WHERE key = $1 AND expires_at > clock_timestamp() AND waiter <> $2 "
        "ORDER BY ticket LIMIT 1) h");
    shared->sql_extend = absl::StrCat(
        "UPDATE ", t,
        " SET expires_at = clock_timestamp() + $4::bigint * interval "
        "'1 millisecond' WHERE key = $1 AND owner = $2 AND token = $3::bigint "
        "AND "
        "expires_at > clock_timestamp() RETURNING 1");
    // A release expires the row in place rather than deleting it: the row
    // carries the key's token floor (GREATEST above). Deleted, a grant whose
    // token was drawn from the sequence before a later-drawn token's grant
    // committed could INSERT the smaller token afterwards, and fencing would
    // go backwards. One row stays per key ever used.
    shared->sql_release = absl::StrCat(
        "WITH o AS (SELECT expires_at > clock_timestamp() AS held FROM ", t,
        " WHERE key = $1 AND owner = $2 AND token = $3::bigint FOR UPDATE), "
        "d AS (UPDATE ",
        t,
        " SET expires_at = 'epoch' WHERE key = $1 AND owner = $2 AND "
        "token = $3::bigint AND EXISTS (SELECT 1 FROM o) RETURNING 1) "
        "SELECT o.held, (",
        wake_head, ") IS NULL FROM o, d");
    // The next head is woken if the key is free (this waiter may have been
    // woken for it and be leaving instead).
    shared->sql_leave = absl::StrCat(
        "WITH d AS (DELETE FROM ", w, " WHERE key = $1 AND waiter = $2) ",
        wake_head, " WHERE NOT EXISTS (SELECT 1 FROM ", t,
        " WHERE key = $1 AND expires_at > clock_timestamp())");
    const PostgresLeaseOptions& o = shared->options;
    // libpq's connect_timeout (whole seconds, at least 2) bounds each
    // attempt of the background connector.
    const auto connect_timeout = std::chrono::milliseconds(
        1000 * std::max<std::int64_t>(2, (o.io_timeout.count() + 999) / 1000));
    shared->pool = internal::ConnPool<Conn>::create(
        [conninfo = o.conninfo, io_timeout = o.io_timeout](
            Clock::time_point, const std::stop_token&) {
          return connect(conninfo, io_timeout);
        },
        connect_timeout, *std::move(c));
  }
  std::shared_ptr<PostgresLeaseBackend> backend(
      new PostgresLeaseBackend(shared));
  // Advisory mode waits in the server, on a connection per waiter: no
  // queue to wake, so async acquires poll there.
  if (shared->options.mode == PgMode::kLeaseTable) {
    internal::set_wait_steps(backend.get(), [shared](const LeaseRequest& r) {
      return pg_wait_steps(shared, r);
    });
  }
  return backend;
}

PostgresLeaseBackend::~PostgresLeaseBackend() {
  internal::set_wait_steps(this, nullptr);
}

absl::StatusOr<std::optional<Holder>> PostgresLeaseBackend::holder_of(
    std::string_view key) {
  if (shared_->options.mode == PostgresLeaseOptions::Mode::kAdvisory) {
    // pg_locks names the server session (backend pid) holding the lock, not
    // the client process: held or free is all that is sure.
    absl::StatusOr<Conn> c =
        connect(shared_->options.conninfo, shared_->options.io_timeout);
    if (!c.ok()) return c.status();
    absl::StatusOr<Result> r = run_checked(
        c->get(), "holder",
        "SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = "
        "'advisory' AND l.granted AND l.objsubid = 1 AND "
        "((l.classid::bigint << 32) | l.objid::bigint) = $1::bigint)",
        {std::to_string(advisory_key(key))}, shared_->options.io_timeout);
    if (!r.ok()) return r.status();
    if (!bool_value(*r)) return std::optional<Holder>();
    return std::optional<Holder>(Holder{});
  }
  absl::StatusOr<Result> r =
      shared_->exec("holder", shared_->sql_holder, {std::string(key)});
  if (!r.ok()) return r.status();
  const PGresult* res = r->get();
  if (PQntuples(res) == 0) return std::optional<Holder>();
  Holder h;
  h.owner_id = PQgetvalue(res, 0, 0);
  std::uint64_t token = 0;
  if (absl::SimpleAtoi(PQgetvalue(res, 0, 1), &token)) h.token = token;
  // NULLs: no side row for this grant (an older tierlock granted it).
  if (!PQgetisnull(res, 0, 2))
    h.host = absl::HexStringToBytes(PQgetvalue(res, 0, 2));
  std::int64_t n = 0;
  if (!PQgetisnull(res, 0, 3) && absl::SimpleAtoi(PQgetvalue(res, 0, 3), &n)) {
    h.pid = n;
  }
  if (!PQgetisnull(res, 0, 4)) {
    h.program = absl::HexStringToBytes(PQgetvalue(res, 0, 4));
  }
  if (!PQgetisnull(res, 0, 5) && absl::SimpleAtoi(PQgetvalue(res, 0, 5), &n)) {
    h.since = internal::from_unix_ms(n);
  }
  return std::optional<Holder>(std::move(h));
}

absl::StatusOr<std::vector<Holder>> PostgresLeaseBackend::waiters_of(
    std::string_view key) {
  if (shared_->options.mode == PostgresLeaseOptions::Mode::kAdvisory) {
    return LeaseBackend::waiters_of(key);
  }
  absl::StatusOr<Result> r =
      shared_->exec("waiters",
                    absl::StrCat("SELECT waiter FROM ", shared_->options.table,
                                 "_waiters WHERE key = $1 AND expires_at > "
                                 "clock_timestamp() ORDER BY ticket"),
                    {std::string(key)});
  if (!r.ok()) return r.status();
  std::vector<Holder> out;
  for (int i = 0; i < PQntuples(r->get()); ++i) {
    Holder h;
    h.owner_id = PQgetvalue(r->get(), i, 0);
    out.push_back(std::move(h));
  }
  return out;
}

std::string_view PostgresLeaseBackend::name() const {
  return shared_->options.mode == PostgresLeaseOptions::Mode::kAdvisory
             ? "postgres-advisory"
             : "postgres-table";
}

LeaseCapabilities PostgresLeaseBackend::capabilities() const {
  if (shared_->options.mode == PostgresLeaseOptions::Mode::kAdvisory) return {};
  return {.ttl = true,
          .fencing = true,
          .shared = false,
          .survives_failover = false,
          .metadata = false};
}

namespace {

// After a granted advisory lock: refuse a transaction-pooled connection.
absl::Status check_session(PGconn* c, std::int64_t id,
                           const std::string& grant_pid,
                           std::chrono::milliseconds io_timeout) {
  absl::StatusOr<Result> r =
      run_checked(c, "check advisory session", kCheckAdvisory,
                  {std::to_string(id), grant_pid}, io_timeout);
  if (!r.ok()) return r.status();
  const std::string pid = PQgetvalue(r->get(), 0, 0);
  if (pid != grant_pid || PQgetvalue(r->get(), 0, 1)[0] != 't') {
    return absl::FailedPreconditionError(absl::StrCat(
        "the advisory lock is not held by this connection's next statement "
        "(transaction pooling, e.g. pgbouncer pool_mode=transaction?): "
        "advisory "
        "leases need a session; use session pooling or lease-table mode; ",
        drop_stray_lock(c, id, grant_pid, io_timeout)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LeaseSession>> advisory(
    const PostgresLeaseOptions& o, const LeaseRequest& req, bool wait,
    SteadyTime deadline, const std::stop_token& stop) {
  absl::StatusOr<Conn> c = connect(o.conninfo, o.io_timeout);
  if (!c.ok()) return c.status();
  const std::int64_t id = PostgresLeaseBackend::advisory_key(req.key);
  RunResult r =
      run(c->get(), wait ? kWaitAdvisory : kTryAdvisory, {std::to_string(id)},
          wait ? deadline : Clock::now() + o.io_timeout, stop, /*cancel=*/wait);
  // Anything but a clean answer: closing the connection (Conn's destructor)
  // ends the session, so a lock granted as the cancel raced it is dropped.
  switch (r.outcome) {
    case Outcome::kDone:
      break;
    case Outcome::kStopped:
      return absl::CancelledError("cancelled");
    case Outcome::kTimedOut:
      if (wait) return std::unique_ptr<LeaseSession>();
      return absl::UnavailableError(
          absl::StrCat("pg_try_advisory_lock: no answer within ",
                       o.io_timeout.count(), " ms"));
    case Outcome::kBroken:
      return absl::UnavailableError(
          absl::StrCat("pg_advisory_lock: ", r.error));
  }
  if (!bool_value(r.result) && !wait) return std::unique_ptr<LeaseSession>();
  const std::string pid = PQgetvalue(r.result.get(), 0, 1);
  if (absl::Status s = check_session(c->get(), id, pid, o.io_timeout); !s.ok())
    return s;
  return std::unique_ptr<LeaseSession>(
      new AdvisorySession(std::move(*c), id, pid, o.io_timeout));
}

}  // namespace

namespace {

// One grant attempt in lease-table mode: a try (`queued` false: takes a free
// key only if no live waiter is queued) or a queued waiter's (joins or
// refreshes its place, takes the key at the head). An outcome left unknown
// is an error, and the row is then deleted if it was granted.
absl::StatusOr<internal::WaitTurn> grab(
    const std::shared_ptr<PostgresLeaseBackend::Shared>& sh,
    const LeaseRequest& request, bool queued) {
  const std::string ttl = std::to_string(request.ttl.count());
  if (queued) {
    absl::StatusOr<Result> joined = sh->exec(
        "join the queue", sh->sql_join, {request.key, request.owner_id, ttl});
    if (!joined.ok()) return joined.status();
  }
  bool sent = false;
  const internal::GrantMeta meta = internal::this_grant_meta();
  absl::StatusOr<Result> r = sh->exec(
      "acquire", queued ? sh->sql_wait_grab : sh->sql_acquire,
      {request.key, request.owner_id, ttl, absl::BytesToHexString(meta.host),
       std::to_string(meta.pid), absl::BytesToHexString(meta.program)},
      Clock::time_point::max(), &sent);
  if (!r.ok() && sent) {
    // Ambiguous: the INSERT may have committed. Expire it if it did (best
    // effort, on another connection; otherwise it lapses at its TTL). Kept,
    // not deleted: the row is the key's token floor (see sql_release).
    (void)sh->exec("clean up after a failed acquire",
                   absl::StrCat("UPDATE ", sh->options.table,
                                " SET expires_at = 'epoch' WHERE key = "
                                "$1 AND owner = $2"),
                   {request.key, request.owner_id});
  }
  if (!r.ok()) return r.status();
  internal::WaitTurn turn;
  if (PQntuples(r->get()) == 0 || PQgetisnull(r->get(), 0, 0)) {
    std::int64_t ms = -1;
    if (queued && !PQgetisnull(r->get(), 0, 1)) {
      (void)absl::SimpleAtoi(PQgetvalue(r->get(), 0, 1), &ms);
    }
    turn.retry_in = std::chrono::milliseconds(ms);
    return turn;
  }
  std::uint64_t token = 0;
  if (!absl::SimpleAtoi(PQgetvalue(r->get(), 0, 0), &token)) {
    return absl::InternalError("acquire: bad token from the server");
  }
  turn.session.reset(
      new TableSession(sh, request.key, request.owner_id, token));
  return turn;
}

constexpr std::chrono::milliseconds kUnnotifiedRecheck{100};

// A waiter's wake signal: a connection of its own that LISTENs on the
// waiter's channel.
class PgWaker {
 public:
  // Without notify_waiters: no connection, never woken (fd -1 is ignored by
  // poll); the waiter looks again at its capped hint.
  static absl::StatusOr<PgWaker> open(const PostgresLeaseOptions& o,
                                      const std::string& waiter) {
    if (!o.notify_waiters) return PgWaker(Conn());
    absl::StatusOr<Conn> c = connect(o.conninfo, o.io_timeout);
    if (!c.ok()) return c.status();
    const std::string channel = "tlw_" + waiter;
    char* quoted = PQescapeIdentifier(c->get(), channel.data(), channel.size());
    if (quoted == nullptr) {
      return absl::InternalError(absl::StrCat("LISTEN: ", pg_error(c->get())));
    }
    const std::string sql = absl::StrCat("LISTEN ", quoted);
    PQfreemem(quoted);
    absl::StatusOr<Result> r =
        run_checked(c->get(), "LISTEN", sql.c_str(), {}, o.io_timeout);
    if (!r.ok()) return r.status();
    return PgWaker(*std::move(c));
  }
  int fd() const { return c_ ? PQsocket(c_.get()) : -1; }
  absl::StatusOr<bool> drain(bool readable) {
    if (!c_) return false;
    if (readable && PQconsumeInput(c_.get()) == 0) {
      return absl::UnavailableError(
          absl::StrCat("waiter's LISTEN connection: ", pg_error(c_.get())));
    }
    bool woken = false;
    while (PGnotify* n = PQnotifies(c_.get())) {
      PQfreemem(n);
      woken = true;
    }
    return woken;
  }

 private:
  explicit PgWaker(Conn c) : c_(std::move(c)) {}
  Conn c_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<LeaseSession>> PostgresLeaseBackend::try_acquire(
    const LeaseRequest& request) {
  if (shared_->options.mode == PostgresLeaseOptions::Mode::kAdvisory) {
    return advisory(shared_->options, request, false, SteadyTime::max(), {});
  }
  absl::StatusOr<internal::WaitTurn> turn =
      grab(shared_, request, /*queued=*/false);
  if (!turn.ok()) return turn.status();
  return std::move(turn->session);
}

namespace {

// A queued waiter's steps (lease-table mode); they own what they use.
std::unique_ptr<internal::WaitSteps> pg_wait_steps(
    const std::shared_ptr<PostgresLeaseBackend::Shared>& sh,
    LeaseRequest request) {
  auto req = std::make_shared<const LeaseRequest>(std::move(request));
  return internal::make_wait_steps(
      [sh, req] { return PgWaker::open(sh->options, req->owner_id); },
      [sh, req]() -> absl::StatusOr<internal::WaitTurn> {
        absl::StatusOr<internal::WaitTurn> turn =
            grab(sh, *req, /*queued=*/true);
        // No wakes: look again every 100 ms (as the front's polling would).
        if (turn.ok() && !sh->options.notify_waiters &&
            (turn->retry_in < std::chrono::milliseconds::zero() ||
             turn->retry_in > kUnnotifiedRecheck)) {
          turn->retry_in = kUnnotifiedRecheck;
        }
        return turn;
      },
      [sh, req] {
        (void)sh->exec("leave the queue", sh->sql_leave,
                       {req->key, req->owner_id});
      });
}

}  // namespace

absl::StatusOr<std::unique_ptr<LeaseSession>>
PostgresLeaseBackend::wait_acquire(const LeaseRequest& request,
                                   SteadyTime deadline,
                                   const std::stop_token& stop) {
  if (shared_->options.mode == PostgresLeaseOptions::Mode::kAdvisory) {
    return advisory(shared_->options, request, true, deadline, stop);
  }
  // Uncontended: one statement, no LISTEN connection.
  absl::StatusOr<internal::WaitTurn> first =
      grab(shared_, request, /*queued=*/false);
  if (!first.ok()) return first.status();
  if (first->session) return std::move(first->session);
  std::unique_ptr<internal::WaitSteps> steps = pg_wait_steps(shared_, request);
  return internal::fair_wait(request, deadline, stop, *steps);
}

}  // namespace tierlock

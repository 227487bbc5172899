// src/lease/sqlite_backend.cc
//
// SqliteLeaseBackend (tierlock/lease_sqlite.h).
#include "tierlock/lease_sqlite.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/string_util.h"
#include "lease/lease_state.h"
#include "tierlock/text.h"

namespace tierlock {

using internal::Mutex;
using internal::UniqueLock;

namespace {

std::int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::string read_boot_id() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

// A prepared statement, finalized on destruction.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& bind(int i, std::string_view v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind(int i, std::int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  // Returns SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return rc_ = sqlite3_step(s_); }
  std::int64_t int64(int col) { return sqlite3_column_int64(s_, col); }
  std::string text(int col) {
    const unsigned char* t = sqlite3_column_text(s_, col);
    return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
  }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_;
};

}  // namespace

struct SqliteLeaseBackend::Db {
  SqliteLeaseOptions options;
  std::string boot_id;
  Mutex mu;
  sqlite3* db ABSL_GUARDED_BY(mu) = nullptr;

  ~Db() { sqlite3_close_v2(db); }

  absl::Status error(std::string_view what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const int code = sqlite3_errcode(db);
    std::string m = absl::StrCat("sqlite '", escape_text(options.path.string()),
                                 "': ", internal::to_absl(what), ": ",
                                 sqlite3_errmsg(db));
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED) return absl::UnavailableError(m);
    if (code == SQLITE_PERM || code == SQLITE_READONLY || code == SQLITE_AUTH) {
      return absl::PermissionDeniedError(m);
    }
    return absl::InternalError(m);
  }
  absl::Status exec(const char* sql, std::string_view what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return error(what);
    return absl::OkStatus();
  }
  void rollback() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  }
};

namespace {

class SqliteSession final : public LeaseSession {
 public:
  SqliteSession(std::shared_ptr<SqliteLeaseBackend::Db> db, std::string key,
                std::string owner, std::uint64_t token)
      : db_(std::move(db)), key_(std::move(key)), owner_(std::move(owner)), token_(token) {}
  std::optional<std::uint64_t> token() const override { return token_; }

  absl::StatusOr<bool> extend(std::chrono::milliseconds ttl) override {
    SqliteLeaseBackend::Db& d = *db_;
    UniqueLock lk(d.mu);
    return extend_locked(d, ttl);
  }

  // The busy wait (another writer holds the database) is capped by the
  // lease's validity for this statement.
  absl::StatusOr<bool> extend_before(std::chrono::milliseconds ttl,
                                     std::chrono::steady_clock::time_point deadline) override {
    SqliteLeaseBackend::Db& d = *db_;
    UniqueLock lk(d.mu);
    if (deadline == std::chrono::steady_clock::time_point::max()) return extend_locked(d, ttl);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left <= std::chrono::milliseconds::zero()) {
      return absl::DeadlineExceededError("extend: the lease's validity ended first");
    }
    sqlite3_busy_timeout(d.db, static_cast<int>(std::min(left, d.options.busy_timeout).count()));
    absl::StatusOr<bool> r = extend_locked(d, ttl);
    sqlite3_busy_timeout(d.db, static_cast<int>(d.options.busy_timeout.count()));
    return r;
  }

 private:
  absl::StatusOr<bool> extend_locked(SqliteLeaseBackend::Db& d, std::chrono::milliseconds ttl)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(d.mu) {
    const std::int64_t now = monotonic_ns();
    Stmt s(d.db,
           "UPDATE tierlock_leases SET expires_ns = ?1 WHERE key = ?2 AND owner = ?3 "
           "AND token = ?4 AND boot_id = ?5 AND expires_ns > ?6");
    if (!s.ok()) return d.error("prepare extend");
    s.bind(1, now + std::chrono::nanoseconds(ttl).count()).bind(2, key_).bind(3, owner_);
    s.bind(4, static_cast<std::int64_t>(token_)).bind(5, d.boot_id).bind(6, now);
    if (s.step() != SQLITE_DONE) return d.error("extend");
    return sqlite3_changes(d.db) == 1;
  }

 public:
  absl::StatusOr<bool> release() override {
    SqliteLeaseBackend::Db& d = *db_;
    UniqueLock lk(d.mu);
    Stmt s(d.db,
           "DELETE FROM tierlock_leases WHERE key = ?1 AND owner = ?2 AND token = ?3 "
           "RETURNING boot_id = ?4 AND expires_ns > ?5");
    if (!s.ok()) return d.error("prepare release");
    s.bind(1, key_).bind(2, owner_).bind(3, static_cast<std::int64_t>(token_));
    s.bind(4, d.boot_id).bind(5, monotonic_ns());
    const int rc = s.step();
    if (rc == SQLITE_DONE) return false;  // not ours any more
    if (rc != SQLITE_ROW) return d.error("release");
    const bool held = s.int64(0) != 0;
    if (s.step() != SQLITE_DONE) return d.error("release");
    return held;
  }

 private:
  std::shared_ptr<SqliteLeaseBackend::Db> db_;
  std::string key_;
  std::string owner_;
  std::uint64_t token_;
};

constexpr char kSchema[] =
    "CREATE TABLE IF NOT EXISTS tierlock_leases ("
    " key TEXT PRIMARY KEY, owner TEXT NOT NULL, session TEXT NOT NULL,"
    " token INTEGER NOT NULL, metadata TEXT NOT NULL DEFAULT '',"
    " boot_id TEXT NOT NULL, expires_ns INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS tierlock_leases_session ON tierlock_leases(session);"
    "CREATE TABLE IF NOT EXISTS tierlock_lease_tokens ("
    " key TEXT PRIMARY KEY, last INTEGER NOT NULL);";

// Refuses a database, WAL or shared-memory file name that is a symbolic
// link: in a shared directory, whoever planted it would choose where the
// database (and its -wal and -shm) is created or which file is written.
// SQLite itself opens -wal and -shm with O_NOFOLLOW, but fails with a bare
// "unable to open database file"; this names the link. (A link planted after
// this check is still not followed: SQLITE_OPEN_NOFOLLOW and O_NOFOLLOW.)
absl::Status refuse_symlinks(const std::filesystem::path& path) {
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const std::string name = path.string() + suffix;
    struct stat st {};
    if (::lstat(name.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) continue;
    return absl::FailedPreconditionError(absl::StrCat(
        "sqlite '", escape_text(name),
        "': is a symbolic link; refusing to follow it (it would choose where "
        "the lease database is written): give the path of a regular file"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<SqliteLeaseBackend>> SqliteLeaseBackend::create(
    SqliteLeaseOptions options) {
  if (options.path.empty()) return absl::InvalidArgumentError("sqlite leases: empty path");
  if (options.session.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    options.session = absl::StrCat(host, ":", ::getpid());
  }
  auto d = std::make_shared<Db>();
  d->options = std::move(options);
  d->boot_id = read_boot_id();
  if (d->boot_id.empty()) {
    return absl::UnavailableError("sqlite leases: cannot read /proc/sys/kernel/random/boot_id");
  }
  if (absl::Status s = refuse_symlinks(d->options.path); !s.ok()) return s;
  UniqueLock lk(d->mu);
  // NOFOLLOW: SQLite refuses a symbolic link anywhere in the path (it
  // resolves every component), which also covers a link planted between
  // refuse_symlinks and here.
  const int rc = sqlite3_open_v2(d->options.path.c_str(), &d->db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                     SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW,
                                 nullptr);
  if (rc != SQLITE_OK && d->db != nullptr &&
      sqlite3_extended_errcode(d->db) == SQLITE_CANTOPEN_SYMLINK) {
    return absl::FailedPreconditionError(absl::StrCat(
        "sqlite '", escape_text(d->options.path.string()),
        "': a component of the path is a symbolic link; refusing to follow it "
        "(SQLITE_OPEN_NOFOLLOW): give the path without symbolic links"));
  }
  if (rc != SQLITE_OK) {
    absl::Status s = d->db ? d->error("open")
                           : absl::ResourceExhaustedError("sqlite3_open_v2: out of memory");
    return s.code() == absl::StatusCode::kInternal ? absl::UnavailableError(s.message()) : s;
  }
  sqlite3_busy_timeout(d->db, static_cast<int>(d->options.busy_timeout.count()));
  // WAL: readers never block the writer; the per-grant write transaction is
  // short. synchronous=NORMAL is durable across process crashes in WAL mode
  // (a power loss may lose the last grants: leases are then re-granted, with
  // tokens that may repeat only for transactions lost with the power).
  // Switching to WAL takes an exclusive lock and, when several processes open
  // a new database at once, fails with SQLITE_BUSY without calling the busy
  // handler: retry it (with backoff) until the busy timeout, as SQLite's
  // own busy handler would.
  const auto wal_deadline = std::chrono::steady_clock::now() + d->options.busy_timeout;
  for (auto backoff = std::chrono::milliseconds(1);;
       backoff = std::min(backoff * 2, std::chrono::milliseconds(50))) {
    absl::Status s = d->exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                             "set WAL mode");
    if (s.ok()) break;
    const int code = sqlite3_errcode(d->db) & 0xff;
    if ((code != SQLITE_BUSY && code != SQLITE_LOCKED) ||
        std::chrono::steady_clock::now() + backoff > wal_deadline) {
      return s;
    }
    std::this_thread::sleep_for(backoff);  // another process is switching it
  }
  if (absl::Status s = d->exec(kSchema, "create tables"); !s.ok()) return s;
  lk.unlock();
  return std::shared_ptr<SqliteLeaseBackend>(new SqliteLeaseBackend(std::move(d)));
}

SqliteLeaseBackend::~SqliteLeaseBackend() = default;

LeaseCapabilities SqliteLeaseBackend::capabilities() const {
  return {.ttl = true, .fencing = true, .shared = false, .survives_failover = false,
          .metadata = true};
}

const std::string& SqliteLeaseBackend::session() const { return db_->options.session; }

absl::StatusOr<std::unique_ptr<LeaseSession>> SqliteLeaseBackend::try_acquire(
    const LeaseRequest& request) {
  Db& d = *db_;
  UniqueLock lk(d.mu);
  if (absl::Status s = d.exec("BEGIN IMMEDIATE", "begin"); !s.ok()) return s;
  const std::int64_t now = monotonic_ns();
  {
    Stmt held(d.db,
              "SELECT 1 FROM tierlock_leases WHERE key = ?1 AND boot_id = ?2 AND "
              "expires_ns > ?3");
    if (!held.ok()) {
      absl::Status s = d.error("prepare acquire");
      d.rollback();
      return s;
    }
    held.bind(1, request.key).bind(2, d.boot_id).bind(3, now);
    const int rc = held.step();
    if (rc == SQLITE_ROW) {
      d.rollback();
      return std::unique_ptr<LeaseSession>();  // contention
    }
    if (rc != SQLITE_DONE) {
      absl::Status s = d.error("acquire");
      d.rollback();
      return s;
    }
  }
  std::int64_t token = 0;
  {
    Stmt bump(d.db,
              "INSERT INTO tierlock_lease_tokens (key, last) VALUES (?1, 1) "
              "ON CONFLICT (key) DO UPDATE SET last = last + 1 RETURNING last");
    if (!bump.ok() || (bump.bind(1, request.key), bump.step()) != SQLITE_ROW) {
      absl::Status s = d.error("bump the token");
      d.rollback();
      return s;
    }
    token = bump.int64(0);
    (void)bump.step();
  }
  {
    Stmt put(d.db,
             "INSERT OR REPLACE INTO tierlock_leases "
             "(key, owner, session, token, metadata, boot_id, expires_ns) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    if (!put.ok()) {
      absl::Status s = d.error("prepare acquire");
      d.rollback();
      return s;
    }
    put.bind(1, request.key).bind(2, request.owner_id).bind(3, d.options.session);
    put.bind(4, token).bind(5, request.metadata).bind(6, d.boot_id);
    put.bind(7, now + std::chrono::nanoseconds(request.ttl).count());
    if (put.step() != SQLITE_DONE) {
      absl::Status s = d.error("acquire");
      d.rollback();
      return s;
    }
  }
  if (absl::Status s = d.exec("COMMIT", "commit"); !s.ok()) {
    d.rollback();
    return s;
  }
  return std::unique_ptr<LeaseSession>(new SqliteSession(
      db_, request.key, request.owner_id, static_cast<std::uint64_t>(token)));
}

absl::StatusOr<int> SqliteLeaseBackend::release_all(std::string_view session) {
  Db& d = *db_;
  UniqueLock lk(d.mu);
  Stmt s(d.db, "DELETE FROM tierlock_leases WHERE session = ?1");
  if (!s.ok()) return d.error("prepare release_all");
  s.bind(1, session);
  if (s.step() != SQLITE_DONE) return d.error("release_all");
  return sqlite3_changes(d.db);
}

absl::StatusOr<int> SqliteLeaseBackend::reclaim_expired() {
  Db& d = *db_;
  UniqueLock lk(d.mu);
  Stmt s(d.db, "DELETE FROM tierlock_leases WHERE boot_id <> ?1 OR expires_ns <= ?2");
  if (!s.ok()) return d.error("prepare reclaim");
  s.bind(1, d.boot_id).bind(2, monotonic_ns());
  if (s.step() != SQLITE_DONE) return d.error("reclaim");
  return sqlite3_changes(d.db);
}

absl::StatusOr<std::vector<SqliteLeaseRow>> SqliteLeaseBackend::list() {
  Db& d = *db_;
  UniqueLock lk(d.mu);
  Stmt s(d.db,
         "SELECT key, owner, session, token, metadata, boot_id = ?1 AND expires_ns > ?2 "
         "FROM tierlock_leases ORDER BY key");
  if (!s.ok()) return d.error("prepare list");
  s.bind(1, d.boot_id).bind(2, monotonic_ns());
  std::vector<SqliteLeaseRow> rows;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    rows.push_back({s.text(0), s.text(1), s.text(2), static_cast<std::uint64_t>(s.int64(3)),
                    s.text(4), s.int64(5) != 0});
  }
  if (rc != SQLITE_DONE) return d.error("list");
  return rows;
}

}  // namespace tierlock

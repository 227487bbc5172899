// src/lease/sqlite_backend.cc
//
// SqliteLeaseBackend (tierlock/lease_sqlite.h).
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/string_util.h"
#include "lease/backends/fair_wait.h"
#include "lease/grant_meta.h"
#include "lease/lease_state.h"
#include "tierlock/lease_sqlite.h"
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
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()),
                      SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind(int i, std::int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  // Binds exact bytes (a host or command line need not be UTF-8).
  Stmt& bind_blob(int i, std::string_view v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()),
                      SQLITE_TRANSIENT);
    return *this;
  }
  // Returns SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return rc_ = sqlite3_step(s_); }
  std::int64_t int64(int col) { return sqlite3_column_int64(s_, col); }
  bool null(int col) { return sqlite3_column_type(s_, col) == SQLITE_NULL; }
  std::string blob(int col) {
    const void* b = sqlite3_column_blob(s_, col);
    return b ? std::string(
                   static_cast<const char*>(b),
                   static_cast<std::size_t>(sqlite3_column_bytes(s_, col)))
             : std::string();
  }
  std::string text(int col) {
    const unsigned char* t = sqlite3_column_text(s_, col);
    return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
  }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_;
};

// The abstract Unix socket address a waiter is woken on: no file to leave
// behind, gone with the waiter's process. Abstract names are per network
// namespace, hence the netns column of a waiter's row.
sockaddr_un wake_address(std::string_view waiter, socklen_t* len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const std::string name =
      absl::StrCat("tierlock-lease-wake:", internal::to_absl(waiter));
  const std::size_t n = std::min(name.size(), sizeof a.sun_path - 1);
  std::copy_n(name.data(), n, a.sun_path + 1);  // sun_path[0] == 0: abstract
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  return a;
}

enum class Wake { kWoken, kGone, kUnknown };

// Wakes `waiter` with one datagram. kGone: nobody is bound to its address
// (the waiter died); kUnknown: could not tell.
Wake send_wake(std::string_view waiter) {
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Wake::kUnknown;
  socklen_t len = 0;
  const sockaddr_un a = wake_address(waiter, &len);
  const char byte = 1;
  ssize_t n;
  do {
    n = ::sendto(fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL,
                 reinterpret_cast<const sockaddr*>(&a), len);
  } while (n < 0 && errno == EINTR);
  const int err = errno;
  ::close(fd);
  if (n == 1 || err == EAGAIN)
    return Wake::kWoken;  // EAGAIN: wakes already queued
  return err == ECONNREFUSED ? Wake::kGone : Wake::kUnknown;
}

// The inode of this process's network namespace (0 if unknown).
std::uint64_t read_netns() {
  struct stat st {};
  if (::stat("/proc/self/ns/net", &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_ino);
}

}  // namespace

struct SqliteLeaseBackend::Db {
  SqliteLeaseOptions options;
  std::string boot_id;
  std::uint64_t netns = 0;
  Mutex mu;
  sqlite3* db ABSL_GUARDED_BY(mu) = nullptr;

  ~Db() { sqlite3_close_v2(db); }

  absl::Status error(std::string_view what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const int code = sqlite3_errcode(db);
    std::string m =
        absl::StrCat("sqlite '", escape_text(options.path.string()),
                     "': ", internal::to_absl(what), ": ", sqlite3_errmsg(db));
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
      return absl::UnavailableError(m);
    if (code == SQLITE_PERM || code == SQLITE_READONLY || code == SQLITE_AUTH) {
      return absl::PermissionDeniedError(m);
    }
    return absl::InternalError(m);
  }
  absl::Status exec(const char* sql, std::string_view what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK)
      return error(what);
    return absl::OkStatus();
  }
  void rollback() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  }

  // Wakes the live head of `key`'s queue. A head whose wake address nobody
  // holds died: it leaves the queue and the next is woken. A head in another
  // network namespace cannot be signalled: it looks again at its hint or
  // refresh period. Best effort: errors are left to the waiters' timers.
  void wake_head(std::string_view key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (int i = 0; i < 64; ++i) {
      Stmt head(
          db,
          "SELECT waiter, netns FROM tierlock_lease_waiters WHERE key = ?1 AND "
          "boot_id = ?2 AND expires_ns > ?3 ORDER BY ticket LIMIT 1");
      if (!head.ok()) return;
      head.bind(1, key).bind(2, boot_id).bind(3, monotonic_ns());
      if (head.step() != SQLITE_ROW) return;
      const std::string waiter = head.text(0);
      if (static_cast<std::uint64_t>(head.int64(1)) != netns || netns == 0)
        return;
      if (send_wake(waiter) != Wake::kGone) return;
      Stmt gone(
          db,
          "DELETE FROM tierlock_lease_waiters WHERE key = ?1 AND waiter = ?2");
      if (!gone.ok()) return;
      gone.bind(1, key).bind(2, waiter);
      if (gone.step() != SQLITE_DONE) return;
    }
  }
};

namespace {

class SqliteSession final : public LeaseSession {
 public:
  SqliteSession(std::shared_ptr<SqliteLeaseBackend::Db> db, std::string key,
                std::string owner, std::uint64_t token)
      : db_(std::move(db)),
        key_(std::move(key)),
        owner_(std::move(owner)),
        token_(token) {}
  std::optional<std::uint64_t> token() const override { return token_; }

  absl::StatusOr<bool> extend(std::chrono::milliseconds ttl) override {
    SqliteLeaseBackend::Db& d = *db_;
    UniqueLock lk(d.mu);
    return extend_locked(d, ttl);
  }

  // The busy wait (another writer holds the database) is capped by the
  // lease's validity for this statement.
  absl::StatusOr<bool> extend_before(
      std::chrono::milliseconds ttl,
      std::chrono::steady_clock::time_point deadline) override {
    SqliteLeaseBackend::Db& d = *db_;
    UniqueLock lk(d.mu);
    if (deadline == std::chrono::steady_clock::time_point::max())
      return extend_locked(d, ttl);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left <= std::chrono::milliseconds::zero()) {
      return absl::DeadlineExceededError(
          "extend: the lease's validity ended first");
    }
    sqlite3_busy_timeout(
        d.db, static_cast<int>(std::min(left, d.options.busy_timeout).count()));
    absl::StatusOr<bool> r = extend_locked(d, ttl);
    sqlite3_busy_timeout(d.db,
                         static_cast<int>(d.options.busy_timeout.count()));
    return r;
  }

 private:
  absl::StatusOr<bool> extend_locked(SqliteLeaseBackend::Db& d,
                                     std::chrono::milliseconds ttl)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(d.mu) {
    const std::int64_t now = monotonic_ns();
    Stmt s(d.db,
           "UPDATE tierlock_leases SET expires_ns = ?1 WHERE key = ?2 AND "
           "owner = ?3 "
           "AND token = ?4 AND boot_id = ?5 AND expires_ns > ?6");
    if (!s.ok()) return d.error("prepare extend");
    s.bind(1, now + std::chrono::nanoseconds(ttl).count())
        .bind(2, key_)
        .bind(3, owner_);
    s.bind(4, static_cast<std::int64_t>(token_))
        .bind(5, d.boot_id)
        .bind(6, now);
    if (s.step() != SQLITE_DONE) return d.error("extend");
    return sqlite3_changes(d.db) == 1;
  }

 public:
  absl::StatusOr<bool> release() override {
    SqliteLeaseBackend::Db& d = *db_;
    UniqueLock lk(d.mu);
    Stmt s(d.db,
           "DELETE FROM tierlock_leases WHERE key = ?1 AND owner = ?2 AND "
           "token = ?3 "
           "RETURNING boot_id = ?4 AND expires_ns > ?5");
    if (!s.ok()) return d.error("prepare release");
    s.bind(1, key_).bind(2, owner_).bind(3, static_cast<std::int64_t>(token_));
    s.bind(4, d.boot_id).bind(5, monotonic_ns());
    const int rc = s.step();
    if (rc == SQLITE_DONE) return false;  // not ours any more
    if (rc != SQLITE_ROW) return d.error("release");
    const bool held = s.int64(0) != 0;
    if (s.step() != SQLITE_DONE) return d.error("release");
    d.wake_head(key_);
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
    "CREATE INDEX IF NOT EXISTS tierlock_leases_session ON "
    "tierlock_leases(session);"
    "CREATE TABLE IF NOT EXISTS tierlock_lease_tokens ("
    " key TEXT PRIMARY KEY, last INTEGER NOT NULL);"
    // Waiters per key in ticket (arrival) order, each live until expires_ns.
    "CREATE TABLE IF NOT EXISTS tierlock_lease_waiters ("
    " ticket INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, waiter TEXT "
    "NOT NULL,"
    " boot_id TEXT NOT NULL, netns INTEGER NOT NULL, expires_ns INTEGER NOT "
    "NULL,"
    " UNIQUE (key, waiter));"
    // Who was granted each key (LeaseBackend::holder_of): a side table, so a
    // database made by an older tierlock gains it here and its lease table
    // is unchanged. One row per key, replaced at each grant; it describes
    // the lease only while its owner matches the lease row's.
    "CREATE TABLE IF NOT EXISTS tierlock_lease_holders ("
    " key TEXT PRIMARY KEY, owner TEXT NOT NULL, token INTEGER NOT NULL,"
    " host BLOB, pid INTEGER, program BLOB, since_ms INTEGER);";

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

namespace {
std::unique_ptr<internal::WaitSteps> sqlite_wait_steps(
    const std::shared_ptr<SqliteLeaseBackend::Db>& db, LeaseRequest request);
}  // namespace

absl::StatusOr<std::shared_ptr<SqliteLeaseBackend>> SqliteLeaseBackend::create(
    SqliteLeaseOptions options) {
  if (options.path.empty())
    return absl::InvalidArgumentError("sqlite leases: empty path");
  if (options.session.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    options.session = absl::StrCat(host, ":", ::getpid());
  }
  auto d = std::make_shared<Db>();
  d->options = std::move(options);
  d->boot_id = read_boot_id();
  d->netns = read_netns();
  if (d->boot_id.empty()) {
    return absl::UnavailableError(
        "sqlite leases: cannot read /proc/sys/kernel/random/boot_id");
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
    absl::Status s =
        d->db ? d->error("open")
              : absl::ResourceExhaustedError("sqlite3_open_v2: out of memory");
    return s.code() == absl::StatusCode::kInternal
               ? absl::UnavailableError(s.message())
               : s;
  }
  sqlite3_busy_timeout(d->db,
                       static_cast<int>(d->options.busy_timeout.count()));
  // WAL: readers never block the writer; the per-grant write transaction is
  // short. synchronous=NORMAL is durable across process crashes in WAL mode
  // (a power loss may lose the last grants: leases are then re-granted, with
  // tokens that may repeat only for transactions lost with the power).
  // Switching to WAL takes an exclusive lock and, when several processes open
  // a new database at once, fails with SQLITE_BUSY without calling the busy
  // handler: retry it (with backoff) until the busy timeout, as SQLite's
  // own busy handler would.
  const auto wal_deadline =
      std::chrono::steady_clock::now() + d->options.busy_timeout;
  for (auto backoff = std::chrono::milliseconds(1);;
       backoff = std::min(backoff * 2, std::chrono::milliseconds(50))) {
    absl::Status s = d->exec(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", "set WAL mode");
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
  std::shared_ptr<SqliteLeaseBackend> backend(new SqliteLeaseBackend(d));
  internal::set_wait_steps(backend.get(), [d](const LeaseRequest& r) {
    return sqlite_wait_steps(d, r);
  });
  return backend;
}

SqliteLeaseBackend::~SqliteLeaseBackend() {
  internal::set_wait_steps(this, nullptr);
}

LeaseCapabilities SqliteLeaseBackend::capabilities() const {
  return {.ttl = true,
          .fencing = true,
          .shared = false,
          .survives_failover = false,
          .metadata = true};
}

const std::string& SqliteLeaseBackend::session() const {
  return db_->options.session;
}

namespace {

// Rolls back after `what` failed; returns the error.
absl::Status roll_back(SqliteLeaseBackend::Db& d, std::string_view what)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(d.mu) {
  absl::Status s = d.error(what);
  d.rollback();
  return s;
}

// Ends an attempt that must wait until `until_ns` at the latest: a waiter's
// join is committed, a try (which changed nothing) rolled back.
absl::StatusOr<internal::WaitTurn> wait_turn(SqliteLeaseBackend::Db& d,
                                             bool queued, std::int64_t now,
                                             std::int64_t until_ns)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(d.mu) {
  if (absl::Status s = d.exec(queued ? "COMMIT" : "ROLLBACK", "commit");
      !s.ok()) {
    d.rollback();
    return s;
  }
  internal::WaitTurn turn;
  turn.retry_in = std::chrono::ceil<std::chrono::milliseconds>(
      std::chrono::nanoseconds(std::max<std::int64_t>(0, until_ns - now)));
  return turn;
}

// One grant attempt, one BEGIN IMMEDIATE transaction: a try (`queued`
// false: takes a free key only if no live waiter is queued) or a queued
// waiter's (joins or refreshes its place, takes the key at the head). The
// key's dead waiters (expired, or from an earlier boot) leave the queue.
absl::StatusOr<internal::WaitTurn> grab(
    const std::shared_ptr<SqliteLeaseBackend::Db>& db,
    const LeaseRequest& request, bool queued) {
  SqliteLeaseBackend::Db& d = *db;
  UniqueLock lk(d.mu);
  if (absl::Status s = d.exec("BEGIN IMMEDIATE", "begin"); !s.ok()) return s;
  const std::int64_t now = monotonic_ns();
  if (queued) {
    Stmt purge(d.db,
               "DELETE FROM tierlock_lease_waiters WHERE key = ?1 AND "
               "(boot_id <> ?2 OR expires_ns <= ?3)");
    if (!purge.ok()) return roll_back(d, "prepare join");
    purge.bind(1, request.key).bind(2, d.boot_id).bind(3, now);
    if (purge.step() != SQLITE_DONE) return roll_back(d, "join the queue");
    Stmt join(
        d.db,
        "INSERT INTO tierlock_lease_waiters (key, waiter, boot_id, netns, "
        "expires_ns) "
        "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key, waiter) DO UPDATE SET "
        "expires_ns = excluded.expires_ns");
    if (!join.ok()) return roll_back(d, "prepare join");
    join.bind(1, request.key).bind(2, request.owner_id).bind(3, d.boot_id);
    join.bind(4, static_cast<std::int64_t>(d.netns));
    join.bind(5, now + std::chrono::nanoseconds(request.ttl).count());
    if (join.step() != SQLITE_DONE) return roll_back(d, "join the queue");
  }
  {
    Stmt head(d.db,
              "SELECT waiter, expires_ns FROM tierlock_lease_waiters WHERE key "
              "= ?1 AND "
              "boot_id = ?2 AND expires_ns > ?3 ORDER BY ticket LIMIT 1");
    if (!head.ok()) return roll_back(d, "prepare acquire");
    head.bind(1, request.key).bind(2, d.boot_id).bind(3, now);
    const int rc = head.step();
    if (rc == SQLITE_ROW && (!queued || head.text(0) != request.owner_id)) {
      return wait_turn(d, queued, now,
                       head.int64(1));  // queued behind another waiter
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return roll_back(d, "acquire");
  }
  {
    Stmt held(d.db,
              "SELECT expires_ns FROM tierlock_leases WHERE key = ?1 AND "
              "boot_id = ?2 AND "
              "expires_ns > ?3");
    if (!held.ok()) return roll_back(d, "prepare acquire");
    held.bind(1, request.key).bind(2, d.boot_id).bind(3, now);
    const int rc = held.step();
    if (rc == SQLITE_ROW)
      return wait_turn(d, queued, now, held.int64(0));  // contention
    if (rc != SQLITE_DONE) return roll_back(d, "acquire");
  }
  std::int64_t token = 0;
  {
    Stmt bump(d.db,
              "INSERT INTO tierlock_lease_tokens (key, last) VALUES (?1, 1) "
              "ON CONFLICT (key) DO UPDATE SET last = last + 1 RETURNING last");
    if (!bump.ok() || (bump.bind(1, request.key), bump.step()) != SQLITE_ROW) {
      return roll_back(d, "bump the token");
    }
    token = bump.int64(0);
    (void)bump.step();
  }
  {
    Stmt put(d.db,
             "INSERT OR REPLACE INTO tierlock_leases "
             "(key, owner, session, token, metadata, boot_id, expires_ns) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    if (!put.ok()) return roll_back(d, "prepare acquire");
    put.bind(1, request.key)
        .bind(2, request.owner_id)
        .bind(3, d.options.session);
    put.bind(4, token).bind(5, request.metadata).bind(6, d.boot_id);
    put.bind(7, now + std::chrono::nanoseconds(request.ttl).count());
    if (put.step() != SQLITE_DONE) return roll_back(d, "acquire");
  }
  {
    const internal::GrantMeta meta = internal::this_grant_meta();
    Stmt who(d.db,
             "INSERT OR REPLACE INTO tierlock_lease_holders "
             "(key, owner, token, host, pid, program, since_ms) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    if (!who.ok()) return roll_back(d, "prepare acquire");
    who.bind(1, request.key).bind(2, request.owner_id).bind(3, token);
    who.bind_blob(4, meta.host).bind(5, meta.pid).bind_blob(6, meta.program);
    who.bind(7, internal::unix_ms(std::chrono::system_clock::now()));
    if (who.step() != SQLITE_DONE) return roll_back(d, "record the holder");
  }
  if (queued) {
    Stmt left(
        d.db,
        "DELETE FROM tierlock_lease_waiters WHERE key = ?1 AND waiter = ?2");
    if (!left.ok()) return roll_back(d, "prepare acquire");
    left.bind(1, request.key).bind(2, request.owner_id);
    if (left.step() != SQLITE_DONE) return roll_back(d, "leave the queue");
  }
  if (absl::Status s = d.exec("COMMIT", "commit"); !s.ok()) {
    d.rollback();
    return s;
  }
  internal::WaitTurn turn;
  turn.session.reset(new SqliteSession(db, request.key, request.owner_id,
                                       static_cast<std::uint64_t>(token)));
  return turn;
}

// A waiter's wake signal: a datagram socket bound to its abstract address.
class SqliteWaker {
 public:
  static absl::StatusOr<SqliteWaker> open(const SqliteLeaseOptions& o,
                                          std::string_view waiter) {
    SqliteWaker w(
        ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    socklen_t len = 0;
    const sockaddr_un a = wake_address(waiter, &len);
    if (w.fd_ < 0 ||
        ::bind(w.fd_, reinterpret_cast<const sockaddr*>(&a), len) != 0) {
      return absl::ErrnoToStatus(
          errno, absl::StrCat("sqlite '", escape_text(o.path.string()),
                              "': bind the waiter's wake socket '@",
                              escape_text(std::string_view(
                                  a.sun_path + 1,
                                  len - 1 - offsetof(sockaddr_un, sun_path))),
                              "'"));
    }
    return w;
  }
  SqliteWaker(SqliteWaker&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  SqliteWaker& operator=(SqliteWaker&&) = delete;
  ~SqliteWaker() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }
  absl::StatusOr<bool> drain(bool) {
    bool woken = false;
    char buf[16];
    while (::recv(fd_, buf, sizeof buf, MSG_DONTWAIT) >= 0) woken = true;
    return woken;
  }

 private:
  explicit SqliteWaker(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<LeaseSession>> SqliteLeaseBackend::try_acquire(
    const LeaseRequest& request) {
  absl::StatusOr<internal::WaitTurn> turn =
      grab(db_, request, /*queued=*/false);
  if (!turn.ok()) return turn.status();
  return std::move(turn->session);
}

namespace {

// A queued waiter's steps; they own what they use.
std::unique_ptr<internal::WaitSteps> sqlite_wait_steps(
    const std::shared_ptr<SqliteLeaseBackend::Db>& db, LeaseRequest request) {
  auto req = std::make_shared<const LeaseRequest>(std::move(request));
  return internal::make_wait_steps(
      [db, req] { return SqliteWaker::open(db->options, req->owner_id); },
      [db, req] { return grab(db, *req, /*queued=*/true); },
      [db, req] {
        SqliteLeaseBackend::Db& d = *db;
        UniqueLock lk(d.mu);
        Stmt left(d.db,
                  "DELETE FROM tierlock_lease_waiters WHERE key = ?1 AND "
                  "waiter = ?2");
        if (!left.ok()) return;
        left.bind(1, req->key).bind(2, req->owner_id);
        if (left.step() != SQLITE_DONE) return;
        Stmt held(
            d.db,
            "SELECT 1 FROM tierlock_leases WHERE key = ?1 AND boot_id = ?2 AND "
            "expires_ns > ?3");
        if (!held.ok()) return;
        held.bind(1, req->key).bind(2, d.boot_id).bind(3, monotonic_ns());
        if (held.step() == SQLITE_DONE) d.wake_head(req->key);
      });
}

}  // namespace

absl::StatusOr<std::unique_ptr<LeaseSession>> SqliteLeaseBackend::wait_acquire(
    const LeaseRequest& request, std::chrono::steady_clock::time_point deadline,
    const std::stop_token& stop) {
  absl::StatusOr<internal::WaitTurn> first =
      grab(db_, request, /*queued=*/false);
  if (!first.ok()) return first.status();
  if (first->session) return std::move(first->session);
  std::unique_ptr<internal::WaitSteps> steps = sqlite_wait_steps(db_, request);
  return internal::fair_wait(request, deadline, stop, *steps);
}

absl::StatusOr<std::optional<Holder>> SqliteLeaseBackend::holder_of(
    std::string_view key) {
  Db& d = *db_;
  UniqueLock lk(d.mu);
  Stmt s(d.db,
         "SELECT l.owner, l.token, h.host, h.pid, h.program, h.since_ms "
         "FROM tierlock_leases l LEFT JOIN tierlock_lease_holders h "
         "ON h.key = l.key AND h.owner = l.owner "
         "WHERE l.key = ?1 AND l.boot_id = ?2 AND l.expires_ns > ?3");
  if (!s.ok()) return d.error("prepare holder");
  s.bind(1, key).bind(2, d.boot_id).bind(3, monotonic_ns());
  const int rc = s.step();
  if (rc == SQLITE_DONE) return std::optional<Holder>();
  if (rc != SQLITE_ROW) return d.error("holder");
  Holder h;
  h.owner_id = s.text(0);
  h.token = static_cast<std::uint64_t>(s.int64(1));
  // No side row (granted by an older tierlock): owner and token only.
  if (!s.null(2)) h.host = s.blob(2);
  if (!s.null(3)) h.pid = s.int64(3);
  if (!s.null(4)) h.program = s.blob(4);
  if (!s.null(5)) h.since = internal::from_unix_ms(s.int64(5));
  return std::optional<Holder>(std::move(h));
}

absl::StatusOr<std::vector<Holder>> SqliteLeaseBackend::waiters_of(
    std::string_view key) {
  Db& d = *db_;
  UniqueLock lk(d.mu);
  Stmt s(d.db,
         "SELECT waiter FROM tierlock_lease_waiters WHERE key = ?1 AND "
         "boot_id = ?2 AND expires_ns > ?3 ORDER BY ticket");
  if (!s.ok()) return d.error("prepare waiters");
  s.bind(1, key).bind(2, d.boot_id).bind(3, monotonic_ns());
  std::vector<Holder> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    Holder h;
    h.owner_id = s.text(0);
    out.push_back(std::move(h));
  }
  if (rc != SQLITE_DONE) return d.error("waiters");
  return out;
}

absl::StatusOr<int> SqliteLeaseBackend::release_all(std::string_view session) {
  Db& d = *db_;
  UniqueLock lk(d.mu);
  std::vector<std::string> keys;
  {
    Stmt s(d.db,
           "DELETE FROM tierlock_leases WHERE session = ?1 RETURNING key");
    if (!s.ok()) return d.error("prepare release_all");
    s.bind(1, session);
    int rc;
    while ((rc = s.step()) == SQLITE_ROW) keys.push_back(s.text(0));
    if (rc != SQLITE_DONE) return d.error("release_all");
  }
  for (const std::string& key : keys) d.wake_head(key);
  return static_cast<int>(keys.size());
}

absl::StatusOr<int> SqliteLeaseBackend::reclaim_expired() {
  Db& d = *db_;
  UniqueLock lk(d.mu);
  Stmt s(d.db,
         "DELETE FROM tierlock_leases WHERE boot_id <> ?1 OR expires_ns <= ?2");
  if (!s.ok()) return d.error("prepare reclaim");
  s.bind(1, d.boot_id).bind(2, monotonic_ns());
  if (s.step() != SQLITE_DONE) return d.error("reclaim");
  return sqlite3_changes(d.db);
}

absl::StatusOr<std::vector<SqliteLeaseRow>> SqliteLeaseBackend::list() {
  Db& d = *db_;
  UniqueLock lk(d.mu);
  Stmt s(d.db,
         "SELECT key, owner, session, token, metadata, boot_id = ?1 AND "
         "expires_ns > ?2 "
         "FROM tierlock_leases ORDER BY key");
  if (!s.ok()) return d.error("prepare list");
  s.bind(1, d.boot_id).bind(2, monotonic_ns());
  std::vector<SqliteLeaseRow> rows;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    rows.push_back({s.text(0), s.text(1), s.text(2),
                    static_cast<std::uint64_t>(s.int64(3)), s.text(4),
                    s.int64(5) != 0});
  }
  if (rc != SQLITE_DONE) return d.error("list");
  return rows;
}

}  // namespace tierlock

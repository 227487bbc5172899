// src/lease/redis_backend.cc
//
// RedisLeaseBackend (tierlock/lease_redis.h), on hiredis's blocking API with
// socket timeouts.
#include "tierlock/lease_redis.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <charconv>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/string_util.h"
#include "lease/backends/conn_pool.h"
#include "lease/lease_state.h"
#include "tierlock/text.h"

namespace tierlock {

using internal::to_absl;

namespace {

constexpr char kAcquireScript[] =
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then "
    "return redis.call('INCR', KEYS[2]) end return false";
constexpr char kExtendScript[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
constexpr char kReleaseScript[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('DEL', KEYS[1]) end return 0";

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

struct ContextFree {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Context = std::unique_ptr<redisContext, ContextFree>;

timeval to_timeval(std::chrono::milliseconds d) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

std::string reply_text(const redisReply* r) {
  return std::string(r->str, r->len);
}

// Redis's answers to a missing, wrong or insufficient login.
bool is_auth_error(std::string_view e) {
  for (std::string_view prefix : {"NOAUTH", "WRONGPASS", "NOPERM"}) {
    if (e.substr(0, prefix.size()) == prefix) return true;
  }
  // Redis < 6: "ERR invalid password"; 6+ without a requirepass:
  // "ERR AUTH <password> called without any password configured ...".
  return e.find("invalid password") != std::string_view::npos ||
         e.find("without any password configured") != std::string_view::npos;
}

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    int v = 0;
    if (i + 2 >= s.size()) return std::nullopt;
    auto [end, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
    if (ec != std::errc() || end != s.data() + i + 3) return std::nullopt;
    out.push_back(static_cast<char>(v));
    i += 2;
  }
  return out;
}

}  // namespace

absl::StatusOr<RedisLeaseOptions> RedisLeaseOptions::from_url(std::string_view url) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "redis URL '", escape_text(redact_url(url)), "': ", to_absl(why),
        " (expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB])"));
  };
  constexpr std::string_view kScheme = "redis://";
  if (url.substr(0, kScheme.size()) != kScheme) return bad("not a redis:// URL");
  RedisLeaseOptions o;
  std::string_view rest = url.substr(kScheme.size());
  // The userinfo ends at the last '@' (a password may hold one unencoded).
  if (const std::size_t at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const std::size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      return bad("a user name without a password (write redis://USER:PASSWORD@HOST)");
    }
    std::optional<std::string> user = percent_decode(userinfo.substr(0, colon));
    std::optional<std::string> password = percent_decode(userinfo.substr(colon + 1));
    if (!user || !password) return bad("bad %-escape in the user name or password");
    if (password->empty()) return bad("empty password");
    o.username = *std::move(user);
    o.password = *std::move(password);
  }
  if (const std::size_t slash = rest.find('/'); slash != std::string_view::npos) {
    const std::string_view db = rest.substr(slash + 1);
    if (!db.empty()) {
      auto [end, ec] = std::from_chars(db.data(), db.data() + db.size(), o.database);
      if (ec != std::errc() || end != db.data() + db.size() || o.database < 0) {
        return bad(absl::StrCat("bad database '", escape_text(db), "'"));
      }
    }
    rest = rest.substr(0, slash);
  }
  std::string_view host = rest;
  std::string_view port;
  if (!rest.empty() && rest.front() == '[') {
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos) return bad("unclosed '[' in the host");
    host = rest.substr(1, close - 1);
    const std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("expected ':PORT' after ']'");
      port = after.substr(1);
    }
  } else if (const std::size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (!port.empty() || (rest.size() > host.size() && rest.back() == ':')) {
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), o.port);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() ||
        o.port <= 0 || o.port > 65535) {
      return bad(absl::StrCat("bad port '", escape_text(port), "'"));
    }
  }
  if (!host.empty()) o.host = std::string(host);
  return o;
}

namespace {

using Clock = std::chrono::steady_clock;
using internal::ConnPool;

// One connection to the server, with the SHAs of the scripts it loaded.
struct RedisConnection {
  Context ctx;  // null once a wait on it failed or timed out: drop it
  std::string sha_acquire, sha_extend, sha_release;
};
using ConnPtr = std::unique_ptr<RedisConnection>;

std::string where_of(const RedisLeaseOptions& o) {
  return absl::StrCat("redis ", escape_text(o.host), ":", o.port);
}

// One operation's use of one connection: every wait is bounded by the
// io_timeout and by `deadline` (a renewal passes the lease's validity). A
// transport failure or timeout resets the context: a late reply must never
// be read as the answer to the next command, so the connection is dropped.
class Link {
 public:
  // `late`: why a wait past `deadline` gives up, for messages.
  Link(const RedisLeaseOptions& options, RedisConnection& c, Clock::time_point deadline,
       const char* late = "the lease's validity ended first")
      : options_(options), c_(c), deadline_(deadline), late_(late) {}

  std::string where() const { return where_of(options_); }

  // The socket timeout for the next wait; zero or less: the deadline passed.
  std::chrono::milliseconds wait_budget() const {
    if (deadline_ == Clock::time_point::max()) return options_.io_timeout;
    return std::min(options_.io_timeout, std::chrono::duration_cast<std::chrono::milliseconds>(
                                             deadline_ - Clock::now()));
  }

  // Sends one command; resets the context on a transport error.
  absl::StatusOr<Reply> command(const std::vector<std::string>& args) {
    if (!c_.ctx) return absl::UnavailableError(absl::StrCat(where(), ": not connected"));
    const std::chrono::milliseconds budget = wait_budget();
    if (budget <= std::chrono::milliseconds::zero()) {
      return absl::DeadlineExceededError(
          absl::StrCat(where(), ": ", args[0], ": ", late_));
    }
    if (redisSetTimeout(c_.ctx.get(), to_timeval(budget)) != REDIS_OK) {
      std::string e = c_.ctx->errstr;
      c_.ctx.reset();
      return absl::UnavailableError(absl::StrCat(where(), ": ", args[0], ": ", e));
    }
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    Reply r(static_cast<redisReply*>(redisCommandArgv(
        c_.ctx.get(), static_cast<int>(argv.size()), argv.data(), lens.data())));
    if (!r) {
      std::string e = c_.ctx->errstr;
      c_.ctx.reset();
      return absl::UnavailableError(absl::StrCat(where(), ": ", args[0], ": ", e));
    }
    return r;
  }

  // The status for an error reply to `what` while connecting. Names only the
  // command (its arguments may hold the password) and the server's answer
  // (Redis does not quote a password back).
  absl::Status reply_error(const redisReply& r, std::string_view what) const {
    const std::string e = reply_text(&r);
    if (!is_auth_error(e)) {
      return absl::UnavailableError(absl::StrCat(where(), ": ", to_absl(what), ": ", e));
    }
    std::string login =
        options_.password.empty()
            ? std::string("no password was given: use redis://:PASSWORD@HOST or "
                          "redis://USER:PASSWORD@HOST (RedisLeaseOptions::password)")
        : options_.username.empty()
            ? std::string("the password was refused")
            : absl::StrCat("user '", escape_text(options_.username),
                           "' with that password was refused");
    return absl::PermissionDeniedError(absl::StrCat(
        where(), ": ", to_absl(what), ": authentication failed, ", login,
        " (server: ", escape_text(e), ")"));
  }

  // A command whose error reply is a connection failure (AUTH, SELECT).
  absl::Status simple_command(const std::vector<std::string>& args) {
    absl::StatusOr<Reply> r = command(args);
    if (!r.ok()) return r.status();
    if ((*r)->type == REDIS_REPLY_ERROR) return reply_error(*r->get(), args[0]);
    return absl::OkStatus();
  }

  // Logs in, selects the database and loads the scripts.
  absl::Status set_up() {
    if (!options_.password.empty()) {
      std::vector<std::string> auth = {"AUTH"};
      if (!options_.username.empty()) auth.push_back(options_.username);
      auth.push_back(options_.password);
      if (absl::Status s = simple_command(auth); !s.ok()) return s;
    }
    if (options_.database != 0) {
      if (absl::Status s = simple_command({"SELECT", std::to_string(options_.database)});
          !s.ok()) {
        return s;
      }
    }
    for (auto [script, sha] : {std::pair{kAcquireScript, &c_.sha_acquire},
                               std::pair{kExtendScript, &c_.sha_extend},
                               std::pair{kReleaseScript, &c_.sha_release}}) {
      absl::StatusOr<Reply> r = command({"SCRIPT", "LOAD", script});
      if (!r.ok()) return r.status();
      // The first command after connecting: NOAUTH if a password is due.
      if ((*r)->type == REDIS_REPLY_ERROR) return reply_error(*r->get(), "SCRIPT LOAD");
      if ((*r)->type != REDIS_REPLY_STRING) {
        return absl::UnavailableError(absl::StrCat(where(), ": SCRIPT LOAD failed"));
      }
      *sha = reply_text(r->get());
    }
    return absl::OkStatus();
  }

  // EVALSHA, falling back to EVAL after NOSCRIPT. Errors from the script are
  // kInternal; transport errors kUnavailable.
  absl::StatusOr<Reply> eval(const char* script, std::string RedisConnection::*sha,
                             const std::vector<std::string>& keys_and_args, int nkeys) {
    std::vector<std::string> args = {"EVALSHA", c_.*sha, std::to_string(nkeys)};
    args.insert(args.end(), keys_and_args.begin(), keys_and_args.end());
    absl::StatusOr<Reply> r = command(args);
    if (!r.ok()) return r;
    if ((*r)->type == REDIS_REPLY_ERROR &&
        absl::StartsWith(to_absl(reply_text(r->get())), "NOSCRIPT")) {
      args[0] = "EVAL";
      args[1] = script;
      r = command(args);
      if (!r.ok()) return r;
    }
    if ((*r)->type == REDIS_REPLY_ERROR) {
      return absl::InternalError(absl::StrCat(where(), ": script: ", reply_text(r->get())));
    }
    return r;
  }

  absl::StatusOr<bool> wait_replicas() {
    if (options_.wait_replicas <= 0) return true;
    absl::StatusOr<Reply> r = command({"WAIT", std::to_string(options_.wait_replicas),
                                       std::to_string(options_.wait_timeout.count())});
    if (!r.ok()) return r.status();
    if ((*r)->type != REDIS_REPLY_INTEGER) {
      return absl::UnavailableError(absl::StrCat(where(), ": WAIT failed"));
    }
    return (*r)->integer >= options_.wait_replicas;
  }

  // Compare-and-{extend,delete} of `lease_key` owned by `owner`.
  absl::StatusOr<bool> cas(const char* script, std::string RedisConnection::*sha,
                           const std::string& lease_key, const std::string& owner,
                           const std::string& arg) {
    std::vector<std::string> a = {lease_key, owner};
    if (!arg.empty()) a.push_back(arg);
    absl::StatusOr<Reply> r = eval(script, sha, a, 1);
    if (!r.ok()) return r.status();
    return (*r)->type == REDIS_REPLY_INTEGER && (*r)->integer == 1;
  }

 private:
  const RedisLeaseOptions& options_;
  RedisConnection& c_;
  Clock::time_point deadline_;
  const char* late_;
};

// Opens a connection and sets it up, every wait bounded by `deadline`.
absl::StatusOr<ConnPtr> open_connection(const RedisLeaseOptions& o, Clock::time_point deadline) {
  const auto budget = std::min(
      o.io_timeout, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
  if (budget <= std::chrono::milliseconds::zero()) {
    return absl::DeadlineExceededError(absl::StrCat("connect to ", where_of(o), ": timed out"));
  }
  const timeval tv = to_timeval(budget);
  Context c(redisConnectWithTimeout(o.host.c_str(), o.port, tv));
  if (!c || c->err != 0) {
    return absl::UnavailableError(absl::StrCat("connect to ", where_of(o), ": ",
                                               c ? c->errstr : "out of memory"));
  }
  if (redisEnableKeepAlive(c.get()) != REDIS_OK) {
    return absl::UnavailableError(absl::StrCat("connect to ", where_of(o), ": ", c->errstr));
  }
  auto conn = std::make_unique<RedisConnection>();
  conn->ctx = std::move(c);
  if (absl::Status s = Link(o, *conn, deadline, "connect timeout").set_up(); !s.ok()) return s;
  return conn;
}

}  // namespace

// The backend's state, shared with its sessions. Its connections live in a
// pool: an operation takes one (waiting for the background connector if
// none is ready, bounded like any wait), gives it back if it is still sound,
// or drops it (closed at once) after a transport error or timeout, and the
// connector opens a replacement in the background. No lock is held across
// I/O, so a lease whose connection froze never holds up another lease.
struct RedisLeaseBackend::Conn {
  RedisLeaseOptions options;
  std::shared_ptr<ConnPool<ConnPtr>> pool;

  ~Conn() {
    if (pool) pool->shutdown();
  }

  std::string where() const { return where_of(options); }
  std::string lease_key(std::string_view key) const {
    return absl::StrCat(options.prefix, "{", to_absl(key), "}:lease");
  }
  std::string token_key(std::string_view key) const {
    return absl::StrCat(options.prefix, "{", to_absl(key), "}:token");
  }

  // Runs fn(Link&) on a connection taken from the pool, every wait bounded
  // by the io_timeout and by `deadline` (waiting for a connection too, by
  // the connect timeout, i.e. the io_timeout). `sent` (optional) is set once
  // a connection was had (the request may then have reached the server).
  template <typename Fn>
  auto with_link(Clock::time_point deadline, Fn&& fn, bool* sent = nullptr)
      -> decltype(fn(std::declval<Link&>())) {
    const Clock::time_point take_by = std::min(deadline, Clock::now() + options.io_timeout);
    absl::StatusOr<ConnPtr> c = pool->take(take_by, where());
    if (!c.ok()) {
      if (deadline != Clock::time_point::max() && Clock::now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            where(), ": the lease's validity ended before a connection was ready (",
            c.status().message(), ")"));
      }
      return c.status();
    }
    if (sent != nullptr) *sent = true;
    Link link(options, **c, deadline);
    auto r = fn(link);
    if ((*c)->ctx) {
      pool->give_back(*std::move(c));
    } else {
      pool->drop(*std::move(c));
    }
    return r;
  }

  absl::StatusOr<bool> cas(const char* script, std::string RedisConnection::*sha,
                           const std::string& key, const std::string& owner,
                           const std::string& arg,
                           Clock::time_point deadline = Clock::time_point::max()) {
    return with_link(deadline, [&](Link& l) { return l.cas(script, sha, lease_key(key), owner, arg); });
  }
};

namespace {

class RedisSession final : public LeaseSession {
 public:
  RedisSession(std::shared_ptr<RedisLeaseBackend::Conn> conn, std::string key,
               std::string owner, std::uint64_t token)
      : conn_(std::move(conn)), key_(std::move(key)), owner_(std::move(owner)), token_(token) {}
  std::optional<std::uint64_t> token() const override { return token_; }
  absl::StatusOr<bool> extend(std::chrono::milliseconds ttl) override {
    return extend_before(ttl, Clock::time_point::max());
  }
  absl::StatusOr<bool> extend_before(std::chrono::milliseconds ttl,
                                     Clock::time_point deadline) override {
    RedisLeaseBackend::Conn& c = *conn_;
    return c.with_link(deadline, [&](Link& l) -> absl::StatusOr<bool> {
      absl::StatusOr<bool> r = l.cas(kExtendScript, &RedisConnection::sha_extend,
                                     c.lease_key(key_), owner_, std::to_string(ttl.count()));
      if (!r.ok() || !*r) return r;
      absl::StatusOr<bool> acked = l.wait_replicas();
      if (!acked.ok()) return acked.status();
      if (!*acked) {
        return absl::UnavailableError(absl::StrCat(c.where(), ": extend not acknowledged by ",
                                                   c.options.wait_replicas, " replicas"));
      }
      return true;
    });
  }
  absl::StatusOr<bool> release() override {
    return conn_->cas(kReleaseScript, &RedisConnection::sha_release, key_, owner_, "");
  }

 private:
  std::shared_ptr<RedisLeaseBackend::Conn> conn_;
  std::string key_;
  std::string owner_;
  std::uint64_t token_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<RedisLeaseBackend>> RedisLeaseBackend::create(
    RedisLeaseOptions options) {
  if (options.io_timeout <= std::chrono::milliseconds::zero()) {
    return absl::InvalidArgumentError("redis leases: io_timeout must be positive");
  }
  // The first connection is opened here, to report an unreachable server or
  // a refused login at once.
  absl::StatusOr<ConnPtr> first = open_connection(options, Clock::now() + options.io_timeout);
  if (!first.ok()) return first.status();
  auto conn = std::make_shared<Conn>();
  conn->options = std::move(options);
  conn->pool = ConnPool<ConnPtr>::create(
      [o = conn->options](Clock::time_point deadline,
                          const std::stop_token&) -> absl::StatusOr<ConnPtr> {
        return open_connection(o, deadline);
      },
      conn->options.io_timeout, *std::move(first));
  return std::shared_ptr<RedisLeaseBackend>(new RedisLeaseBackend(std::move(conn)));
}

RedisLeaseBackend::~RedisLeaseBackend() = default;

LeaseCapabilities RedisLeaseBackend::capabilities() const {
  return {.ttl = true, .fencing = true, .shared = false, .survives_failover = false,
          .metadata = false};
}

std::string RedisLeaseBackend::lease_key(std::string_view key) const {
  return conn_->lease_key(key);
}

absl::StatusOr<std::unique_ptr<LeaseSession>> RedisLeaseBackend::try_acquire(
    const LeaseRequest& request) {
  Conn& c = *conn_;
  bool sent = false;
  absl::StatusOr<std::optional<std::uint64_t>> got = c.with_link(
      Clock::time_point::max(),
      [&](Link& l) -> absl::StatusOr<std::optional<std::uint64_t>> {
        absl::StatusOr<Reply> r =
            l.eval(kAcquireScript, &RedisConnection::sha_acquire,
                   {c.lease_key(request.key), c.token_key(request.key), request.owner_id,
                    std::to_string(request.ttl.count())},
                   2);
        if (!r.ok()) return r.status();
        if ((*r)->type == REDIS_REPLY_NIL) return std::optional<std::uint64_t>();
        if ((*r)->type != REDIS_REPLY_INTEGER || (*r)->integer <= 0) {
          return absl::InternalError(absl::StrCat(c.where(), ": unexpected reply to the grant"));
        }
        const auto token = static_cast<std::uint64_t>((*r)->integer);
        absl::StatusOr<bool> acked = l.wait_replicas();
        if (!acked.ok() || !*acked) {
          if (!acked.ok()) return acked.status();
          return absl::UnavailableError(absl::StrCat(
              c.where(), ": grant not acknowledged by ", c.options.wait_replicas,
              " replicas within ", c.options.wait_timeout.count(), " ms (released)"));
        }
        return std::optional<std::uint64_t>(token);
      },
      &sent);
  if (!got.ok()) {
    // The reply may be lost after the grant: delete it if it is ours (on
    // another connection). Not needed when no connection was had: nothing
    // was sent.
    if (sent) {
      (void)c.cas(kReleaseScript, &RedisConnection::sha_release, request.key, request.owner_id,
                  "");
    }
    return got.status();
  }
  if (!got->has_value()) return std::unique_ptr<LeaseSession>();
  return std::unique_ptr<LeaseSession>(
      new RedisSession(conn_, request.key, request.owner_id, **got));
}

}  // namespace tierlock

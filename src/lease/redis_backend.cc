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
#include "lease/lease_state.h"
#include "string_util.h"
#include "tierlock/text.h"

namespace tierlock {

using internal::Mutex;
using internal::UniqueLock;
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

struct RedisLeaseBackend::Conn {
  RedisLeaseOptions options;
  Mutex mu;
  Context ctx ABSL_GUARDED_BY(mu);
  std::string sha_acquire ABSL_GUARDED_BY(mu), sha_extend ABSL_GUARDED_BY(mu),
      sha_release ABSL_GUARDED_BY(mu);
  // Set while a renewal runs: no wait (connect, send, reply) goes past it.
  std::optional<std::chrono::steady_clock::time_point> op_deadline ABSL_GUARDED_BY(mu);

  // The socket timeout for the next wait: io_timeout, capped by op_deadline.
  // Zero or less: the deadline has passed.
  std::chrono::milliseconds wait_budget() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (!op_deadline) return options.io_timeout;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        *op_deadline - std::chrono::steady_clock::now());
    return std::min(options.io_timeout, left);
  }

  std::string where() const {
    return absl::StrCat("redis ", escape_text(options.host), ":", options.port);
  }

  // Sends one command; drops the connection on a transport error.
  absl::StatusOr<Reply> command(const std::vector<std::string>& args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (absl::Status s = ensure_connected(); !s.ok()) return s;
    const std::chrono::milliseconds budget = wait_budget();
    if (budget <= std::chrono::milliseconds::zero()) {
      return absl::DeadlineExceededError(
          absl::StrCat(where(), ": ", args[0], ": the lease's validity ended first"));
    }
    if (redisSetTimeout(ctx.get(), to_timeval(budget)) != REDIS_OK) {
      std::string e = ctx->errstr;
      ctx.reset();
      return absl::UnavailableError(absl::StrCat(where(), ": ", args[0], ": ", e));
    }
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    Reply r(static_cast<redisReply*>(
        redisCommandArgv(ctx.get(), static_cast<int>(argv.size()), argv.data(), lens.data())));
    if (!r) {
      // Timed out or broken: the connection is abandoned (a late reply must
      // not be read as the answer to the next command) and the next command
      // opens a new one.
      std::string e = ctx->errstr;
      ctx.reset();
      return absl::UnavailableError(absl::StrCat(where(), ": ", args[0], ": ", e));
    }
    return r;
  }

  absl::Status ensure_connected() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (ctx) return absl::OkStatus();
    const std::chrono::milliseconds budget = wait_budget();
    if (budget <= std::chrono::milliseconds::zero()) {
      return absl::DeadlineExceededError(
          absl::StrCat("connect to ", where(), ": the lease's validity ended first"));
    }
    const timeval tv = to_timeval(budget);
    Context c(redisConnectWithTimeout(options.host.c_str(), options.port, tv));
    if (!c || c->err != 0) {
      return absl::UnavailableError(absl::StrCat(
          "connect to ", where(), ": ", c ? c->errstr : "out of memory"));
    }
    if (redisSetTimeout(c.get(), tv) != REDIS_OK || redisEnableKeepAlive(c.get()) != REDIS_OK) {
      return absl::UnavailableError(absl::StrCat("connect to ", where(), ": ", c->errstr));
    }
    ctx = std::move(c);
    if (!options.password.empty()) {
      std::vector<std::string> auth = {"AUTH"};
      if (!options.username.empty()) auth.push_back(options.username);
      auth.push_back(options.password);
      if (absl::Status s = simple_command(auth); !s.ok()) return s;
    }
    if (options.database != 0) {
      if (absl::Status s = simple_command({"SELECT", std::to_string(options.database)}); !s.ok()) {
        return s;
      }
    }
    for (auto [script, sha] : {std::pair{kAcquireScript, &sha_acquire},
                               std::pair{kExtendScript, &sha_extend},
                               std::pair{kReleaseScript, &sha_release}}) {
      absl::StatusOr<Reply> r = command({"SCRIPT", "LOAD", script});
      if (!r.ok()) return r.status();
      if ((*r)->type == REDIS_REPLY_ERROR) {
        // The first command after connecting: NOAUTH if a password is due.
        absl::Status s = reply_error(*r->get(), "SCRIPT LOAD");
        ctx.reset();
        return s;
      }
      if ((*r)->type != REDIS_REPLY_STRING) {
        ctx.reset();
        return absl::UnavailableError(absl::StrCat(where(), ": SCRIPT LOAD failed"));
      }
      *sha = reply_text(r->get());
    }
    return absl::OkStatus();
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
        options.password.empty()
            ? std::string("no password was given: use redis://:PASSWORD@HOST or "
                          "redis://USER:PASSWORD@HOST (RedisLeaseOptions::password)")
        : options.username.empty()
            ? std::string("the password was refused")
            : absl::StrCat("user '", escape_text(options.username),
                           "' with that password was refused");
    return absl::PermissionDeniedError(absl::StrCat(
        where(), ": ", to_absl(what), ": authentication failed, ", login,
        " (server: ", escape_text(e), ")"));
  }

  // A command whose error reply is a connection failure (AUTH, SELECT).
  absl::Status simple_command(const std::vector<std::string>& args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    absl::StatusOr<Reply> r = command(args);
    if (!r.ok()) return r.status();
    if ((*r)->type == REDIS_REPLY_ERROR) {
      absl::Status s = reply_error(*r->get(), args[0]);
      ctx.reset();
      return s;
    }
    return absl::OkStatus();
  }

  // EVALSHA, falling back to EVAL after NOSCRIPT. Errors from the script are
  // kInternal; transport errors kUnavailable.
  absl::StatusOr<Reply> eval(const char* script, std::string Conn::*sha,
                             const std::vector<std::string>& keys_and_args, int nkeys)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (absl::Status s = ensure_connected(); !s.ok()) return s;
    std::vector<std::string> args = {"EVALSHA", this->*sha, std::to_string(nkeys)};
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

  absl::StatusOr<bool> wait_replicas() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (options.wait_replicas <= 0) return true;
    absl::StatusOr<Reply> r = command({"WAIT", std::to_string(options.wait_replicas),
                                       std::to_string(options.wait_timeout.count())});
    if (!r.ok()) return r.status();
    if ((*r)->type != REDIS_REPLY_INTEGER) {
      return absl::UnavailableError(absl::StrCat(where(), ": WAIT failed"));
    }
    return (*r)->integer >= options.wait_replicas;
  }

  std::string lease_key(std::string_view key) const {
    return absl::StrCat(options.prefix, "{", to_absl(key), "}:lease");
  }
  std::string token_key(std::string_view key) const {
    return absl::StrCat(options.prefix, "{", to_absl(key), "}:token");
  }

  absl::StatusOr<bool> cas(const char* script, std::string Conn::*sha, const std::string& key,
                           const std::string& owner, const std::string& arg) {
    UniqueLock lk(mu);
    return cas_locked(script, sha, key, owner, arg);
  }
  absl::StatusOr<bool> cas_locked(const char* script, std::string Conn::*sha,
                                  const std::string& key, const std::string& owner,
                                  const std::string& arg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::vector<std::string> a = {lease_key(key), owner};
    if (!arg.empty()) a.push_back(arg);
    absl::StatusOr<Reply> r = eval(script, sha, a, 1);
    if (!r.ok()) return r.status();
    return (*r)->type == REDIS_REPLY_INTEGER && (*r)->integer == 1;
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
    return extend_before(ttl, std::chrono::steady_clock::time_point::max());
  }
  absl::StatusOr<bool> extend_before(std::chrono::milliseconds ttl,
                                     std::chrono::steady_clock::time_point deadline) override {
    UniqueLock lk(conn_->mu);
    if (deadline != std::chrono::steady_clock::time_point::max()) conn_->op_deadline = deadline;
    absl::StatusOr<bool> r = extend_locked(ttl);
    conn_->op_deadline.reset();
    return r;
  }
  absl::StatusOr<bool> extend_locked(std::chrono::milliseconds ttl)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(conn_->mu) {
    absl::StatusOr<bool> r = conn_->cas_locked(kExtendScript, &RedisLeaseBackend::Conn::sha_extend,
                                               key_, owner_, std::to_string(ttl.count()));
    if (!r.ok() || !*r) return r;
    absl::StatusOr<bool> acked = conn_->wait_replicas();
    if (!acked.ok()) return acked.status();
    if (!*acked) {
      return absl::UnavailableError(absl::StrCat(conn_->where(), ": extend not acknowledged by ",
                                                 conn_->options.wait_replicas, " replicas"));
    }
    return true;
  }
  absl::StatusOr<bool> release() override {
    return conn_->cas(kReleaseScript, &RedisLeaseBackend::Conn::sha_release, key_, owner_, "");
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
  auto conn = std::make_shared<Conn>();
  conn->options = std::move(options);
  {
    UniqueLock lk(conn->mu);
    if (absl::Status s = conn->ensure_connected(); !s.ok()) return s;
  }
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
  std::uint64_t token = 0;
  {
    UniqueLock lk(c.mu);
    absl::StatusOr<Reply> r =
        c.eval(kAcquireScript, &Conn::sha_acquire,
               {c.lease_key(request.key), c.token_key(request.key), request.owner_id,
                std::to_string(request.ttl.count())},
               2);
    if (!r.ok()) {
      lk.unlock();
      // The reply may be lost after the grant: delete it if it is ours.
      (void)c.cas(kReleaseScript, &Conn::sha_release, request.key, request.owner_id, "");
      return r.status();
    }
    if ((*r)->type == REDIS_REPLY_NIL) return std::unique_ptr<LeaseSession>();
    if ((*r)->type != REDIS_REPLY_INTEGER || (*r)->integer <= 0) {
      return absl::InternalError(absl::StrCat(c.where(), ": unexpected reply to the grant"));
    }
    token = static_cast<std::uint64_t>((*r)->integer);
    absl::StatusOr<bool> acked = c.wait_replicas();
    if (!acked.ok() || !*acked) {
      lk.unlock();
      (void)c.cas(kReleaseScript, &Conn::sha_release, request.key, request.owner_id, "");
      if (!acked.ok()) return acked.status();
      return absl::UnavailableError(absl::StrCat(
          c.where(), ": grant not acknowledged by ", c.options.wait_replicas,
          " replicas within ", c.options.wait_timeout.count(), " ms (released)"));
    }
  }
  return std::unique_ptr<LeaseSession>(
      new RedisSession(conn_, request.key, request.owner_id, token));
}

}  // namespace tierlock

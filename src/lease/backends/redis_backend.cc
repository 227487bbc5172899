// src/lease/redis_backend.cc
//
// RedisLeaseBackend (tierlock/lease_redis.h), on hiredis's blocking API with
// socket timeouts.
#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <charconv>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/string_util.h"
#include "lease/backends/conn_pool.h"
#include "lease/backends/fair_wait.h"
#include "lease/grant_meta.h"
#include "lease/lease_state.h"
#include "tierlock/lease_redis.h"
#include "tierlock/text.h"

namespace tierlock {

using internal::to_absl;

namespace {

// The server's clock in ms, and the purge of the key's queue: waiters whose
// expiry passed are gone (a dead waiter leaves within its ttl). Then `wake`
// publishes to the live head's own channel; a head nobody listens to (its
// subscription closed: the waiter died) leaves the queue and the next one is
// woken instead.
#define TL_REDIS_QUEUE_PRELUDE                                               \
  "local t = redis.call('TIME') "                                            \
  "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "   \
  "local function purge(q, qe) "                                             \
  "  local dead = redis.call('ZRANGEBYSCORE', qe, '-inf', now) "             \
  "  for _, d in ipairs(dead) do redis.call('ZREM', q, d) end "              \
  "  if #dead > 0 then redis.call('ZREMRANGEBYSCORE', qe, '-inf', now) end " \
  "end "                                                                     \
  "local function wake(q, qe, chan) "                                        \
  "  purge(q, qe) "                                                          \
  "  while true do "                                                         \
  "    local h = redis.call('ZRANGE', q, 0, 0)[1] "                          \
  "    if not h then return end "                                            \
  "    if redis.call('PUBLISH', chan .. h, '') > 0 then return end "         \
  "    redis.call('ZREM', q, h) redis.call('ZREM', qe, h) "                  \
  "  end "                                                                   \
  "end "

// KEYS: lease, token, queue (waiter -> ticket), queue expiry (waiter ->
// ms), ticket counter, holder (hash). ARGV: owner, ttl ms, waiter ('' for a
// try), waiter ttl ms, then the grant's host, pid, program and since (unix
// ms) for the holder hash (LeaseBackend::holder_of), which describes the
// lease only while its owner field equals the lease's value: it has no
// expiry (one per key, like the token counter) and is replaced at each
// grant, so renewals and releases need not touch it. A try takes a free key
// only if no live waiter is queued; a waiter joins (or refreshes its expiry)
// and takes it only at the head. Returns {1, token} or {0, ms until the state
// can change without a wake (the head's or the lease's expiry; negative:
// none)}.
constexpr char kAcquireScript[] = TL_REDIS_QUEUE_PRELUDE
    "local q, qe, me = KEYS[3], KEYS[4], ARGV[3] "
    "purge(q, qe) "
    "if me ~= '' then "
    "  local wttl = tonumber(ARGV[4]) "
    "  if not redis.call('ZSCORE', q, me) then "
    "    redis.call('ZADD', q, redis.call('INCR', KEYS[5]), me) end "
    "  redis.call('ZADD', qe, now + wttl, me) "
    "  for _, k in ipairs({q, qe, KEYS[5]}) do "
    "    if redis.call('PTTL', k) < wttl then redis.call('PEXPIRE', k, wttl) "
    "end end "
    "end "
    "local head, e "
    "while true do "  // a ticket without an expiry is dead too
    "  head = redis.call('ZRANGE', q, 0, 0)[1] "
    "  if not head then break end "
    "  e = redis.call('ZSCORE', qe, head) "
    "  if e then break end "
    "  redis.call('ZREM', q, head) "
    "end "
    "if head and head ~= me then return {0, tonumber(e) - now} end "
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then "
    "  if me ~= '' then redis.call('ZREM', q, me) redis.call('ZREM', qe, me) "
    "end "
    "  local tok = redis.call('INCR', KEYS[2]) "
    "  redis.call('HSET', KEYS[6], 'owner', ARGV[1], 'token', tok, 'host', "
    "ARGV[5], 'pid', ARGV[6], 'program', ARGV[7], 'since', ARGV[8]) "
    "  return {1, tok} end "
    "return {0, redis.call('PTTL', KEYS[1])}";
// KEYS: lease, holder. Returns {} if the key is free, else {owner, the
// holder hash as a flat field/value list}.
constexpr char kHolderScript[] =
    "local o = redis.call('GET', KEYS[1]) if not o then return {} end "
    "return {o, redis.call('HGETALL', KEYS[2])}";
// KEYS: queue, queue expiry. Returns the live waiters in ticket order.
constexpr char kWaitersScript[] =
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "local out = {} "
    "for _, w in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do "
    "  local e = redis.call('ZSCORE', KEYS[2], w) "
    "  if e and tonumber(e) > now then out[#out + 1] = w end "
    "end return out";
constexpr char kExtendScript[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
// KEYS: lease, queue, queue expiry. ARGV: owner, wake channel prefix.
constexpr char kReleaseScript[] = TL_REDIS_QUEUE_PRELUDE
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "  redis.call('DEL', KEYS[1]) wake(KEYS[2], KEYS[3], ARGV[2]) return 1 end "
    "return 0";
// KEYS: lease, queue, queue expiry. ARGV: waiter, wake channel prefix. The
// next head is woken if the key is free (this waiter may have been woken
// for it and be leaving instead).
constexpr char kLeaveScript[] = TL_REDIS_QUEUE_PRELUDE
    "redis.call('ZREM', KEYS[2], ARGV[1]) redis.call('ZREM', KEYS[3], ARGV[1]) "
    "if redis.call('EXISTS', KEYS[1]) == 0 then wake(KEYS[2], KEYS[3], "
    "ARGV[2]) end "
    "return 1";
#undef TL_REDIS_QUEUE_PRELUDE

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

absl::StatusOr<RedisLeaseOptions> RedisLeaseOptions::from_url(
    std::string_view url) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "redis URL '", escape_text(redact_url(url)), "': ", to_absl(why),
        " (expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB])"));
  };
  constexpr std::string_view kScheme = "redis://";
  if (url.substr(0, kScheme.size()) != kScheme)
    return bad("not a redis:// URL");
  RedisLeaseOptions o;
  std::string_view rest = url.substr(kScheme.size());
  // The userinfo ends at the last '@' (a password may hold one unencoded).
  if (const std::size_t at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const std::size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      return bad(
          "a user name without a password (write redis://USER:PASSWORD@HOST)");
    }
    std::optional<std::string> user = percent_decode(userinfo.substr(0, colon));
    std::optional<std::string> password =
        percent_decode(userinfo.substr(colon + 1));
    if (!user || !password)
      return bad("bad %-escape in the user name or password");
    if (password->empty()) return bad("empty password");
    o.username = *std::move(user);
    o.password = *std::move(password);
  }
  if (const std::size_t slash = rest.find('/');
      slash != std::string_view::npos) {
    const std::string_view db = rest.substr(slash + 1);
    if (!db.empty()) {
      auto [end, ec] =
          std::from_chars(db.data(), db.data() + db.size(), o.database);
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
  } else if (const std::size_t colon = rest.rfind(':');
             colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (!port.empty() || (rest.size() > host.size() && rest.back() == ':')) {
    auto [end, ec] =
        std::from_chars(port.data(), port.data() + port.size(), o.port);
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
  std::string sha_acquire, sha_extend, sha_release, sha_leave;
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
  Link(const RedisLeaseOptions& options, RedisConnection& c,
       Clock::time_point deadline,
       const char* late = "the lease's validity ended first")
      : options_(options), c_(c), deadline_(deadline), late_(late) {}

  std::string where() const { return where_of(options_); }

  // The socket timeout for the next wait; zero or less: the deadline passed.
  std::chrono::milliseconds wait_budget() const {
    if (deadline_ == Clock::time_point::max()) return options_.io_timeout;
    return std::min(options_.io_timeout,
                    std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline_ - Clock::now()));
  }

  // Sends one command; resets the context on a transport error.
  absl::StatusOr<Reply> command(const std::vector<std::string>& args) {
    if (!c_.ctx)
      return absl::UnavailableError(absl::StrCat(where(), ": not connected"));
    const std::chrono::milliseconds budget = wait_budget();
    if (budget <= std::chrono::milliseconds::zero()) {
      return absl::DeadlineExceededError(
          absl::StrCat(where(), ": ", args[0], ": ", late_));
    }
    if (redisSetTimeout(c_.ctx.get(), to_timeval(budget)) != REDIS_OK) {
      std::string e = c_.ctx->errstr;
      c_.ctx.reset();
      return absl::UnavailableError(
          absl::StrCat(where(), ": ", args[0], ": ", e));
    }
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    Reply r(static_cast<redisReply*>(
        redisCommandArgv(c_.ctx.get(), static_cast<int>(argv.size()),
                         argv.data(), lens.data())));
    if (!r) {
      std::string e = c_.ctx->errstr;
      c_.ctx.reset();
      return absl::UnavailableError(
          absl::StrCat(where(), ": ", args[0], ": ", e));
    }
    return r;
  }

  // The status for an error reply to `what` while connecting. Names only the
  // command (its arguments may hold the password) and the server's answer
  // (Redis does not quote a password back).
  absl::Status reply_error(const redisReply& r, std::string_view what) const {
    const std::string e = reply_text(&r);
    if (!is_auth_error(e)) {
      return absl::UnavailableError(
          absl::StrCat(where(), ": ", to_absl(what), ": ", e));
    }
    std::string login =
        options_.password.empty()
            ? std::string(
                  "no password was given: use redis://:PASSWORD@HOST or "
                  "redis://USER:PASSWORD@HOST (RedisLeaseOptions::password)")
        : options_.username.empty()
            ? std::string("the password was refused")
            : absl::StrCat("user '", escape_text(options_.username),
                           "' with that password was refused");
    return absl::PermissionDeniedError(
        absl::StrCat(where(), ": ", to_absl(what), ": authentication failed, ",
                     login, " (server: ", escape_text(e), ")"));
  }

  // A command whose error reply is a connection failure (AUTH, SELECT).
  absl::Status simple_command(const std::vector<std::string>& args) {
    absl::StatusOr<Reply> r = command(args);
    if (!r.ok()) return r.status();
    if ((*r)->type == REDIS_REPLY_ERROR) return reply_error(*r->get(), args[0]);
    return absl::OkStatus();
  }

  // Logs in, selects the database and loads the scripts (unless
  // `scripts` is false: a waiter's subscription runs none).
  absl::Status set_up(bool scripts = true) {
    if (!options_.password.empty()) {
      std::vector<std::string> auth = {"AUTH"};
      if (!options_.username.empty()) auth.push_back(options_.username);
      auth.push_back(options_.password);
      if (absl::Status s = simple_command(auth); !s.ok()) return s;
    }
    if (options_.database != 0) {
      if (absl::Status s =
              simple_command({"SELECT", std::to_string(options_.database)});
          !s.ok()) {
        return s;
      }
    }
    if (!scripts) return absl::OkStatus();
    for (auto [script, sha] : {std::pair{kAcquireScript, &c_.sha_acquire},
                               std::pair{kExtendScript, &c_.sha_extend},
                               std::pair{kReleaseScript, &c_.sha_release},
                               std::pair{kLeaveScript, &c_.sha_leave}}) {
      absl::StatusOr<Reply> r = command({"SCRIPT", "LOAD", script});
      if (!r.ok()) return r.status();
      // The first command after connecting: NOAUTH if a password is due.
      if ((*r)->type == REDIS_REPLY_ERROR)
        return reply_error(*r->get(), "SCRIPT LOAD");
      if ((*r)->type != REDIS_REPLY_STRING) {
        return absl::UnavailableError(
            absl::StrCat(where(), ": SCRIPT LOAD failed"));
      }
      *sha = reply_text(r->get());
    }
    return absl::OkStatus();
  }

  // EVALSHA, falling back to EVAL after NOSCRIPT. Errors from the script are
  // kInternal; transport errors kUnavailable.
  absl::StatusOr<Reply> eval(const char* script,
                             std::string RedisConnection::*sha,
                             const std::vector<std::string>& keys_and_args,
                             int nkeys) {
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
      return absl::InternalError(
          absl::StrCat(where(), ": script: ", reply_text(r->get())));
    }
    return r;
  }

  absl::StatusOr<bool> wait_replicas() {
    if (options_.wait_replicas <= 0) return true;
    absl::StatusOr<Reply> r =
        command({"WAIT", std::to_string(options_.wait_replicas),
                 std::to_string(options_.wait_timeout.count())});
    if (!r.ok()) return r.status();
    if ((*r)->type != REDIS_REPLY_INTEGER) {
      return absl::UnavailableError(absl::StrCat(where(), ": WAIT failed"));
    }
    return (*r)->integer >= options_.wait_replicas;
  }

  // Compare-and-{extend,delete} of `lease_key` owned by `owner`.
  absl::StatusOr<bool> cas(const char* script,
                           std::string RedisConnection::*sha,
                           const std::string& lease_key,
                           const std::string& owner, const std::string& arg) {
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
absl::StatusOr<ConnPtr> open_connection(const RedisLeaseOptions& o,
                                        Clock::time_point deadline,
                                        bool scripts = true) {
  const auto budget = std::min(
      o.io_timeout, std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - Clock::now()));
  if (budget <= std::chrono::milliseconds::zero()) {
    return absl::DeadlineExceededError(
        absl::StrCat("connect to ", where_of(o), ": timed out"));
  }
  const timeval tv = to_timeval(budget);
  Context c(redisConnectWithTimeout(o.host.c_str(), o.port, tv));
  if (!c || c->err != 0) {
    return absl::UnavailableError(absl::StrCat(
        "connect to ", where_of(o), ": ", c ? c->errstr : "out of memory"));
  }
  if (redisEnableKeepAlive(c.get()) != REDIS_OK) {
    return absl::UnavailableError(
        absl::StrCat("connect to ", where_of(o), ": ", c->errstr));
  }
  auto conn = std::make_unique<RedisConnection>();
  conn->ctx = std::move(c);
  if (absl::Status s =
          Link(o, *conn, deadline, "connect timeout").set_up(scripts);
      !s.ok()) {
    return s;
  }
  return conn;
}

// A waiter's wake signal: a connection of its own subscribed to the
// waiter's channel (a subscribed connection can run nothing else), read
// without blocking once poll(2) says it is readable.
class RedisWaker {
 public:
  static absl::StatusOr<RedisWaker> open(const RedisLeaseOptions& o,
                                         const std::string& channel) {
    const Clock::time_point deadline = Clock::now() + o.io_timeout;
    absl::StatusOr<ConnPtr> c = open_connection(o, deadline, /*scripts=*/false);
    if (!c.ok()) return c.status();
    Link link(o, **c, deadline, "connect timeout");
    absl::StatusOr<Reply> r = link.command({"SUBSCRIBE", channel});
    if (!r.ok()) return r.status();
    if ((*r)->type == REDIS_REPLY_ERROR)
      return link.reply_error(*r->get(), "SUBSCRIBE");
    return RedisWaker(o, *std::move(c));
  }
  int fd() const { return c_->ctx->fd; }
  absl::StatusOr<bool> drain(bool readable) {
    redisContext* ctx = c_->ctx.get();
    if (readable && redisBufferRead(ctx) != REDIS_OK) {
      return absl::UnavailableError(absl::StrCat(
          where_of(*o_), ": waiter's subscription: ", ctx->errstr));
    }
    bool woken = false;
    for (;;) {
      void* reply = nullptr;
      if (redisGetReplyFromReader(ctx, &reply) != REDIS_OK) {
        return absl::UnavailableError(absl::StrCat(
            where_of(*o_), ": waiter's subscription: ", ctx->errstr));
      }
      if (reply == nullptr) return woken;
      freeReplyObject(reply);
      woken = true;  // only messages come after the subscription's reply
    }
  }

 private:
  RedisWaker(const RedisLeaseOptions& o, ConnPtr c)
      : o_(&o), c_(std::move(c)) {}
  const RedisLeaseOptions* o_;
  ConnPtr c_;
};

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
  std::string holder_key(std::string_view key) const {
    return absl::StrCat(options.prefix, "{", to_absl(key), "}:holder");
  }
  std::string token_key(std::string_view key) const {
    return absl::StrCat(options.prefix, "{", to_absl(key), "}:token");
  }
  // The key's queue of waiters: waiter -> arrival ticket, waiter -> expiry
  // (server ms), and the ticket counter.
  std::string queue_key(std::string_view key) const {
    return absl::StrCat(options.prefix, "{", to_absl(key), "}:waiters");
  }
  std::string queue_expiry_key(std::string_view key) const {
    return absl::StrCat(options.prefix, "{", to_absl(key), "}:waiters:expiry");
  }
  std::string ticket_key(std::string_view key) const {
    return absl::StrCat(options.prefix, "{", to_absl(key), "}:waiters:ticket");
  }
  // A waiter's channel is this prefix and its id: the release wakes the
  // head only (no herd of waiters re-checking).
  std::string wake_prefix() const {
    return absl::StrCat(options.prefix, "wake:");
  }

  // Compare-and-delete of `key`'s lease owned by `owner`, waking the head of
  // its queue.
  absl::StatusOr<bool> release(const std::string& key,
                               const std::string& owner) {
    return with_link(
        Clock::time_point::max(), [&](Link& l) -> absl::StatusOr<bool> {
          absl::StatusOr<Reply> r =
              l.eval(kReleaseScript, &RedisConnection::sha_release,
                     {lease_key(key), queue_key(key), queue_expiry_key(key),
                      owner, wake_prefix()},
                     3);
          if (!r.ok()) return r.status();
          return (*r)->type == REDIS_REPLY_INTEGER && (*r)->integer == 1;
        });
  }

  // Runs fn(Link&) on a connection taken from the pool, every wait bounded
  // by the io_timeout and by `deadline` (waiting for a connection too, by
  // the connect timeout, i.e. the io_timeout). `sent` (optional) is set once
  // a connection was had (the request may then have reached the server).
  template <typename Fn>
  auto with_link(Clock::time_point deadline, Fn&& fn, bool* sent = nullptr)
      -> decltype(fn(std::declval<Link&>())) {
    const Clock::time_point take_by =
        std::min(deadline, Clock::now() + options.io_timeout);
    absl::StatusOr<ConnPtr> c = pool->take(take_by, where());
    if (!c.ok()) {
      if (deadline != Clock::time_point::max() && Clock::now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            where(),
            ": the lease's validity ended before a connection was ready (",
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

  absl::StatusOr<bool> cas(
      const char* script, std::string RedisConnection::*sha,
      const std::string& key, const std::string& owner, const std::string& arg,
      Clock::time_point deadline = Clock::time_point::max()) {
    return with_link(deadline, [&](Link& l) {
      return l.cas(script, sha, lease_key(key), owner, arg);
    });
  }
};

namespace {

class RedisSession final : public LeaseSession {
 public:
  RedisSession(std::shared_ptr<RedisLeaseBackend::Conn> conn, std::string key,
               std::string owner, std::uint64_t token)
      : conn_(std::move(conn)),
        key_(std::move(key)),
        owner_(std::move(owner)),
        token_(token) {}
  std::optional<std::uint64_t> token() const override { return token_; }
  absl::StatusOr<bool> extend(std::chrono::milliseconds ttl) override {
    return extend_before(ttl, Clock::time_point::max());
  }
  absl::StatusOr<bool> extend_before(std::chrono::milliseconds ttl,
                                     Clock::time_point deadline) override {
    RedisLeaseBackend::Conn& c = *conn_;
    return c.with_link(deadline, [&](Link& l) -> absl::StatusOr<bool> {
      absl::StatusOr<bool> r =
          l.cas(kExtendScript, &RedisConnection::sha_extend, c.lease_key(key_),
                owner_, std::to_string(ttl.count()));
      if (!r.ok() || !*r) return r;
      absl::StatusOr<bool> acked = l.wait_replicas();
      if (!acked.ok()) return acked.status();
      if (!*acked) {
        return absl::UnavailableError(
            absl::StrCat(c.where(), ": extend not acknowledged by ",
                         c.options.wait_replicas, " replicas"));
      }
      return true;
    });
  }
  absl::StatusOr<bool> release() override {
    return conn_->release(key_, owner_);
  }

 private:
  std::shared_ptr<RedisLeaseBackend::Conn> conn_;
  std::string key_;
  std::string owner_;
  std::uint64_t token_;
};

}  // namespace

namespace {
std::unique_ptr<internal::WaitSteps> redis_wait_steps(
    const std::shared_ptr<RedisLeaseBackend::Conn>& conn, LeaseRequest request);
}  // namespace

absl::StatusOr<std::shared_ptr<RedisLeaseBackend>> RedisLeaseBackend::create(
    RedisLeaseOptions options) {
  if (options.io_timeout <= std::chrono::milliseconds::zero()) {
    return absl::InvalidArgumentError(
        "redis leases: io_timeout must be positive");
  }
  // The first connection is opened here, to report an unreachable server or
  // a refused login at once.
  absl::StatusOr<ConnPtr> first =
      open_connection(options, Clock::now() + options.io_timeout);
  if (!first.ok()) return first.status();
  auto conn = std::make_shared<Conn>();
  conn->options = std::move(options);
  conn->pool = ConnPool<ConnPtr>::create(
      [o = conn->options](Clock::time_point deadline, const std::stop_token&)
          -> absl::StatusOr<ConnPtr> { return open_connection(o, deadline); },
      conn->options.io_timeout, *std::move(first));
  std::shared_ptr<RedisLeaseBackend> backend(new RedisLeaseBackend(conn));
  internal::set_wait_steps(backend.get(), [conn](const LeaseRequest& r) {
    return redis_wait_steps(conn, r);
  });
  return backend;
}

RedisLeaseBackend::~RedisLeaseBackend() {
  internal::set_wait_steps(this, nullptr);
}

LeaseCapabilities RedisLeaseBackend::capabilities() const {
  return {.ttl = true,
          .fencing = true,
          .shared = false,
          .survives_failover = false,
          .metadata = false};
}

std::string RedisLeaseBackend::lease_key(std::string_view key) const {
  return conn_->lease_key(key);
}

namespace {

// One grant attempt: a try (`queued` false: takes a free key only if no live
// waiter is queued) or a queued waiter's (joins or refreshes its place, takes
// the key at the head). An outcome the reply leaves unknown is an error, and
// the lease is then deleted if it was granted.
absl::StatusOr<internal::WaitTurn> grab(
    const std::shared_ptr<RedisLeaseBackend::Conn>& conn,
    const LeaseRequest& request, bool queued) {
  RedisLeaseBackend::Conn& c = *conn;
  bool sent = false;
  struct Got {
    std::optional<std::uint64_t> token;
    std::int64_t retry_in_ms = -1;
  };
  absl::StatusOr<Got> got = c.with_link(
      Clock::time_point::max(),
      [&](Link& l) -> absl::StatusOr<Got> {
        const std::string ttl = std::to_string(request.ttl.count());
        const internal::GrantMeta meta = internal::this_grant_meta();
        absl::StatusOr<Reply> r = l.eval(
            kAcquireScript, &RedisConnection::sha_acquire,
            {c.lease_key(request.key), c.token_key(request.key),
             c.queue_key(request.key), c.queue_expiry_key(request.key),
             c.ticket_key(request.key), c.holder_key(request.key),
             request.owner_id, ttl, queued ? request.owner_id : std::string(),
             ttl, meta.host, std::to_string(meta.pid), meta.program,
             std::to_string(
                 internal::unix_ms(std::chrono::system_clock::now()))},
            6);
        if (!r.ok()) return r.status();
        const redisReply& a = **r;
        if (a.type != REDIS_REPLY_ARRAY || a.elements != 2 ||
            a.element[0]->type != REDIS_REPLY_INTEGER ||
            a.element[1]->type != REDIS_REPLY_INTEGER) {
          return absl::InternalError(
              absl::StrCat(c.where(), ": unexpected reply to the grant"));
        }
        if (a.element[0]->integer == 0)
          return Got{std::nullopt, a.element[1]->integer};
        if (a.element[1]->integer <= 0) {
          return absl::InternalError(
              absl::StrCat(c.where(), ": unexpected token in the grant"));
        }
        const auto token = static_cast<std::uint64_t>(a.element[1]->integer);
        absl::StatusOr<bool> acked = l.wait_replicas();
        if (!acked.ok() || !*acked) {
          if (!acked.ok()) return acked.status();
          return absl::UnavailableError(
              absl::StrCat(c.where(), ": grant not acknowledged by ",
                           c.options.wait_replicas, " replicas within ",
                           c.options.wait_timeout.count(), " ms (released)"));
        }
        return Got{token, -1};
      },
      &sent);
  if (!got.ok()) {
    // The reply may be lost after the grant: delete it if it is ours (on
    // another connection). Not needed when no connection was had: nothing
    // was sent.
    if (sent) {
      (void)c.release(request.key, request.owner_id);
    }
    return got.status();
  }
  internal::WaitTurn turn;
  if (!got->token) {
    turn.retry_in = std::chrono::milliseconds(got->retry_in_ms);
    return turn;
  }
  turn.session.reset(
      new RedisSession(conn, request.key, request.owner_id, *got->token));
  return turn;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LeaseSession>> RedisLeaseBackend::try_acquire(
    const LeaseRequest& request) {
  absl::StatusOr<internal::WaitTurn> turn =
      grab(conn_, request, /*queued=*/false);
  if (!turn.ok()) return turn.status();
  return std::move(turn->session);
}

absl::StatusOr<std::optional<Holder>> RedisLeaseBackend::holder_of(
    std::string_view key) {
  Conn& c = *conn_;
  return c.with_link(
      Clock::time_point::max(),
      [&](Link& l) -> absl::StatusOr<std::optional<Holder>> {
        // A plain EVAL: read-only and rare, not worth a cached script.
        absl::StatusOr<Reply> r = l.command(
            {"EVAL", kHolderScript, "2", c.lease_key(key), c.holder_key(key)});
        if (!r.ok()) return r.status();
        const redisReply& a = **r;
        if (a.type == REDIS_REPLY_ERROR) {
          return absl::InternalError(
              absl::StrCat(c.where(), ": holder: ", reply_text(&a)));
        }
        if (a.type != REDIS_REPLY_ARRAY) {
          return absl::InternalError(
              absl::StrCat(c.where(), ": unexpected reply to holder"));
        }
        if (a.elements == 0) return std::optional<Holder>();
        if (a.elements != 2 || a.element[0]->type != REDIS_REPLY_STRING ||
            a.element[1]->type != REDIS_REPLY_ARRAY) {
          return absl::InternalError(
              absl::StrCat(c.where(), ": unexpected reply to holder"));
        }
        Holder h;
        h.owner_id = reply_text(a.element[0]);
        const redisReply& f = *a.element[1];
        std::map<std::string, std::string> fields;
        for (std::size_t i = 0; i + 1 < f.elements; i += 2) {
          if (f.element[i]->type != REDIS_REPLY_STRING ||
              f.element[i + 1]->type != REDIS_REPLY_STRING) {
            continue;
          }
          fields[reply_text(f.element[i])] = reply_text(f.element[i + 1]);
        }
        // The hash of an earlier grant (or none: an older tierlock granted
        // it) says nothing about this one.
        auto owner = fields.find("owner");
        if (owner == fields.end() || owner->second != *h.owner_id) {
          return std::optional<Holder>(std::move(h));
        }
        std::uint64_t token = 0;
        std::int64_t n = 0;
        if (absl::SimpleAtoi(fields["token"], &token)) h.token = token;
        if (absl::SimpleAtoi(fields["pid"], &n)) h.pid = n;
        if (absl::SimpleAtoi(fields["since"], &n)) {
          h.since = internal::from_unix_ms(n);
        }
        if (auto it = fields.find("host"); it != fields.end()) {
          h.host = it->second;
        }
        if (auto it = fields.find("program"); it != fields.end()) {
          h.program = it->second;
        }
        return std::optional<Holder>(std::move(h));
      });
}

absl::StatusOr<std::vector<Holder>> RedisLeaseBackend::waiters_of(
    std::string_view key) {
  Conn& c = *conn_;
  return c.with_link(
      Clock::time_point::max(),
      [&](Link& l) -> absl::StatusOr<std::vector<Holder>> {
        absl::StatusOr<Reply> r =
            l.command({"EVAL", kWaitersScript, "2", c.queue_key(key),
                       c.queue_expiry_key(key)});
        if (!r.ok()) return r.status();
        const redisReply& a = **r;
        if (a.type != REDIS_REPLY_ARRAY) {
          return absl::InternalError(absl::StrCat(
              c.where(), ": unexpected reply to waiters",
              a.type == REDIS_REPLY_ERROR ? ": " + reply_text(&a) : ""));
        }
        std::vector<Holder> out;
        for (std::size_t i = 0; i < a.elements; ++i) {
          if (a.element[i]->type != REDIS_REPLY_STRING) continue;
          Holder h;
          h.owner_id = reply_text(a.element[i]);
          out.push_back(std::move(h));
        }
        return out;
      });
}

namespace {

// A queued waiter's steps; they own what they use (async waits outlive the
// call that started them).
std::unique_ptr<internal::WaitSteps> redis_wait_steps(
    const std::shared_ptr<RedisLeaseBackend::Conn>& conn,
    LeaseRequest request) {
  auto req = std::make_shared<const LeaseRequest>(std::move(request));
  return internal::make_wait_steps(
      [conn, req] {
        return RedisWaker::open(conn->options,
                                conn->wake_prefix() + req->owner_id);
      },
      [conn, req] { return grab(conn, *req, /*queued=*/true); },
      [conn, req] {
        RedisLeaseBackend::Conn& c = *conn;
        (void)c.with_link(Clock::time_point::max(), [&](Link& l) {
          return l.eval(
              kLeaveScript, &RedisConnection::sha_leave,
              {c.lease_key(req->key), c.queue_key(req->key),
               c.queue_expiry_key(req->key), req->owner_id, c.wake_prefix()},
              3);
        });
      });
}

}  // namespace

absl::StatusOr<std::unique_ptr<LeaseSession>> RedisLeaseBackend::wait_acquire(
    const LeaseRequest& request, Clock::time_point deadline,
    const std::stop_token& stop) {
  // Uncontended: one round trip, no subscription.
  absl::StatusOr<internal::WaitTurn> first =
      grab(conn_, request, /*queued=*/false);
  if (!first.ok()) return first.status();
  if (first->session) return std::move(first->session);
  std::unique_ptr<internal::WaitSteps> steps = redis_wait_steps(conn_, request);
  return internal::fair_wait(request, deadline, stop, *steps);
}

}  // namespace tierlock

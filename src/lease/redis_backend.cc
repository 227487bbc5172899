// src/lease/redis_backend.cc
//
// RedisLeaseBackend (tierlock/lease_redis.h), on hiredis's blocking API with
// socket timeouts.
#include "tierlock/lease_redis.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lease/lease_state.h"
#include "string_util.h"

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

}  // namespace

struct RedisLeaseBackend::Conn {
  RedisLeaseOptions options;
  Mutex mu;
  Context ctx ABSL_GUARDED_BY(mu);
  std::string sha_acquire ABSL_GUARDED_BY(mu), sha_extend ABSL_GUARDED_BY(mu),
      sha_release ABSL_GUARDED_BY(mu);

  std::string where() const { return absl::StrCat("redis ", options.host, ":", options.port); }

  // Sends one command; drops the connection on a transport error.
  absl::StatusOr<Reply> command(const std::vector<std::string>& args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (absl::Status s = ensure_connected(); !s.ok()) return s;
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    Reply r(static_cast<redisReply*>(
        redisCommandArgv(ctx.get(), static_cast<int>(argv.size()), argv.data(), lens.data())));
    if (!r) {
      std::string e = ctx->errstr;
      ctx.reset();
      return absl::UnavailableError(absl::StrCat(where(), ": ", args[0], ": ", e));
    }
    return r;
  }

  absl::Status ensure_connected() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (ctx) return absl::OkStatus();
    const timeval tv = to_timeval(options.io_timeout);
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
      if (absl::Status s = simple_command({"AUTH", options.password}); !s.ok()) return s;
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
      if ((*r)->type != REDIS_REPLY_STRING) {
        ctx.reset();
        return absl::UnavailableError(absl::StrCat(where(), ": SCRIPT LOAD failed"));
      }
      *sha = reply_text(r->get());
    }
    return absl::OkStatus();
  }

  // A command whose error reply is a connection failure (AUTH, SELECT).
  absl::Status simple_command(const std::vector<std::string>& args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    absl::StatusOr<Reply> r = command(args);
    if (!r.ok()) return r.status();
    if ((*r)->type == REDIS_REPLY_ERROR) {
      std::string e = reply_text(r->get());
      ctx.reset();
      return absl::UnavailableError(absl::StrCat(where(), ": ", args[0], ": ", e));
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
    absl::StatusOr<bool> r = conn_->cas(kExtendScript, &RedisLeaseBackend::Conn::sha_extend,
                                        key_, owner_, std::to_string(ttl.count()));
    if (!r.ok() || !*r) return r;
    UniqueLock lk(conn_->mu);
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

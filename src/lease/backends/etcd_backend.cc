// src/lease/etcd_backend.cc
//
// EtcdLeaseBackend (tierlock/lease_etcd.h): etcd v3 through its JSON gateway
// (POST /v3/..., int64 fields as JSON strings, keys base64), over libcurl.
// Unary requests use pooled easy handles with a timeout each; a waiter's
// watch is one streaming POST driven by a multi handle that a stop request
// wakes (curl_multi_wakeup).
#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/string_util.h"
#include "lease/lease_state.h"
#include "nlohmann/json.hpp"
#include "tierlock/lease_etcd.h"
#include "tierlock/text.h"

namespace tierlock {

using internal::Mutex;
using internal::to_absl;
using internal::UniqueLock;
using json = nlohmann::json;
using SteadyTime = std::chrono::steady_clock::time_point;
using std::chrono::milliseconds;

namespace {

constexpr SteadyTime kNoDeadline = SteadyTime::max();

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

SteadyTime now() { return std::chrono::steady_clock::now(); }

// etcd's TTLs are whole seconds: round up, so the cluster never expires a
// lease before the holder's own deadline.
std::int64_t ttl_seconds(milliseconds ttl) {
  return std::max<std::int64_t>(1, (ttl.count() + 999) / 1000);
}

// Ids are chosen here, not by the cluster, so that a grant whose reply was
// lost can still be revoked. Positive and non-zero (0 asks etcd to choose).
std::int64_t random_lease_id() {
  thread_local std::mt19937_64 rng(
      std::random_device{}() ^
      (static_cast<std::uint64_t>(std::random_device{}()) << 32));
  std::int64_t id = 0;
  while (id == 0) id = static_cast<std::int64_t>(rng() >> 2);
  return id;
}

std::string hex(std::int64_t id) { return absl::StrFormat("%x", id); }

// An int64 field: the gateway writes them as strings; absent means 0.
std::int64_t int_field(const json& j, const char* name) {
  if (!j.is_object()) return 0;
  const auto it = j.find(name);
  if (it == j.end()) return 0;
  if (it->is_number_integer()) return it->get<std::int64_t>();
  if (!it->is_string()) return 0;
  const std::string& s = it->get_ref<const std::string&>();
  std::int64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

std::string b64(std::string_view s) { return absl::Base64Escape(to_absl(s)); }

std::string unb64(const json& j) {
  std::string out;
  if (j.is_string()) absl::Base64Unescape(j.get<std::string>(), &out);
  return out;
}

// The end of a prefix range: the prefix with its last byte incremented (the
// prefixes here end in '/', so there is no carry).
std::string prefix_end(std::string p) {
  p.back() = static_cast<char>(p.back() + 1);
  return p;
}

struct HttpReply {
  long code = 0;
  std::string body;
};

std::size_t append_body(char* data, std::size_t size, std::size_t n,
                        void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

struct SlistFree {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using Headers = std::unique_ptr<curl_slist, SlistFree>;

Headers json_headers(bool require_leader) {
  curl_slist* l = curl_slist_append(nullptr, "Content-Type: application/json");
  // A watch on a member cut off from the leader would never see an event:
  // etcd ends such watches when asked to ("hasleader" gRPC metadata, which
  // the gateway takes from this header).
  if (require_leader) l = curl_slist_append(l, "Grpc-Metadata-hasleader: true");
  return Headers(l);
}

// etcd answers that mean "ask another member (or again)".
bool retryable(int code, std::string_view message) {
  return code == 14 /* UNAVAILABLE */ || code == 4 /* DEADLINE_EXCEEDED */ ||
         absl::StrContains(to_absl(message), "leader") ||
         absl::StrContains(to_absl(message), "timed out") ||
         absl::StrContains(to_absl(message), "stopped");
}

// One lock key in a range reply.
struct LockKey {
  std::string key;
  std::int64_t create_revision = 0;
};

}  // namespace

// ------------------------------------------------------------------ options

absl::StatusOr<EtcdLeaseOptions> EtcdLeaseOptions::from_url(
    std::string_view url) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "etcd URL '", escape_text(redact_url(url)), "': ", to_absl(why),
        " (expected etcd://HOST[:PORT][,HOST[:PORT]...])"));
  };
  constexpr std::string_view kScheme = "etcd://";
  if (url.substr(0, kScheme.size()) != kScheme)
    return bad("not an etcd:// URL");
  std::string_view rest = url.substr(kScheme.size());
  if (rest.find_first_of("/@?#") != std::string_view::npos) {
    return bad("only hosts and ports may follow etcd://");
  }
  EtcdLeaseOptions o;
  for (std::size_t start = 0; start <= rest.size();) {
    std::size_t comma = rest.find(',', start);
    if (comma == std::string_view::npos) comma = rest.size();
    const std::string_view item = rest.substr(start, comma - start);
    start = comma + 1;
    std::string_view host = item;
    std::string_view port;
    bool v6 = false;
    if (!item.empty() && item.front() == '[') {
      const std::size_t close = item.find(']');
      if (close == std::string_view::npos) return bad("unclosed '[' in a host");
      host = item.substr(1, close - 1);
      v6 = true;
      const std::string_view after = item.substr(close + 1);
      if (!after.empty()) {
        if (after.front() != ':') return bad("expected ':PORT' after ']'");
        port = after.substr(1);
        if (port.empty()) return bad("empty port");
      }
    } else if (const std::size_t colon = item.rfind(':');
               colon != std::string_view::npos) {
      host = item.substr(0, colon);
      port = item.substr(colon + 1);
      if (port.empty()) return bad("empty port");
    }
    if (host.empty()) return bad("empty host");
    int p = 2379;
    if (!port.empty()) {
      auto [end, ec] =
          std::from_chars(port.data(), port.data() + port.size(), p);
      if (ec != std::errc() || end != port.data() + port.size() || p <= 0 ||
          p > 65535) {
        return bad(absl::StrCat("bad port '", escape_text(port), "'"));
      }
    }
    o.endpoints.push_back(absl::StrCat("http://", v6 ? "[" : "", to_absl(host),
                                       v6 ? "]" : "", ":", p));
    if (comma == rest.size()) break;
  }
  return o;
}

// ------------------------------------------------------------------ client

struct EtcdLeaseBackend::Client {
  EtcdLeaseOptions options;
  // The member requests go to first; moved on when it fails.
  std::atomic<std::size_t> current{0};
  Mutex mu;
  std::vector<CURL*> idle
      ABSL_GUARDED_BY(mu);  // pooled handles (kept connections)

  ~Client() {
    UniqueLock lk(mu);
    for (CURL* c : idle) curl_easy_cleanup(c);
  }

  CURL* take() {
    {
      UniqueLock lk(mu);
      if (!idle.empty()) {
        CURL* c = idle.back();
        idle.pop_back();
        return c;
      }
    }
    return curl_easy_init();
  }
  void give(CURL* c) {
    UniqueLock lk(mu);
    if (idle.size() < 8) {
      idle.push_back(c);
      return;
    }
    lk.native().unlock();
    curl_easy_cleanup(c);
  }

  // Moves off member `i` (unless another thread already did).
  void advance(std::size_t i) {
    std::size_t expected = i;
    current.compare_exchange_strong(expected,
                                    (i + 1) % options.endpoints.size());
  }

  // One POST to one member, at most `budget`. A transport failure (refused,
  // timed out, reset) is kUnavailable; the handle, and its connection, are
  // dropped then, so a late reply is never read as the next one's.
  absl::StatusOr<HttpReply> post(const std::string& endpoint,
                                 std::string_view path, const std::string& body,
                                 milliseconds budget) {
    CURL* c = take();
    if (c == nullptr)
      return absl::ResourceExhaustedError("etcd: curl_easy_init failed");
    curl_easy_reset(c);
    const std::string url = absl::StrCat(endpoint, to_absl(path));
    HttpReply reply;
    Headers headers = json_headers(false);
    const long ms = std::max<long>(1, static_cast<long>(budget.count()));
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &append_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, ms);
    const CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
      curl_easy_cleanup(c);
      return absl::UnavailableError(absl::StrCat(
          url, ": ", curl_easy_strerror(rc), " (after at most ", ms, " ms)"));
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.code);
    give(c);
    return reply;
  }

  // Calls `path` on the cluster, moving to the next member when one fails or
  // has no leader, until `deadline` or io_timeout from now (kUnavailable
  // then, naming the last failure). An error etcd answered that no other
  // member would answer differently is returned with etcd's code (gRPC codes
  // are absl's) and message. Every request here may be sent again safely:
  // grants and transactions are written so that a second copy changes
  // nothing (see the callers).
  absl::StatusOr<json> call(std::string_view path, const json& request,
                            SteadyTime deadline) {
    const std::string body = request.dump();
    const SteadyTime start = now();
    const SteadyTime end = std::min(deadline, start + options.io_timeout);
    const std::size_t n = options.endpoints.size();
    std::string last = "no member was tried";
    for (;;) {
      for (std::size_t k = 0; k < n; ++k) {
        const SteadyTime t = now();
        if (t >= end) break;
        const std::size_t i = current.load() % n;
        const std::string& ep = options.endpoints[i];
        const milliseconds left = std::chrono::ceil<milliseconds>(end - t);
        // Leave time for another member unless this is the last one.
        const milliseconds budget =
            k + 1 < n ? std::max(left / 2, std::min(left, milliseconds(200)))
                      : left;
        absl::StatusOr<HttpReply> r = post(ep, path, body, budget);
        if (!r.ok()) {
          last = std::string(r.status().message());
          advance(i);
          continue;
        }
        json j = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
        if (r->code == 200 && j.is_object()) return j;
        const int code =
            j.is_object() ? static_cast<int>(int_field(j, "code")) : 0;
        std::string message =
            j.is_object() && j.contains("message") && j["message"].is_string()
                ? j["message"].get<std::string>()
                : absl::StrCat("HTTP ", r->code, ": ", r->body.substr(0, 200));
        const std::string what = absl::StrCat(ep, to_absl(path), ": ", message);
        if (r->code != 200 && !retryable(code, message) && code > 0 &&
            code <= 16) {
          return absl::Status(static_cast<absl::StatusCode>(code), what);
        }
        last = what;
        advance(i);
      }
      const SteadyTime t = now();
      if (t >= end) break;
      // Every member failed once: an election takes about one election
      // timeout; try again shortly rather than spin.
      std::this_thread::sleep_for(
          std::min<std::chrono::nanoseconds>(milliseconds(50), end - t));
    }
    return absl::UnavailableError(absl::StrCat(
        "etcd ", to_absl(path), ": no member answered within ",
        std::chrono::duration_cast<milliseconds>(now() - start).count(),
        " ms (last: ", last, ")"));
  }

  // Grants lease `id` for `ttl_s` seconds. kAlreadyExists if the id is taken.
  absl::Status grant(std::int64_t id, std::int64_t ttl_s, SteadyTime deadline) {
    absl::StatusOr<json> r = call(
        "/v3/lease/grant",
        {{"ID", std::to_string(id)}, {"TTL", std::to_string(ttl_s)}}, deadline);
    if (r.ok()) {
      if (int_field(*r, "ID") != id) {
        return absl::InternalError(absl::StrCat("etcd: granted lease ",
                                                hex(int_field(*r, "ID")),
                                                ", asked for ", hex(id)));
      }
      return absl::OkStatus();
    }
    if (absl::StrContains(r.status().message(), "lease already exists")) {
      return absl::AlreadyExistsError(r.status().message());
    }
    return r.status();
  }

  // Revokes lease `id` (deleting its keys). True if it existed.
  absl::StatusOr<bool> revoke(std::int64_t id, SteadyTime deadline) {
    absl::StatusOr<json> r =
        call("/v3/lease/revoke", {{"ID", std::to_string(id)}}, deadline);
    if (r.ok()) return true;
    if (r.status().code() == absl::StatusCode::kNotFound) return false;
    return r.status();
  }

  // Renews lease `id` to its full TTL. False if it is gone (expired, revoked).
  absl::StatusOr<bool> keepalive(std::int64_t id, SteadyTime deadline) {
    absl::StatusOr<json> r =
        call("/v3/lease/keepalive", {{"ID", std::to_string(id)}}, deadline);
    if (!r.ok()) return r.status();
    return int_field(r->value("result", json::object()), "TTL") > 0;
  }

  // A range over a lock's keys: every key under `prefix`, oldest first.
  static json range_request(const std::string& prefix) {
    return {{"key", b64(prefix)},
            {"range_end", b64(prefix_end(prefix))},
            {"sort_order", "ASCEND"},
            {"sort_target", "CREATE"},
            {"keys_only", true}};
  }

  // The lock's keys in create order from a range response, without keys one
  // level deeper (another lock's: KEY/x/<id> is under KEY/ too).
  static std::vector<LockKey> lock_keys(const json& range,
                                        const std::string& prefix) {
    std::vector<LockKey> out;
    const auto kvs = range.find("kvs");
    if (kvs == range.end() || !kvs->is_array()) return out;
    for (const json& kv : *kvs) {
      LockKey k{unb64(kv.value("key", json())),
                int_field(kv, "create_revision")};
      if (k.key.size() <= prefix.size() ||
          k.key.find('/', prefix.size()) != std::string::npos) {
        continue;
      }
      out.push_back(std::move(k));
    }
    return out;
  }

  // Ranges over the lock's keys. Returns them and the revision read at.
  absl::StatusOr<std::pair<std::vector<LockKey>, std::int64_t>> range(
      const std::string& prefix) {
    absl::StatusOr<json> r =
        call("/v3/kv/range", range_request(prefix), kNoDeadline);
    if (!r.ok()) return r.status();
    return std::pair{lock_keys(*r, prefix),
                     int_field(r->value("header", json::object()), "revision")};
  }

  enum class WatchEnd { kDeleted, kRecheck, kDeadline, kStopped };

  // Watches `key` on one member from revision `from` until it is deleted
  // (kDeleted), the watch ends or is cancelled (kRecheck: look again),
  // `deadline` (kDeadline) or `stop` (kStopped). Calls `keep` whenever
  // `next_keep` passes (it moves it on); returns keep's error. Sends nothing
  // else while it waits: no polling.
  absl::StatusOr<WatchEnd> watch_delete(
      const std::string& key, std::int64_t from, SteadyTime deadline,
      const std::stop_token& stop, SteadyTime& next_keep,
      const std::function<absl::Status()>& keep) {
    struct Stream {
      std::string buf;
      bool created = false;
      bool deleted = false;
      bool recheck = false;
      static std::size_t on_data(char* data, std::size_t size, std::size_t n,
                                 void* p) {
        auto* s = static_cast<Stream*>(p);
        s->buf.append(data, size * n);
        for (std::size_t nl; (nl = s->buf.find('\n')) != std::string::npos;) {
          const json j = json::parse(s->buf.substr(0, nl), nullptr, false);
          s->buf.erase(0, nl + 1);
          if (!j.is_object()) continue;
          if (j.contains("error")) s->recheck = true;
          const json r = j.value("result", json::object());
          if (r.value("created", false)) s->created = true;
          if (r.value("canceled", false)) s->recheck = true;
          for (const json& ev : r.value("events", json::array())) {
            if (ev.value("type", "PUT") == "DELETE") s->deleted = true;
          }
        }
        return size * n;
      }
    } stream;
    const std::size_t i = current.load() % options.endpoints.size();
    const std::string url = absl::StrCat(options.endpoints[i], "/v3/watch");
    const std::string body =
        json{{"create_request",
              {{"key", b64(key)}, {"start_revision", std::to_string(from)}}}}
            .dump();
    Headers headers = json_headers(true);
    std::unique_ptr<CURLM, CURLMcode (*)(CURLM*)> multi(curl_multi_init(),
                                                        &curl_multi_cleanup);
    std::unique_ptr<CURL, void (*)(CURL*)> easy(curl_easy_init(),
                                                &curl_easy_cleanup);
    if (!multi || !easy)
      return absl::ResourceExhaustedError("etcd watch: curl init failed");
    curl_easy_setopt(easy.get(), CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy.get(), CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy.get(), CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(easy.get(), CURLOPT_POSTFIELDSIZE,
                     static_cast<long>(body.size()));
    curl_easy_setopt(easy.get(), CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(easy.get(), CURLOPT_WRITEFUNCTION, &Stream::on_data);
    curl_easy_setopt(easy.get(), CURLOPT_WRITEDATA, &stream);
    curl_easy_setopt(easy.get(), CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(options.io_timeout.count()));
    curl_multi_add_handle(multi.get(), easy.get());
    absl::StatusOr<WatchEnd> result = WatchEnd::kRecheck;
    {
      std::stop_callback wake(stop,
                              [m = multi.get()] { curl_multi_wakeup(m); });
      for (;;) {
        int running = 0;
        curl_multi_perform(multi.get(), &running);
        if (stream.deleted) {
          result = WatchEnd::kDeleted;
          break;
        }
        if (stream.recheck) break;
        if (running == 0) {
          // The stream ended: the member went away or closed it. Look
          // again, through another member if this one failed.
          int left = 0;
          CURLMsg* msg = curl_multi_info_read(multi.get(), &left);
          if (msg != nullptr && msg->msg == CURLMSG_DONE &&
              msg->data.result != CURLE_OK) {
            advance(i);
          }
          break;
        }
        if (stop.stop_requested()) {
          result = WatchEnd::kStopped;
          break;
        }
        const SteadyTime t = now();
        if (t >= deadline) {
          result = WatchEnd::kDeadline;
          break;
        }
        if (t >= next_keep) {
          if (absl::Status s = keep(); !s.ok()) {
            result = s;
            break;
          }
          // The renewal had to leave the member this watch is on: it may be
          // frozen or cut off, and its watch silent. Watch elsewhere.
          if (current.load() % options.endpoints.size() != i) break;
          continue;
        }
        const auto wait =
            std::chrono::ceil<milliseconds>(std::min(deadline, next_keep) - t);
        curl_multi_poll(
            multi.get(), nullptr, 0,
            static_cast<int>(std::clamp<std::int64_t>(wait.count(), 0, 1000)),
            nullptr);
      }
    }
    // A watch refused outright (never created) is looked at again no sooner
    // than 100 ms later, so a member that keeps refusing is not hammered.
    if (result.ok() && *result == WatchEnd::kRecheck && !stream.created) {
      std::stop_callback wake(stop,
                              [m = multi.get()] { curl_multi_wakeup(m); });
      const auto wait = std::clamp<std::int64_t>(
          std::chrono::ceil<milliseconds>(deadline - now()).count(), 0, 100);
      curl_multi_poll(multi.get(), nullptr, 0, static_cast<int>(wait), nullptr);
    }
    curl_multi_remove_handle(multi.get(), easy.get());
    return result;
  }
};

// ------------------------------------------------------------------ session

namespace {

class EtcdSession final : public LeaseSession {
 public:
  EtcdSession(std::shared_ptr<EtcdLeaseBackend::Client> client, std::string key,
              std::int64_t lease_id, std::int64_t ttl_s, std::uint64_t token,
              SteadyTime validity_start)
      : client_(std::move(client)),
        key_(std::move(key)),
        lease_id_(lease_id),
        ttl_s_(ttl_s),
        token_(token),
        validity_start_(validity_start) {}

  std::optional<std::uint64_t> token() const override { return token_; }
  std::optional<SteadyTime> validity_start() const override {
    return validity_start_;
  }

  absl::StatusOr<bool> extend(milliseconds ttl) override {
    return extend_before(ttl, kNoDeadline);
  }
  absl::StatusOr<bool> extend_before(milliseconds ttl,
                                     SteadyTime deadline) override {
    const std::int64_t secs = ttl_seconds(ttl);
    if (secs == ttl_s_) return client_->keepalive(lease_id_, deadline);
    return relet(secs, deadline);
  }
  absl::StatusOr<bool> release() override {
    return client_->revoke(lease_id_, kNoDeadline);
  }

 private:
  // An etcd lease's TTL is fixed at grant: a new TTL is a new lease, and the
  // key moves to it by a put, which keeps its create revision (the token),
  // only if the key is still ours.
  absl::StatusOr<bool> relet(std::int64_t secs, SteadyTime deadline) {
    const std::int64_t id = random_lease_id();
    if (absl::Status s = client_->grant(id, secs, deadline); !s.ok()) {
      (void)client_->revoke(id, kNoDeadline);  // the reply may have been lost
      return s;
    }
    const std::string k = b64(key_);
    const json txn = {
        {"compare", json::array({{{"target", "CREATE"},
                                  {"key", k},
                                  {"create_revision", std::to_string(token_)},
                                  {"result", "EQUAL"}}})},
        {"success", json::array({{{"request_put",
                                   {{"key", k},
                                    {"value", ""},
                                    {"lease", std::to_string(id)}}}}})}};
    absl::StatusOr<json> r = client_->call("/v3/kv/txn", txn, deadline);
    if (!r.ok()) {
      // Unknown which lease holds the key now: give both up and say lost,
      // so the holder stops before anyone else can be granted it.
      (void)client_->revoke(id, kNoDeadline);
      (void)client_->revoke(lease_id_, kNoDeadline);
      return false;
    }
    if (!r->value("succeeded", false)) {
      (void)client_->revoke(id, kNoDeadline);
      return false;
    }
    (void)client_->revoke(lease_id_, deadline);  // holds no key now
    lease_id_ = id;
    ttl_s_ = secs;
    return true;
  }

  std::shared_ptr<EtcdLeaseBackend::Client> client_;
  std::string key_;
  std::int64_t lease_id_;
  std::int64_t ttl_s_;
  std::uint64_t token_;
  SteadyTime validity_start_;
};

}  // namespace

// ------------------------------------------------------------------ backend

absl::StatusOr<std::shared_ptr<EtcdLeaseBackend>> EtcdLeaseBackend::create(
    EtcdLeaseOptions options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("etcd leases: no endpoints");
  }
  for (const std::string& e : options.endpoints) {
    if (absl::StartsWith(e, "https://")) {
      return absl::UnimplementedError(absl::StrCat(
          "etcd endpoint '", escape_text(e), "': TLS is not supported yet"));
    }
    if (!absl::StartsWith(e, "http://")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "etcd endpoint '", escape_text(e), "': expected http://HOST:PORT"));
    }
  }
  if (options.io_timeout <= milliseconds::zero()) {
    return absl::InvalidArgumentError(
        "etcd leases: io_timeout must be positive");
  }
  global_init();
  auto client = std::make_shared<Client>();
  client->options = std::move(options);
  absl::StatusOr<json> status =
      client->call("/v3/maintenance/status", json::object(), kNoDeadline);
  if (!status.ok()) return status.status();
  return std::shared_ptr<EtcdLeaseBackend>(
      new EtcdLeaseBackend(std::move(client)));
}

EtcdLeaseBackend::~EtcdLeaseBackend() = default;

LeaseCapabilities EtcdLeaseBackend::capabilities() const {
  return {.ttl = true,
          .fencing = true,
          .shared = false,
          .survives_failover = true,
          .metadata = false};
}

std::string EtcdLeaseBackend::lock_prefix(std::string_view key) const {
  return absl::StrCat(client_->options.prefix, to_absl(key), "/");
}

absl::StatusOr<std::unique_ptr<LeaseSession>> EtcdLeaseBackend::try_acquire(
    const LeaseRequest& request) {
  return acquire(request, /*wait=*/false, kNoDeadline, std::stop_token());
}

absl::StatusOr<std::unique_ptr<LeaseSession>> EtcdLeaseBackend::wait_acquire(
    const LeaseRequest& request, SteadyTime deadline,
    const std::stop_token& stop) {
  return acquire(request, /*wait=*/true, deadline, stop);
}

absl::StatusOr<std::unique_ptr<LeaseSession>> EtcdLeaseBackend::acquire(
    const LeaseRequest& request, bool wait, SteadyTime deadline,
    const std::stop_token& stop) {
  Client& c = *client_;
  const std::int64_t ttl_s = ttl_seconds(request.ttl);
  const std::string prefix = lock_prefix(request.key);

  // 1. The session lease. "Already exists" is another client's id: pick again.
  std::int64_t id = 0;
  SteadyTime kept_at;  // when the last grant or keepalive of it was sent
  for (int attempt = 0;; ++attempt) {
    id = random_lease_id();
    kept_at = now();
    absl::Status s = c.grant(id, ttl_s, kNoDeadline);
    if (s.ok()) break;
    if (s.code() == absl::StatusCode::kAlreadyExists && attempt < 3) continue;
    // The grant may have happened with its reply lost: revoke it.
    absl::StatusOr<bool> revoked = c.revoke(id, kNoDeadline);
    return absl::Status(
        s.code(),
        absl::StrCat("grant of etcd lease ", hex(id), ": ", s.message(),
                     revoked.ok()
                         ? " (revoked in case it was granted)"
                         : " (and revoking it in case it was granted failed: "
                           "it lapses within its ttl)"));
  }
  // Gives the session lease up (its key goes with it); `why` is the error.
  auto give_up = [&](absl::Status why) {
    absl::StatusOr<bool> revoked = c.revoke(id, kNoDeadline);
    if (revoked.ok()) return why;
    return absl::Status(
        why.code(),
        absl::StrCat(why.message(), " (and revoking etcd lease ", hex(id),
                     " failed: its key '", escape_text(prefix), hex(id),
                     "' lapses within ", ttl_s, " s)"));
  };

  // 2. The lock key, created only if absent (a repeat after a lost reply
  // finds it), and the lock's queue, read in the same transaction.
  const std::string my_key = absl::StrCat(prefix, hex(id));
  const json range = Client::range_request(prefix);
  const json txn = {
      {"compare", json::array({{{"target", "CREATE"},
                                {"key", b64(my_key)},
                                {"create_revision", "0"},
                                {"result", "EQUAL"}}})},
      {"success", json::array({{{"request_put",
                                 {{"key", b64(my_key)},
                                  {"value", ""},
                                  {"lease", std::to_string(id)}}}},
                               {{"request_range", range}}})},
      {"failure", json::array({{{"request_range", range}}})}};
  absl::StatusOr<json> r = c.call("/v3/kv/txn", txn, kNoDeadline);
  if (!r.ok()) return give_up(r.status());
  std::int64_t rev = int_field(r->value("header", json::object()), "revision");
  std::vector<LockKey> queue;
  for (const json& resp : r->value("responses", json::array())) {
    if (resp.contains("response_range"))
      queue = Client::lock_keys(resp["response_range"], prefix);
  }

  for (;;) {
    const auto mine =
        std::find_if(queue.begin(), queue.end(),
                     [&](const LockKey& k) { return k.key == my_key; });
    if (mine == queue.end()) {
      return give_up(absl::UnavailableError(
          absl::StrCat("etcd key '", escape_text(my_key),
                       "' vanished while queued (its lease expired)")));
    }
    if (mine == queue.begin()) {
      return std::unique_ptr<LeaseSession>(new EtcdSession(
          client_, my_key, id, ttl_s,
          static_cast<std::uint64_t>(mine->create_revision), kept_at));
    }
    if (!wait) {
      // Contention. The queued key must go, or it would block the lock until
      // its lease lapses.
      absl::StatusOr<bool> revoked = c.revoke(id, kNoDeadline);
      if (!revoked.ok()) {
        return absl::Status(
            revoked.status().code(),
            absl::StrCat("lock '", escape_text(prefix),
                         "' is held; removing our queued key failed: ",
                         revoked.status().message()));
      }
      return std::unique_ptr<LeaseSession>();
    }
    // 3. Wait for the key just ahead of ours to go.
    const std::string& ahead = std::prev(mine)->key;
    SteadyTime next_keep = kept_at + request.ttl / 3;
    auto keep = [&]() -> absl::Status {
      const SteadyTime sent = now();
      // Bounded by the queued key's own lease: past it the place is lost
      // anyway, and a frozen member gets half of what is left.
      absl::StatusOr<bool> alive = c.keepalive(id, kept_at + request.ttl);
      if (!alive.ok()) {
        // Try again soon; the key stays until the lease lapses.
        next_keep = sent + std::min<std::chrono::nanoseconds>(
                               request.ttl / 10, milliseconds(200));
        return absl::OkStatus();
      }
      if (!*alive) {
        return absl::UnavailableError(
            absl::StrCat("etcd lease ", hex(id), " of queued key '",
                         escape_text(my_key), "' expired while waiting"));
      }
      kept_at = sent;
      next_keep = sent + request.ttl / 3;
      return absl::OkStatus();
    };
    absl::StatusOr<Client::WatchEnd> end =
        c.watch_delete(ahead, rev + 1, deadline, stop, next_keep, keep);
    if (!end.ok()) return give_up(end.status());
    if (*end == Client::WatchEnd::kDeadline) {
      absl::StatusOr<bool> revoked = c.revoke(id, kNoDeadline);
      if (!revoked.ok()) {
        return absl::Status(
            revoked.status().code(),
            absl::StrCat("timed out waiting; removing our queued key '",
                         escape_text(my_key),
                         "' failed: ", revoked.status().message()));
      }
      return std::unique_ptr<LeaseSession>();
    }
    if (*end == Client::WatchEnd::kStopped)
      return give_up(absl::CancelledError("cancelled"));
    absl::StatusOr<std::pair<std::vector<LockKey>, std::int64_t>> again =
        c.range(prefix);
    if (!again.ok()) return give_up(again.status());
    queue = std::move(again->first);
    rev = again->second;
  }
}

}  // namespace tierlock

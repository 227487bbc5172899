// src/lease/backends/conn_pool.h
//
// A backend's connections to its service, kept ready in the background
// (internal):
//   ConnPool<C> - hands out idle connections, one caller each; a caller drops
//                 a connection that failed or timed out (closing it at once)
//                 and a connector thread opens its replacement, retrying
//                 with backoff while the service is unreachable.
//
// Why: a connection that timed out may still deliver a late reply, so it is
// never reused; reconnecting inline would make the next caller pay the
// connect (or, while the network is frozen, wait out a connect timeout while
// holding the connection every other lease of the backend needs). Here no
// mutex is held across I/O: the pool's own mutex guards only its lists.
#ifndef TIERLOCK_SRC_LEASE_BACKENDS_CONN_POOL_H_
#define TIERLOCK_SRC_LEASE_BACKENDS_CONN_POOL_H_

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/mutex.h"

namespace tierlock::internal {

// Connections of type C (movable; destroying one closes it). Thread-safe.
// The connector thread runs only while a connection is wanted (none is open,
// or callers wait and fewer than kMaxConnections are open) and ends when
// none is; it is detached and owns the pool through a shared_ptr, so
// shutdown() returns at once and an attempt in flight ends within its
// connect timeout (or sooner, if the connect function watches `stop`).
template <typename C>
class ConnPool : public std::enable_shared_from_this<ConnPool<C>> {
 public:
  using Clock = std::chrono::steady_clock;
  // Opens one connection, every wait bounded by `deadline`; stops early (an
  // error) once `stop` is requested. Runs on the connector thread, with no
  // lock held.
  using Connect = std::function<absl::StatusOr<C>(Clock::time_point deadline,
                                                  const std::stop_token& stop)>;

  static constexpr int kMaxConnections = 4;
  static constexpr std::chrono::milliseconds kFirstBackoff{25};
  static constexpr std::chrono::milliseconds kMaxBackoff{1000};

  // `first`: a connection opened by the caller (the backend's create()
  // checks the service synchronously), kept as the first idle one.
  static std::shared_ptr<ConnPool> create(
      Connect connect, std::chrono::milliseconds connect_timeout, C first) {
    std::shared_ptr<ConnPool> p(
        new ConnPool(std::move(connect), connect_timeout));
    UniqueLock lk(p->mu_);
    p->idle_.push_back(std::move(first));
    p->open_ = 1;
    return p;
  }

  ConnPool(const ConnPool&) = delete;
  ConnPool& operator=(const ConnPool&) = delete;

  // Returns an idle connection for the caller's exclusive use; if none is
  // idle, waits for the connector until `deadline`. Returns kUnavailable
  // (naming the connect error) if a connect attempt started after this call
  // fails, or `deadline` passes first. Blocks on the connector only, never on
  // I/O of its own; a caller waiting makes the connector skip its backoff once.
  // `where` starts the timeout's message ("redis 127.0.0.1:6379").
  absl::StatusOr<C> take(Clock::time_point deadline, const std::string& where) {
    const Clock::time_point start = Clock::now();
    UniqueLock lk(mu_);
    // Only an attempt started after this call says anything about now.
    const std::uint64_t attempts_before = attempts_started_;
    ++waiters_;
    for (;;) {
      if (stopping_) {
        --waiters_;
        return absl::UnavailableError("the backend is shutting down");
      }
      if (!idle_.empty()) {
        C c = std::move(idle_.back());
        idle_.pop_back();
        --waiters_;
        return c;
      }
      if (last_failed_attempt_ > attempts_before) {
        --waiters_;
        return absl::UnavailableError(last_error_);
      }
      const bool started = wake_connector_locked(/*skip_backoff=*/true);
      const Clock::time_point now = Clock::now();
      if (now >= deadline) {
        --waiters_;
        return absl::UnavailableError(absl::StrCat(
            where, ": no connection within ",
            std::chrono::duration_cast<std::chrono::milliseconds>(now - start)
                .count(),
            " ms (reconnecting in the background",
            last_error_.empty() ? std::string()
                                : absl::StrCat("; last attempt: ", last_error_),
            ")"));
      }
      // Without a connector thread (none could be started), look again soon.
      const Clock::time_point until =
          started ? deadline
                  : std::min(deadline, now + std::chrono::milliseconds(10));
      cv_.wait_until(lk.native(), until);
    }
  }

  // Returns a healthy connection for the next caller. Never blocks on I/O.
  void give_back(C c) {
    UniqueLock lk(mu_);
    if (!stopping_) {
      idle_.push_back(std::move(c));
      cv_.notify_all();
      return;
    }
    --open_;
    lk.unlock();
    // c closes here, outside the lock.
  }

  // Closes a connection that failed or timed out, now, and has the connector
  // replace it. Never blocks on the service (closing a socket does not).
  void drop(C c) {
    {
      C closing = std::move(c);  // closed before the replacement is asked for
    }
    UniqueLock lk(mu_);
    --open_;
    wake_connector_locked(/*skip_backoff=*/false);
  }

  // Closes the idle connections and ends the connector (after its attempt in
  // flight, which `stop` interrupts if the connect function watches it).
  // Returns at once. Connections still taken are closed when given back.
  void shutdown() {
    std::vector<C> idle;
    {
      UniqueLock lk(mu_);
      stopping_ = true;
      idle.swap(idle_);
      open_ -= static_cast<int>(idle.size());
      cv_.notify_all();
    }
    stop_.request_stop();
  }

 private:
  ConnPool(Connect connect, std::chrono::milliseconds connect_timeout)
      : connect_(std::move(connect)), connect_timeout_(connect_timeout) {}

  bool wanted_locked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (stopping_) return false;
    if (open_ == 0) return true;
    return waiters_ > static_cast<int>(idle_.size()) && open_ < kMaxConnections;
  }

  // Starts the connector if a connection is wanted and none is running;
  // returns false if it is not running (not wanted, or no thread).
  bool wake_connector_locked(bool skip_backoff)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (connector_running_) {
      if (skip_backoff) kick_ = true;
      cv_.notify_all();
      return true;
    }
    if (!wanted_locked()) return false;
    try {
      std::thread([self = this->shared_from_this()] {
        self->connector();
      }).detach();
    } catch (const std::system_error&) {
      return false;  // out of threads: the next drop() or take() tries again
    }
    connector_running_ = true;
    return true;
  }

  void connector() {
    std::minstd_rand rng(std::random_device{}());
    std::chrono::milliseconds backoff = kFirstBackoff;
    UniqueLock lk(mu_);
    for (;;) {
      if (!wanted_locked()) {
        connector_running_ = false;
        return;
      }
      const std::uint64_t attempt = ++attempts_started_;
      lk.unlock();
      absl::StatusOr<C> c =
          connect_(Clock::now() + connect_timeout_, stop_.get_token());
      lk.lock();
      if (c.ok()) {
        if (stopping_) {
          connector_running_ = false;
          lk.unlock();
          return;  // *c closes here, outside the lock
        }
        idle_.push_back(std::move(*c));
        ++open_;
        last_error_.clear();
        backoff = kFirstBackoff;
        cv_.notify_all();
        continue;
      }
      last_error_ = std::string(c.status().message());
      last_failed_attempt_ = attempt;
      cv_.notify_all();
      // A caller that came during the failed attempt gets an attempt of its
      // own (it returns at that one's failure, so this cannot spin).
      if (waiters_ > 0) continue;
      // While unreachable: wait (jittered, doubling to kMaxBackoff), unless a
      // caller comes.
      kick_ = false;
      std::uniform_int_distribution<std::int64_t> dist(backoff.count() / 2,
                                                       backoff.count());
      const Clock::time_point until =
          Clock::now() + std::chrono::milliseconds(dist(rng));
      while (!stopping_ && !kick_ && Clock::now() < until) {
        cv_.wait_until(lk.native(), until);
      }
      backoff = std::min(backoff * 2, kMaxBackoff);
    }
  }

  const Connect connect_;
  const std::chrono::milliseconds connect_timeout_;
  std::stop_source stop_;

  Mutex mu_;
  std::condition_variable cv_;
  std::vector<C> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) =
      0;  // idle + taken (not the one being opened)
  int waiters_ ABSL_GUARDED_BY(mu_) =
      0;  // callers in take() without a connection
  bool connector_running_ ABSL_GUARDED_BY(mu_) = false;
  bool kick_ ABSL_GUARDED_BY(mu_) = false;  // skip the current backoff
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::uint64_t attempts_started_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t last_failed_attempt_ ABSL_GUARDED_BY(mu_) = 0;  // its number
  std::string last_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_LEASE_BACKENDS_CONN_POOL_H_

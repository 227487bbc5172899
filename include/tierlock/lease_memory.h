// tierlock/lease_memory.h
//
// The in-process lease backend, the reference for lease semantics:
//   ManualLeaseClock   - a LeaseClock that moves only when told (tests).
//   MemoryLeaseBackend - leases in a map in this process, TTLs on a LeaseClock,
//                        fencing tokens from a per-key counter.
#ifndef TIERLOCK_LEASE_MEMORY_H_
#define TIERLOCK_LEASE_MEMORY_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "tierlock/lease.h"

namespace tierlock {

// ManualLeaseClock
//
// A clock for tests: starts at the given time and moves only by advance().
// Moving it wakes the shared renewer, so leases timed on it expire (lost()
// fires) and auto-renew as if that much time had passed. Thread-safe.
class ManualLeaseClock final : public LeaseClock {
 public:
  explicit ManualLeaseClock(std::chrono::steady_clock::time_point start =
                                std::chrono::steady_clock::now())
      : ns_(start.time_since_epoch().count()) {}
  std::chrono::steady_clock::time_point now() const override {
    return std::chrono::steady_clock::time_point(
        std::chrono::nanoseconds(ns_.load()));
  }
  bool is_real() const override { return false; }
  // Moves the clock forward by `d` (must be >= 0) and wakes the renewer.
  // Never blocks on leases.
  void advance(std::chrono::nanoseconds d);

 private:
  std::atomic<std::int64_t> ns_;
};

// MemoryLeaseBackend
//
// Leases on keys in this process: a map guarded by a mutex. Capabilities:
// ttl and fencing (tokens count up from 1 per key, kept for the backend's
// lifetime), no shared leases, no failover (there is nothing to fail over
// to). Expiry is judged on the injected clock. No wait primitive: LeaseLock
// polls with backoff. Thread-safe.
//
// For tests it can inject failures (fail_next) so callers can tell an error
// from contention.
//
// Example:
//   auto clock = std::make_shared<tierlock::ManualLeaseClock>();
//   auto backend = tierlock::MemoryLeaseBackend::create(clock);
//   auto locks = tierlock::LeaseLock::create(backend, {.ttl = 1s});
//   auto lease = locks->try_acquire("k");   // token 1
//   clock->advance(2s);                     // (*lease)->lost() fires
class MemoryLeaseBackend final : public LeaseBackend {
 public:
  // `clock`: null means steady_lease_clock().
  static std::shared_ptr<MemoryLeaseBackend> create(
      std::shared_ptr<LeaseClock> clock = nullptr);
  ~MemoryLeaseBackend() override;

  std::string_view name() const override { return "memory"; }
  LeaseCapabilities capabilities() const override;
  LeaseClock& clock() const override;
  // Zero: the service keeps time on the holder's own clock.
  std::chrono::milliseconds clock_drift_margin(
      std::chrono::milliseconds) const override {
    return std::chrono::milliseconds(0);
  }
  absl::StatusOr<std::unique_ptr<LeaseSession>> try_acquire(
      const LeaseRequest& request) override;
  // Every field: this process granted it (fail_next does not apply).
  absl::StatusOr<std::optional<Holder>> holder_of(
      std::string_view key) override;

  // Makes the next `count` backend calls (acquire, extend, release) fail with
  // `status` without changing anything.
  void fail_next(absl::Status status, int count = 1);
  // Returns the owner id holding `key` now (unexpired), if any.
  std::optional<std::string> holder(const std::string& key) const;

  struct Impl;

 private:
  explicit MemoryLeaseBackend(std::shared_ptr<Impl> impl)
      : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

}  // namespace tierlock

#endif  // TIERLOCK_LEASE_MEMORY_H_

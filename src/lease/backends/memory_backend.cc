// src/lease/memory_backend.cc
//
// MemoryLeaseBackend: the reference semantics in ~100 lines. A lease is an
// entry {owner, token, expires}; it is held while expires > clock.now().
#include <map>
#include <mutex>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "lease/grant_meta.h"
#include "lease/lease_state.h"
#include "tierlock/lease_memory.h"

namespace tierlock {

using internal::Mutex;
using internal::SteadyTime;
using internal::UniqueLock;

void ManualLeaseClock::advance(std::chrono::nanoseconds d) {
  if (d.count() > 0) ns_.fetch_add(d.count());
  internal::LeaseScheduler::instance().poke();
}

struct MemoryLeaseBackend::Impl {
  struct Entry {
    std::string owner;
    std::uint64_t token = 0;
    SteadyTime expires;
    internal::GrantMeta meta;  // who asked for the grant
    std::chrono::system_clock::time_point since;
  };
  std::shared_ptr<LeaseClock> clock_owner;
  LeaseClock* clock = nullptr;
  Mutex mu;
  std::map<std::string, Entry> leases ABSL_GUARDED_BY(mu);
  std::map<std::string, std::uint64_t> counters ABSL_GUARDED_BY(mu);
  absl::Status failure ABSL_GUARDED_BY(mu);
  int failures_left ABSL_GUARDED_BY(mu) = 0;

  // Returns the injected failure, if one is due.
  absl::Status take_failure() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (failures_left == 0) return absl::OkStatus();
    --failures_left;
    return failure;
  }
  bool held_by(const std::string& key, const std::string& owner,
               std::uint64_t token) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto it = leases.find(key);
    return it != leases.end() && it->second.owner == owner &&
           it->second.token == token && it->second.expires > clock->now();
  }
};

namespace {

class MemorySession final : public LeaseSession {
 public:
  MemorySession(std::shared_ptr<MemoryLeaseBackend::Impl> impl, std::string key,
                std::string owner, std::uint64_t token)
      : impl_(std::move(impl)),
        key_(std::move(key)),
        owner_(std::move(owner)),
        token_(token) {}

  std::optional<std::uint64_t> token() const override { return token_; }

  absl::StatusOr<bool> extend(std::chrono::milliseconds ttl) override {
    UniqueLock lk(impl_->mu);
    if (absl::Status s = impl_->take_failure(); !s.ok()) return s;
    if (!impl_->held_by(key_, owner_, token_)) return false;
    impl_->leases[key_].expires = impl_->clock->now() + ttl;
    return true;
  }

  absl::StatusOr<bool> release() override {
    UniqueLock lk(impl_->mu);
    if (absl::Status s = impl_->take_failure(); !s.ok()) return s;
    auto it = impl_->leases.find(key_);
    if (it == impl_->leases.end() || it->second.owner != owner_ ||
        it->second.token != token_) {
      return false;  // another owner's (or nobody's): never delete it
    }
    const bool held = it->second.expires > impl_->clock->now();
    impl_->leases.erase(it);
    return held;
  }

 private:
  std::shared_ptr<MemoryLeaseBackend::Impl> impl_;
  std::string key_;
  std::string owner_;
  std::uint64_t token_;
};

}  // namespace

std::shared_ptr<MemoryLeaseBackend> MemoryLeaseBackend::create(
    std::shared_ptr<LeaseClock> clock) {
  auto impl = std::make_shared<Impl>();
  impl->clock_owner = std::move(clock);
  impl->clock =
      impl->clock_owner ? impl->clock_owner.get() : &steady_lease_clock();
  return std::shared_ptr<MemoryLeaseBackend>(
      new MemoryLeaseBackend(std::move(impl)));
}

MemoryLeaseBackend::~MemoryLeaseBackend() = default;

LeaseCapabilities MemoryLeaseBackend::capabilities() const {
  return {.ttl = true,
          .fencing = true,
          .shared = false,
          .survives_failover = false,
          .metadata = false};
}

LeaseClock& MemoryLeaseBackend::clock() const { return *impl_->clock; }

absl::StatusOr<std::unique_ptr<LeaseSession>> MemoryLeaseBackend::try_acquire(
    const LeaseRequest& request) {
  UniqueLock lk(impl_->mu);
  if (absl::Status s = impl_->take_failure(); !s.ok()) return s;
  const SteadyTime now = impl_->clock->now();
  auto it = impl_->leases.find(request.key);
  if (it != impl_->leases.end() && it->second.expires > now) {
    return std::unique_ptr<LeaseSession>();  // contention
  }
  const std::uint64_t token = ++impl_->counters[request.key];
  impl_->leases[request.key] = {request.owner_id, token, now + request.ttl,
                                internal::this_grant_meta(),
                                std::chrono::system_clock::now()};
  return std::unique_ptr<LeaseSession>(
      new MemorySession(impl_, request.key, request.owner_id, token));
}

void MemoryLeaseBackend::fail_next(absl::Status status, int count) {
  UniqueLock lk(impl_->mu);
  impl_->failure = std::move(status);
  impl_->failures_left = count;
}

std::optional<std::string> MemoryLeaseBackend::holder(
    const std::string& key) const {
  UniqueLock lk(impl_->mu);
  auto it = impl_->leases.find(key);
  if (it == impl_->leases.end() || it->second.expires <= impl_->clock->now()) {
    return std::nullopt;
  }
  return it->second.owner;
}

absl::StatusOr<std::optional<Holder>> MemoryLeaseBackend::holder_of(
    std::string_view key) {
  UniqueLock lk(impl_->mu);
  auto it = impl_->leases.find(std::string(key));
  if (it == impl_->leases.end() || it->second.expires <= impl_->clock->now()) {
    return std::optional<Holder>();
  }
  const Impl::Entry& e = it->second;
  Holder h;
  h.owner_id = e.owner;
  h.token = e.token;
  h.pid = e.meta.pid;
  h.host = e.meta.host;
  h.program = e.meta.program;
  h.since = e.since;
  return std::optional<Holder>(std::move(h));
}

}  // namespace tierlock

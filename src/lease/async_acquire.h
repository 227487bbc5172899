// src/lease/async_acquire.h
//
// LeaseLock::acquire_async's engine (internal):
//   AsyncLeaseAcquire - one async acquire: what to ask, where to run, how to
//                       build the Lease and deliver it.
//   start_async_acquire - runs it: round trips on the pool, waits in the
//                       poller.
//   LeaseWaitPoller   - the one process-wide thread that waits for every
//                       async waiter's wake descriptor, timer and stop at once
//                       (epoll), and hands each event to the waiter's pool.
#ifndef TIERLOCK_SRC_LEASE_ASYNC_ACQUIRE_H_
#define TIERLOCK_SRC_LEASE_ASYNC_ACQUIRE_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "tierlock/executor.h"
#include "tierlock/lease.h"

namespace tierlock::internal {

struct AsyncLeaseAcquire {
  std::shared_ptr<LeaseBackend> backend;
  LeaseRequest request;
  std::string what;  // "acquire lease 'KEY' on BACKEND", for messages
  std::chrono::steady_clock::time_point start;
  std::chrono::steady_clock::time_point deadline;  // max(): none
  bool one_try = false;
  std::stop_token stop;
  WorkerPool* pool = nullptr;  // never null here
  Executor* executor = nullptr;
  // Builds the Lease from a grant whose request was sent at `sent` (records
  // the tier hold). Called at most once.
  std::function<Lease(std::unique_ptr<LeaseSession>,
                      std::chrono::steady_clock::time_point sent)>
      make_lease;
  // Forgets the tier hold of an acquire that ends without a lease.
  std::function<void()> forget;
  absl::AnyInvocable<void(absl::StatusOr<Lease>) &&> done;
};

// Starts `a`: its first step is queued on a->pool (never run inline).
void start_async_acquire(std::unique_ptr<AsyncLeaseAcquire> a);

// Returns how many async waiters the poller watches now (tests).
std::size_t async_lease_waiters();

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_LEASE_ASYNC_ACQUIRE_H_

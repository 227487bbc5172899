// tests/lease/tl_lease_helper.cc
//
// A process that holds leases, for the cross-process lease tests. SPEC names
// a backend (backend_spec.h). Times are CLOCK_MONOTONIC (steady_clock) ns,
// comparable across processes on this host.
//
//   worker SPEC KEY N TTL_MS FENCE_DIR LOG
//       N times: acquire KEY (timeout 60 s), write the token to the fenced
//       resource FENCE_DIR, release; append one line per hold to LOG:
//       "TOKEN START_NS END_NS VALID_UNTIL_NS WRITE(1|0) RELEASE(1|0)".
//       Prints "done", exits 0 (1 on an error, printed).
//   hold SPEC KEY TTL_MS [--auto-renew]
//       acquire KEY, print "held TOKEN OWNER", then per line on stdin:
//         "report FENCE_DIR": wait (at most 10 s) for lost() to fire, then try
//           a fenced write, extend and release; print
//           "lost=L write=W extend=E release=R" (L 0/1; W accepted|rejected;
//           E, R true|false|error:<msg>).
//         "check": print "lost=L now_ns=N valid_until_ns=V wall_s=W" (W: the
//           wall clock, seconds since the epoch, for tests that move it).
//         "wait-lost MS": wait (at most MS) for lost() to fire; print
//           "lost=L at_ns=N valid_until_ns=V" (N when it fired, or now).
//       At EOF, exits (the destructor releases).
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>

#include "absl/strings/numbers.h"
#include "lease/backend_spec.h"
#include "lease/fenced.h"
#include "tierlock/lease.h"

namespace {

using namespace std::chrono_literals;
using tierlock::Lease;
using tierlock::LeaseLock;

std::int64_t ns(std::chrono::steady_clock::time_point t) {
  return t.time_since_epoch().count();
}

int fail(const std::string& what) {
  std::cout << "error: " << what << std::endl;
  return 1;
}

absl::StatusOr<LeaseLock> make(const std::string& spec, long ttl_ms,
                               bool auto_renew) {
  auto backend = tierlock::testing::make_backend_from_spec(spec);
  if (!backend.ok()) return backend.status();
  tierlock::LeaseOptions o;
  if ((*backend)->capabilities().ttl) o.ttl = std::chrono::milliseconds(ttl_ms);
  o.auto_renew =
      auto_renew &&
      (*backend)->capabilities().ttl;  // connection-bound: nothing to renew
  return LeaseLock::create(*backend, o);
}

std::string describe(const absl::StatusOr<bool>& r) {
  if (!r.ok()) return "error:" + r.status().ToString();
  return *r ? "true" : "false";
}

int worker(char** argv) {
  const std::string spec = argv[0], key = argv[1];
  long n = 0, ttl = 0;
  if (!absl::SimpleAtoi(argv[2], &n) || !absl::SimpleAtoi(argv[3], &ttl))
    return fail("usage");
  const std::string fence = argv[4];
  std::ofstream log(argv[5], std::ios::app);
  absl::StatusOr<LeaseLock> locks = make(spec, ttl, false);
  if (!locks.ok()) return fail(locks.status().ToString());
  for (long i = 0; i < n; ++i) {
    tierlock::AcquireOptions o;
    o.timeout = 60s;
    absl::StatusOr<Lease> lease = locks->acquire(key, o);
    if (!lease.ok()) return fail(lease.status().ToString());
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<bool> wrote =
        tierlock::testing::fenced_write(fence, lease->token().value_or(0));
    if (!wrote.ok()) return fail(wrote.status().ToString());
    const auto end = std::chrono::steady_clock::now();
    const auto until = lease->valid_until();
    absl::StatusOr<bool> released = lease->release();
    if (!released.ok()) return fail(released.status().ToString());
    log << lease->token().value_or(0) << ' ' << ns(start) << ' ' << ns(end)
        << ' '
        << (until == std::chrono::steady_clock::time_point::max() ? INT64_MAX
                                                                  : ns(until))
        << ' ' << *wrote << ' ' << *released << '\n';
    log.flush();
  }
  std::cout << "done" << std::endl;
  return 0;
}

// Waits (at most `timeout`) for the lease's lost() to fire; returns when it
// fired (steady ns, taken in the callback itself), or nullopt.
std::optional<std::int64_t> wait_lost(const Lease& lease,
                                      std::chrono::milliseconds timeout) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<std::int64_t> at;
  std::stop_callback on_lost(lease.lost(), [&] {
    std::lock_guard<std::mutex> lk(mu);
    at = ns(std::chrono::steady_clock::now());
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lk(mu);
  cv.wait_for(lk, timeout, [&] { return at.has_value(); });
  return at;
}

int hold(int argc, char** argv) {
  const std::string spec = argv[0], key = argv[1];
  long ttl = 0;
  if (!absl::SimpleAtoi(argv[2], &ttl)) return fail("usage");
  const bool auto_renew = argc > 3 && std::string(argv[3]) == "--auto-renew";
  absl::StatusOr<LeaseLock> locks = make(spec, ttl, auto_renew);
  if (!locks.ok()) return fail(locks.status().ToString());
  tierlock::AcquireOptions o;
  o.timeout = 60s;
  absl::StatusOr<Lease> lease = locks->acquire(key, o);
  if (!lease.ok()) return fail(lease.status().ToString());
  std::cout << "held " << lease->token().value_or(0) << ' ' << lease->owner_id()
            << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.rfind("report ", 0) == 0) {
      const std::string fence = line.substr(7);
      const bool lost = wait_lost(*lease, 10s).has_value();
      absl::StatusOr<bool> wrote =
          tierlock::testing::fenced_write(fence, lease->token().value_or(0));
      const std::string w = !wrote.ok() ? "error"
                            : *wrote    ? "accepted"
                                        : "rejected";
      const std::string e =
          describe(lease->extend(std::chrono::milliseconds(ttl)));
      const std::string r = describe(lease->release());
      std::cout << "lost=" << lost << " write=" << w << " extend=" << e
                << " release=" << r << std::endl;
    } else if (line == "check") {
      const auto wall = std::chrono::duration_cast<std::chrono::seconds>(
          std::chrono::system_clock::now().time_since_epoch());
      std::cout << "lost=" << lease->lost().stop_requested()
                << " now_ns=" << ns(std::chrono::steady_clock::now())
                << " valid_until_ns=" << ns(lease->valid_until())
                << " wall_s=" << wall.count() << std::endl;
    } else if (line.rfind("wait-lost ", 0) == 0) {
      long ms = 0;
      if (!absl::SimpleAtoi(line.substr(10), &ms))
        return fail("usage: wait-lost MS");
      const std::optional<std::int64_t> at =
          wait_lost(*lease, std::chrono::milliseconds(ms));
      std::cout << "lost=" << at.has_value() << " at_ns="
                << at.value_or(ns(std::chrono::steady_clock::now()))
                << " valid_until_ns=" << ns(lease->valid_until()) << std::endl;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 8 && std::string(argv[1]) == "worker") return worker(argv + 2);
  if (argc >= 5 && std::string(argv[1]) == "hold")
    return hold(argc - 2, argv + 2);
  std::cerr << "usage: tl_lease_helper worker|hold ...\n";
  return 64;
}

// tests/lease/history.h
//
// Jepsen-style safety checks on one machine, with real processes
// (tl_lease_helper) against a backend named by a spec (backend_spec.h):
//   check_history     - W workers loop acquire -> fenced write -> release on one
//                       key; no two holds overlap unless the earlier one had
//                       expired, tokens increase in grant order, the fenced
//                       resource accepted every write.
//   check_sigkill     - the holder is SIGKILLed; a waiter gets the key within
//                       a bound (TTL + slack, or at once when connection-bound).
//   check_sigstop     - the holder is SIGSTOPped past its TTL (auto-renew on);
//                       another owner takes the key and writes; after SIGCONT
//                       the old holder's lost() fires, its fenced write is
//                       rejected, extend and release say lost; lost() fires
//                       within 500 ms of SIGCONT, before it asks the service.
// Each returns "" on success, or what went wrong.
#ifndef TIERLOCK_TESTS_LEASE_HISTORY_H_
#define TIERLOCK_TESTS_LEASE_HISTORY_H_

#include <chrono>
#include <filesystem>
#include <string>

#include "tierlock/lease.h"

namespace tierlock::testing {

std::string lease_helper_path();

std::string check_history(const std::string& spec, const std::string& key, int workers,
                          int iterations, const std::filesystem::path& dir, bool fencing);

std::string check_sigkill(const std::string& spec, const std::string& key,
                          std::chrono::milliseconds ttl, std::chrono::milliseconds bound);

// `figures` (optional) gets the timings: SIGSTOP to the other owner's
// grant, SIGCONT to the resumed holder's lost() (bounded: 500 ms), and the
// overlap (the paused holder cannot know; its fenced write is rejected).
std::string check_sigstop(const std::string& spec, const std::string& key,
                          std::chrono::milliseconds ttl, const std::filesystem::path& dir,
                          std::string* figures = nullptr);

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_LEASE_HISTORY_H_

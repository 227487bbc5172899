// tests/lease/conformance.h
//
// The lease contract, run against every backend (the in-memory one on the real
// clock, and each service backend against a real server):
//   LeaseBackendFactory - makes a fresh backend for one test.
//   LeaseConformanceTest - TEST_P suite; instantiate with
//     INSTANTIATE_TEST_SUITE_P(Memory, LeaseConformanceTest, Values(factory)).
// TTL tests use short real TTLs (200-400 ms) and bounded polls, never sleeps.
#ifndef TIERLOCK_TESTS_LEASE_CONFORMANCE_H_
#define TIERLOCK_TESTS_LEASE_CONFORMANCE_H_

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "tierlock/lease.h"

namespace tierlock::testing {

struct LeaseBackendFactory {
  std::string name;
  std::function<std::shared_ptr<LeaseBackend>()> make;
};
inline std::string PrintToString(const LeaseBackendFactory& f) {
  return f.name;
}
inline void PrintTo(const LeaseBackendFactory& f, std::ostream* os) {
  *os << f.name;
}

class LeaseConformanceTest
    : public ::testing::TestWithParam<LeaseBackendFactory> {
 protected:
  void SetUp() override;
  void TearDown() override;
  std::shared_ptr<LeaseBackend> backend_;
  // A key unique to this test (backends may share a server across tests).
  std::string key_;
  int threads_ = 0;
};

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_LEASE_CONFORMANCE_H_

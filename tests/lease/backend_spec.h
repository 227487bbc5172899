// tests/lease/backend_spec.h
//
// Backends named by a string, so a test can pass one to a helper process:
//   make_backend_from_spec - "memory", "sqlite:PATH",
//   "postgres-advisory:CONNINFO",
//                            "postgres-table:CONNINFO", "redis:HOST:PORT",
//                            "etcd:HOST:PORT[,HOST:PORT...]".
// Backends not built (their CMake component off) are kUnimplemented.
#ifndef TIERLOCK_TESTS_LEASE_BACKEND_SPEC_H_
#define TIERLOCK_TESTS_LEASE_BACKEND_SPEC_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tierlock/lease.h"

namespace tierlock::testing {

absl::StatusOr<std::shared_ptr<LeaseBackend>> make_backend_from_spec(
    const std::string& spec);

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_LEASE_BACKEND_SPEC_H_

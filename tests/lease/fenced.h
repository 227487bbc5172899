// tests/lease/fenced.h
//
// A fenced resource for the safety tests: a directory whose writes carry a
// fencing token and are rejected when the token is below the highest one the
// resource has accepted (Kleppmann's storage-side check). Cross-process safe:
// each write holds a tierlock DirLock on the directory.
//   fenced_write   - one write; true if accepted.
//   fenced_history - the accepted writes, in order.
#ifndef TIERLOCK_TESTS_LEASE_FENCED_H_
#define TIERLOCK_TESTS_LEASE_FENCED_H_

#include <cstdint>
#include <filesystem>
#include <vector>

#include "absl/status/statusor.h"

namespace tierlock::testing {

absl::StatusOr<bool> fenced_write(const std::filesystem::path& dir,
                                  std::uint64_t token);
std::vector<std::uint64_t> fenced_history(const std::filesystem::path& dir);

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_LEASE_FENCED_H_

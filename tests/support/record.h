// tests/support/record.h
//
// A counter that shows torn writes, for the counter-invariant tests:
//   increment_record - adds one to the record in a file, writing it in two
//                      separate halves (so an unlocked reader or a second
//                      writer can see the halves disagree).
//   read_record      - the value, or an error if the record is torn.
// The record is the value written twice, as two fixed-width decimal fields.
#ifndef TIERLOCK_TESTS_SUPPORT_RECORD_H_
#define TIERLOCK_TESTS_SUPPORT_RECORD_H_

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"

namespace tierlock::testing {

// Reads the record in `file` (0 if missing or empty), checks both halves
// agree, writes value + 1 one half at a time. Returns "" or an error (a torn
// record is an error: some other writer overlapped).
std::string increment_record(const std::filesystem::path& file);

// Returns the value in `file` (0 if missing or empty); kDataLoss if torn.
absl::StatusOr<long long> read_record(const std::filesystem::path& file);

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_RECORD_H_

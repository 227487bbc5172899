// tests/support/counter.h
//
// The shared counter the mutual-exclusion tests race on:
//   increment_counter - read-modify-write of a decimal number in a file, with
//                       plain file I/O and no locking of its own.
//   read_counter      - the current value (0 if the file is missing or empty).
#ifndef TIERLOCK_TESTS_SUPPORT_COUNTER_H_
#define TIERLOCK_TESTS_SUPPORT_COUNTER_H_

#include <filesystem>
#include <string>

namespace tierlock::testing {

// Adds one to the decimal number in `file` (creating it): open, read, parse,
// rewrite, close. Not atomic: lost updates show that two writers overlapped.
// Returns "" on success or an error description.
std::string increment_counter(const std::filesystem::path& file);

// Returns the number in `file`, 0 if missing or empty, -1 if unreadable.
long long read_counter(const std::filesystem::path& file);

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_COUNTER_H_

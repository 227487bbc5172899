// tests/support/status.h
//
// absl::Status helpers for gtest (Debian's Abseil 20220623 has no matchers):
//   ASSERT_OK / EXPECT_OK   - a Status or StatusOr is OK (prints it otherwise).
//   ASSERT_OK_AND_ASSIGN    - unwraps a StatusOr into a new or existing
//   variable. IsError                 - a Status has a code and its message
//   names a path.
#ifndef TIERLOCK_TESTS_SUPPORT_STATUS_H_
#define TIERLOCK_TESTS_SUPPORT_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"

namespace tierlock::testing {

inline const absl::Status& status_of(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& status_of(const absl::StatusOr<T>& s) {
  return s.status();
}

// Succeeds if `s` has `code` and its message contains every non-empty needle.
::testing::AssertionResult IsError(const absl::Status& s, absl::StatusCode code,
                                   std::string_view needle = {},
                                   std::string_view needle2 = {});

}  // namespace tierlock::testing

#define TL_STATUS_CONCAT_INNER(a, b) a##b
#define TL_STATUS_CONCAT(a, b) TL_STATUS_CONCAT_INNER(a, b)

#define ASSERT_OK(expr)                                                     \
  do {                                                                      \
    const ::absl::Status tl_status_ = ::tierlock::testing::status_of(expr); \
    ASSERT_TRUE(tl_status_.ok()) << #expr << ": " << tl_status_;            \
  } while (0)

#define EXPECT_OK(expr)                                                     \
  do {                                                                      \
    const ::absl::Status tl_status_ = ::tierlock::testing::status_of(expr); \
    EXPECT_TRUE(tl_status_.ok()) << #expr << ": " << tl_status_;            \
  } while (0)

#define ASSERT_OK_AND_ASSIGN(lhs, rexpr)                                      \
  TL_ASSERT_OK_AND_ASSIGN_IMPL(TL_STATUS_CONCAT(tl_statusor_, __LINE__), lhs, \
                               rexpr)
#define TL_ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, rexpr)      \
  auto tmp = (rexpr);                                      \
  ASSERT_TRUE(tmp.ok()) << #rexpr << ": " << tmp.status(); \
  lhs = std::move(tmp).value()

#endif  // TIERLOCK_TESTS_SUPPORT_STATUS_H_

#include "support/status.h"

#include <string>

namespace tierlock::testing {

::testing::AssertionResult IsError(const absl::Status& s, absl::StatusCode code,
                                   std::string_view needle,
                                   std::string_view needle2) {
  if (s.code() != code) {
    return ::testing::AssertionFailure()
           << "expected code " << absl::StatusCodeToString(code) << ", got "
           << s;
  }
  // absl::string_view is not std::string_view in Debian's Abseil.
  const std::string_view message(s.message().data(), s.message().size());
  for (std::string_view n : {needle, needle2}) {
    if (!n.empty() && message.find(n) == std::string_view::npos) {
      return ::testing::AssertionFailure()
             << "message of " << s << " does not contain \"" << n << "\"";
    }
  }
  return ::testing::AssertionSuccess() << s;
}

}  // namespace tierlock::testing

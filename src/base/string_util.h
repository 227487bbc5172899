// src/base/string_util.h
//
// String helpers (internal).
//   to_absl - std::string_view -> absl::string_view.
// Debian's Abseil is built with its own absl::string_view (not an alias of
// std::string_view), so StrCat does not take std::string_view directly.
#ifndef TIERLOCK_SRC_BASE_STRING_UTIL_H_
#define TIERLOCK_SRC_BASE_STRING_UTIL_H_

#include <string_view>

#include "absl/strings/string_view.h"

namespace tierlock::internal {

inline absl::string_view to_absl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_BASE_STRING_UTIL_H_

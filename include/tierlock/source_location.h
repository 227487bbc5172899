// tierlock/source_location.h
//
// Defines the call-site type every acquire records for tier reports:
//   SourceLocation - std::source_location where the standard library has it;
//                    otherwise the same interface built on the compiler's
//                    __builtin_FILE / __builtin_LINE / __builtin_FUNCTION.
//
// Why: clang 14 (Debian 12) with libstdc++ 12 has no std::source_location
// (it needs __builtin_source_location, added in clang 15), and tierlock's
// clang build must work. With GCC, SourceLocation *is* std::source_location,
// so callers may pass one explicitly.
#ifndef TIERLOCK_SOURCE_LOCATION_H_
#define TIERLOCK_SOURCE_LOCATION_H_

#include <version>

#if defined(__cpp_lib_source_location)
#include <source_location>
#else
#include <cstdint>
#endif

namespace tierlock {

#if defined(__cpp_lib_source_location)
using SourceLocation = std::source_location;
#else
class SourceLocation {
 public:
  static constexpr SourceLocation current(
      const char* file = __builtin_FILE(),
      const char* function = __builtin_FUNCTION(),
      std::uint_least32_t line = __builtin_LINE()) noexcept {
    SourceLocation loc;
    loc.file_ = file;
    loc.function_ = function;
    loc.line_ = line;
    return loc;
  }
  constexpr SourceLocation() noexcept = default;
  constexpr std::uint_least32_t line() const noexcept { return line_; }
  constexpr std::uint_least32_t column() const noexcept { return 0; }
  constexpr const char* file_name() const noexcept { return file_; }
  constexpr const char* function_name() const noexcept { return function_; }

 private:
  const char* file_ = "";
  const char* function_ = "";
  std::uint_least32_t line_ = 0;
};
#endif

}  // namespace tierlock

#endif  // TIERLOCK_SOURCE_LOCATION_H_

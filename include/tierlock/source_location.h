// tierlock/source_location.h
//
// Defines the call-site type every acquire records for tier reports:
//   SourceLocation - a file, function, line and column, filled at the call site
//                    by SourceLocation::current() (a defaulted trailing
//                    parameter on every acquire).
//
// Why tierlock's own type and not std::source_location: it is part of the
// signature of every acquire, so it must be the same type whatever compiler
// builds the caller. clang 14 (Debian 12) with libstdc++ 12 has no
// std::source_location (it needs clang 15's __builtin_source_location), so an
// alias to it would name one type under GCC and another under clang, and a
// program built with clang would not link against a library built with GCC.
// This class has one layout everywhere and is filled by __builtin_FILE,
// __builtin_FUNCTION and __builtin_LINE, which GCC and clang both provide.
// Where the standard library has std::source_location, one converts
// implicitly, so callers may still pass one.
//
// Example:
//   void log_acquire(tierlock::SourceLocation where =
//                        tierlock::SourceLocation::current());
#ifndef TIERLOCK_SOURCE_LOCATION_H_
#define TIERLOCK_SOURCE_LOCATION_H_

#include <cstdint>
#include <type_traits>
#include <version>

#if defined(__cpp_lib_source_location)
#include <source_location>
#endif

namespace tierlock {

// A call site. Thread-safety: an immutable value; the strings are string
// literals with static storage. function_name() is the bare function name
// ("TestBody", not a full signature), the same under every compiler; column()
// is 0 where the compiler has no __builtin_COLUMN (GCC 12).
class SourceLocation {
 public:
  // Returns the location of the call: used as a default argument, that of the
  // caller of the function whose parameter it is.
  static constexpr SourceLocation current(
      const char* file = __builtin_FILE(),
      const char* function = __builtin_FUNCTION(),
      std::uint_least32_t line = __builtin_LINE(),
#if defined(__has_builtin)
#if __has_builtin(__builtin_COLUMN)
      std::uint_least32_t column = __builtin_COLUMN()
#else
      std::uint_least32_t column = 0
#endif
#else
      std::uint_least32_t column = 0
#endif
          ) noexcept {
    SourceLocation loc;
    loc.file_ = file;
    loc.function_ = function;
    loc.line_ = line;
    loc.column_ = column;
    return loc;
  }

  // An empty location: "" for the names, 0 for line and column.
  constexpr SourceLocation() noexcept = default;

#if defined(__cpp_lib_source_location)
  // Converts a standard location (implicitly, so either may be passed).
  constexpr SourceLocation(  // NOLINT(google-explicit-constructor)
      const std::source_location& loc) noexcept
      : file_(loc.file_name()),
        function_(loc.function_name()),
        line_(loc.line()),
        column_(loc.column()) {}
#endif

  constexpr std::uint_least32_t line() const noexcept { return line_; }
  constexpr std::uint_least32_t column() const noexcept { return column_; }
  constexpr const char* file_name() const noexcept { return file_; }
  constexpr const char* function_name() const noexcept { return function_; }

 private:
  const char* file_ = "";
  const char* function_ = "";
  std::uint_least32_t line_ = 0;
  std::uint_least32_t column_ = 0;
};

// Part of the ABI: passed by value through every acquire.
static_assert(std::is_trivially_copyable_v<SourceLocation>);
static_assert(std::is_standard_layout_v<SourceLocation>);

}  // namespace tierlock

#endif  // TIERLOCK_SOURCE_LOCATION_H_

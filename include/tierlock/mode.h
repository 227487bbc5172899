// tierlock/mode.h
//
// Defines the lock modes shared by every tierlock lock:
//   Mode      - exclusive (one holder) or shared (many holders, no exclusive
//   one). mode_name - a stable lower-case name for messages ("exclusive" /
//   "shared").
#ifndef TIERLOCK_MODE_H_
#define TIERLOCK_MODE_H_

#include <string_view>

namespace tierlock {

// Mode of a hold. Exclusive excludes every other holder, in this process and in
// every other; shared admits any number of shared holders and no exclusive one.
enum class Mode { kExclusive, kShared };

// Returns "exclusive" or "shared".
constexpr std::string_view mode_name(Mode mode) {
  return mode == Mode::kExclusive ? "exclusive" : "shared";
}

}  // namespace tierlock

#endif  // TIERLOCK_MODE_H_

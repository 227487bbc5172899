// src/tier/tier_env.h
//
// TIERLOCK_HELD, the parent's tiered holds passed to a child (internal):
//   InheritedHold        - one entry: level, name, mode, pid, lock file.
//   held_entry_problem   - the one definition of what an entry may hold.
//   fit_held_entry       - what the writer passes for a hold (long text cut).
//   format_held_env      - the writer.
//   parse_held_env       - the reader: keeps every good entry, names each bad
//   one. inherited_holds      - this process's inherited holds, read once.
//
// The writer and the reader agree by construction: the writer passes every
// hold through fit_held_entry and leaves out what held_entry_problem rejects;
// the reader decodes each entry and keeps it iff held_entry_problem accepts
// it. So parse_held_env(format_held_env(h)) gives back exactly the fitted
// holds, with no problem reported (tests/fuzz/held_env_fuzz.cc checks it).
// Format: docs/design.md, "Tier ordering".
#ifndef TIERLOCK_SRC_TIER_TIER_ENV_H_
#define TIERLOCK_SRC_TIER_TIER_ENV_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tierlock/mode.h"

namespace tierlock::internal {

struct InheritedHold {
  int level = 0;
  std::string name;
  Mode mode = Mode::kExclusive;
  std::int64_t pid = 0;
  std::string lock_file;

  friend bool operator==(const InheritedHold&, const InheritedHold&) = default;
};

// Limits. A value carries at most kMaxHeldEnvEntries entries in at most
// kMaxHeldEnvBytes (well under Linux's 128 KiB for one environment string,
// so exec never fails with E2BIG because of it).
inline constexpr std::size_t kMaxHeldEnvEntries = 64;
inline constexpr std::size_t kMaxHeldEnvBytes = std::size_t{64} * 1024;
// Per entry, decoded: a tier name of at most this many bytes (any bytes, NUL
// included: it is only shown, escaped), a lock-file path of at most
// kMaxHeldPathBytes (absolute, no NUL).
inline constexpr std::size_t kMaxHeldNameBytes = 1024;
inline constexpr std::size_t kMaxHeldPathBytes = 4096;

// Returns why `h` cannot be an entry, or empty if it can: a pid that is not
// positive, a lock-file path that is empty, relative, longer than
// kMaxHeldPathBytes or contains a NUL, a name longer than kMaxHeldNameBytes.
std::string_view held_entry_problem(const InheritedHold& h);

// Returns `h` as the writer passes it: a name or path longer than its limit
// is cut at a UTF-8 character boundary and ends in "..." (both are only shown
// in reports; the level, which the checks compare, is kept exactly).
InheritedHold fit_held_entry(InheritedHold h);

// Returns the TIERLOCK_HELD value for `holds` (empty if none). Each hold is
// fitted; one held_entry_problem rejects is left out (none that
// LockContext::held_env builds is). Once the entry or byte limit is reached
// the rest are left out and a final "+N" item says how many, which the reader
// reports. Never fails.
std::string format_held_env(const std::vector<InheritedHold>& holds);

struct ParsedHeldEnv {
  std::vector<InheritedHold> holds;  // the good entries, in order
  // One line per dropped entry or limit reached, naming it; untrusted text is
  // escaped (escape_text) and cut, so each line is safe to print.
  std::vector<std::string> problems;
};
// Parses a TIERLOCK_HELD value. A malformed entry drops that entry only (with
// a problem naming it); an unknown version drops everything (one problem).
// Keeps the first kMaxHeldEnvEntries good entries that end within the first
// kMaxHeldEnvBytes bytes (less the 22 the writer keeps for a final "+N"), and
// reports how many were left past the limits.
// Never crashes; time and memory linear in the value's length.
ParsedHeldEnv parse_held_env(std::string_view value);

// The parent's holds, parsed from the environment once (each problem written
// to stderr once). Inline: every checked acquire asks.
extern std::atomic<const std::vector<InheritedHold>*> g_inherited_holds;
const std::vector<InheritedHold>& inherited_holds_slow();
inline const std::vector<InheritedHold>& inherited_holds() {
  if (const auto* p = g_inherited_holds.load(std::memory_order_acquire)) {
    return *p;
  }
  return inherited_holds_slow();
}
// Tests: re-reads the environment at the next use.
void reset_inherited_holds_for_testing();

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_TIER_TIER_ENV_H_

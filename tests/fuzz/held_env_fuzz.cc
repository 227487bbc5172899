// tests/fuzz/held_env_fuzz.cc
//
// libFuzzer target for the TIERLOCK_HELD parser (src/tier_check.h), which
// reads an environment variable any parent may set. Checks, for any bytes:
//   - parse_held_env never crashes and stays within its bounds (at most
//     kMaxHeldEnvEntries entries, absolute paths, pids > 0);
//   - what it accepts formats back to a value that parses to the same holds.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "tier_check.h"

namespace {

using tierlock::internal::format_held_env;
using tierlock::internal::InheritedHold;
using tierlock::internal::kMaxHeldEnvEntries;
using tierlock::internal::parse_held_env;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "held_env_fuzz: %s\n", what);
    std::abort();
  }
}

bool same(const std::vector<InheritedHold>& a,
          const std::vector<InheritedHold>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].level != b[i].level || a[i].name != b[i].name ||
        a[i].mode != b[i].mode || a[i].pid != b[i].pid ||
        a[i].lock_file != b[i].lock_file) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  const std::string_view value(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<std::vector<InheritedHold>> holds = parse_held_env(value);
  if (!holds.ok()) return 0;
  check(holds->size() <= kMaxHeldEnvEntries, "too many entries accepted");
  for (const InheritedHold& h : *holds) {
    check(h.pid > 0, "non-positive pid accepted");
    check(!h.lock_file.empty() && h.lock_file.front() == '/',
          "relative path accepted");
    check(h.lock_file.find('\0') == std::string::npos &&
              h.name.find('\0') == std::string::npos,
          "NUL accepted");
  }
  if (holds->empty()) return 0;
  absl::StatusOr<std::vector<InheritedHold>> again =
      parse_held_env(format_held_env(*holds));
  check(again.ok(), "formatted value rejected");
  check(same(*holds, *again), "format/parse round trip changed the holds");
  return 0;
}

// tests/fuzz/held_env_fuzz.cc
//
// libFuzzer target for the TIERLOCK_HELD codec (src/tier/tier_env.h): the
// reader reads an environment variable any parent may set, and the writer must
// write only what the reader reads back. Each input is used twice:
//   - as a value: parse_held_env never crashes, keeps at most
//     kMaxHeldEnvEntries entries, each one held_entry_problem accepts, and
//     what it keeps formats back to a value that parses to the same holds
//     with no problem;
//   - as a generator of holds (any level, pid, mode, name and path bytes,
//     lengths past the limits, more holds than fit): parse(format(holds))
//     gives back the first holds exactly (or, past a length limit, the same
//     level, mode and pid with the text cut to its limit, ending "..."),
//     and if some were left out, one problem saying how many.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "tier/tier_env.h"

namespace {

using tierlock::Mode;
using tierlock::internal::fit_held_entry;
using tierlock::internal::format_held_env;
using tierlock::internal::held_entry_problem;
using tierlock::internal::InheritedHold;
using tierlock::internal::kMaxHeldEnvBytes;
using tierlock::internal::kMaxHeldEnvEntries;
using tierlock::internal::kMaxHeldNameBytes;
using tierlock::internal::kMaxHeldPathBytes;
using tierlock::internal::parse_held_env;
using tierlock::internal::ParsedHeldEnv;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "held_env_fuzz: %s\n", what);
    std::abort();
  }
}

void check_as_value(std::string_view value) {
  ParsedHeldEnv parsed = parse_held_env(value);
  check(parsed.holds.size() <= kMaxHeldEnvEntries, "too many entries kept");
  for (const InheritedHold& h : parsed.holds) {
    check(held_entry_problem(h).empty(), "kept an entry the writer refuses");
  }
  if (parsed.holds.empty()) return;
  ParsedHeldEnv again = parse_held_env(format_held_env(parsed.holds));
  check(again.problems.empty(), "formatted value has problems");
  check(again.holds == parsed.holds, "format/parse round trip changed holds");
}

// `got` is what the reader gave back for `sent`: exact within the limits,
// else cut text with everything else the same.
bool fitted_copy(const InheritedHold& sent, const InheritedHold& got) {
  if (sent.name.size() <= kMaxHeldNameBytes &&
      sent.lock_file.size() <= kMaxHeldPathBytes) {
    return got == sent;
  }
  auto cut_of = [](const std::string& whole, const std::string& cut,
                   std::size_t limit) {
    if (whole.size() <= limit) return cut == whole;
    return cut.size() <= limit && cut.size() >= limit - 6 &&
           cut.ends_with("...") &&
           whole.compare(0, cut.size() - 3, cut, 0, cut.size() - 3) == 0;
  };
  return got.level == sent.level && got.mode == sent.mode &&
         got.pid == sent.pid &&
         cut_of(sent.name, got.name, kMaxHeldNameBytes) &&
         cut_of(sent.lock_file, got.lock_file, kMaxHeldPathBytes);
}

void check_as_holds(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  std::vector<InheritedHold> holds;
  const std::size_t count = in.ConsumeIntegralInRange<std::size_t>(0, 80);
  for (std::size_t i = 0; i < count && in.remaining_bytes() > 0; ++i) {
    InheritedHold h;
    h.level = in.ConsumeIntegral<int>();
    h.mode = in.ConsumeBool() ? Mode::kShared : Mode::kExclusive;
    h.pid = in.ConsumeBool()
                ? in.ConsumeIntegral<std::int64_t>()
                : in.ConsumeIntegralInRange<std::int64_t>(1, 1 << 22);
    // Lengths past the limits, and repeated bytes so long ones are cheap.
    const std::size_t name_size =
        in.ConsumeIntegralInRange<std::size_t>(0, 1100);
    h.name = in.ConsumeBytesAsString(name_size);
    if (in.ConsumeBool()) {
      h.name.append(in.ConsumeIntegralInRange<std::size_t>(0, 1100),
                    in.ConsumeIntegral<char>());
    }
    h.lock_file = in.ConsumeBool() ? "/" : "";
    h.lock_file +=
        in.ConsumeBytesAsString(in.ConsumeIntegralInRange<std::size_t>(0, 64));
    if (in.ConsumeBool()) {
      h.lock_file.append(in.ConsumeIntegralInRange<std::size_t>(0, 4200),
                         in.ConsumeIntegral<char>());
    }
    holds.push_back(std::move(h));
  }
  const std::string value = format_held_env(holds);
  check(value.size() <= kMaxHeldEnvBytes, "writer passed the byte limit");
  ParsedHeldEnv parsed = parse_held_env(value);

  // What the writer can pass: the fitted holds the one rule accepts.
  std::vector<const InheritedHold*> passable;
  for (const InheritedHold& h : holds) {
    if (held_entry_problem(fit_held_entry(h)).empty()) passable.push_back(&h);
  }
  check(parsed.holds.size() <= passable.size(), "reader made up holds");
  for (std::size_t i = 0; i < parsed.holds.size(); ++i) {
    check(fitted_copy(*passable[i], parsed.holds[i]),
          "parse(format(holds)) is not the holds");
  }
  const std::size_t left_out = holds.size() - parsed.holds.size();
  if (left_out == 0) {
    check(parsed.problems.empty(), "problem reported for a full round trip");
  } else {
    check(parsed.problems.size() == 1 &&
              parsed.problems[0].find("left " + std::to_string(left_out) +
                                      " of its holds out") != std::string::npos,
          "holds left out without saying how many");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  check_as_value(std::string_view(reinterpret_cast<const char*>(data), size));
  check_as_holds(data, size);
  return 0;
}

// TIERLOCK_HELD: the writer, the reader and the process's inherited holds.
#include "tier/tier_env.h"

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "base/mutex.h"
#include "base/string_util.h"
#include "tierlock/lock_context.h"
#include "tierlock/text.h"

namespace tierlock::internal {
namespace {

// Room the writer keeps for the final ";+N" item.
constexpr std::size_t kOmittedItemRoom = 22;
// How much of a bad entry a problem line shows.
constexpr std::size_t kShownEntryBytes = 120;

// The bytes the codec percent-encodes: its separators, '%' itself, and
// controls (an environment value is a C string, and a terminal may see it).
bool needs_escape(char c) {
  return c == '%' || c == ';' || c == ',' ||
         static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
}

void append_escaped(std::string* out, std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char c : s) {
    if (needs_escape(c)) {
      auto u = static_cast<unsigned char>(c);
      out->push_back('%');
      out->push_back(kHex[u >> 4]);
      out->push_back(kHex[u & 0xf]);
    } else {
      out->push_back(c);
    }
  }
}

// Decodes one field; nullopt on a raw byte that the writer would have
// escaped, or a malformed escape. %00 decodes to NUL (held_entry_problem
// decides whether the field may hold one).
std::optional<std::string> unescape(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      if (needs_escape(s[i])) return std::nullopt;
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    const int hi = hex(s[i + 1]);
    const int lo = hex(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>((hi << 4) | lo));
    i += 2;
  }
  return out;
}

template <typename Int>
bool parse_int(std::string_view s, Int* v) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && end == s.data() + s.size();
}

// Cuts `s` to at most `limit` bytes, at a UTF-8 boundary, ending in "...".
void fit(std::string* s, std::size_t limit) {
  if (s->size() <= limit) return;
  std::size_t n = limit - 3;
  // A UTF-8 character has at most 3 continuation bytes; invalid text is cut
  // anywhere (escape_text shows its bytes).
  for (int i = 0;
       i < 3 && n > 0 && (static_cast<unsigned char>((*s)[n]) & 0xC0) == 0x80;
       ++i) {
    --n;
  }
  s->resize(n);
  s->append("...");
}

// An entry as a problem line shows it: escaped, and cut.
std::string shown(std::string_view entry) {
  if (entry.size() <= kShownEntryBytes) return escape_text(entry);
  return escape_text(entry.substr(0, kShownEntryBytes)) + "...";
}

// Decodes one entry; empty `*why` on success.
InheritedHold decode_entry(std::string_view item, std::string_view* why) {
  InheritedHold h;
  std::string_view f[5];
  std::size_t n = 0;
  for (std::size_t pos = 0;;) {
    const std::size_t comma = item.find(',', pos);
    if (n == 5) {
      *why = "expected 5 fields, LEVEL,MODE,PID,NAME,PATH";
      return h;
    }
    f[n++] =
        item.substr(pos, comma == std::string_view::npos ? comma : comma - pos);
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  if (n != 5) {
    *why = "expected 5 fields, LEVEL,MODE,PID,NAME,PATH";
    return h;
  }
  if (!parse_int(f[0], &h.level)) {
    *why = "LEVEL is not a decimal int";
    return h;
  }
  if (f[1] == "x") {
    h.mode = Mode::kExclusive;
  } else if (f[1] == "s") {
    h.mode = Mode::kShared;
  } else {
    *why = "MODE must be x or s";
    return h;
  }
  if (!parse_int(f[2], &h.pid)) {
    *why = "PID is not a decimal number";
    return h;
  }
  std::optional<std::string> name = unescape(f[3]);
  if (!name) {
    *why = "bad escape or raw control character in NAME";
    return h;
  }
  std::optional<std::string> path = unescape(f[4]);
  if (!path) {
    *why = "bad escape or raw control character in PATH";
    return h;
  }
  h.name = *std::move(name);
  h.lock_file = *std::move(path);
  *why = held_entry_problem(h);
  return h;
}

// A "+N" item: the writer left N holds out.
bool omitted_item(std::string_view item, std::size_t* n) {
  return item.size() > 1 && item.front() == '+' && item[1] != '-' &&
         item[1] != '+' && parse_int(item.substr(1), n);
}

struct InheritedState {
  Mutex mu;
};

InheritedState& inherited_state() {
  static auto* s = new InheritedState();
  return *s;
}

}  // namespace

std::string_view held_entry_problem(const InheritedHold& h) {
  if (h.pid <= 0) return "PID must be positive";
  if (h.lock_file.empty() || h.lock_file.front() != '/') {
    return "PATH must be an absolute path";
  }
  if (h.lock_file.size() > kMaxHeldPathBytes) {
    return "PATH is longer than 4096 bytes";
  }
  if (h.lock_file.find('\0') != std::string::npos) return "NUL in PATH";
  if (h.name.size() > kMaxHeldNameBytes) {
    return "NAME is longer than 1024 bytes";
  }
  return {};
}

InheritedHold fit_held_entry(InheritedHold h) {
  fit(&h.name, kMaxHeldNameBytes);
  fit(&h.lock_file, kMaxHeldPathBytes);
  return h;
}

// Format (version 1):  1;LEVEL,MODE,PID,NAME,PATH;...[;+N]
// MODE is x (exclusive) or s (shared); NAME and PATH are percent-encoded
// (%, ;, , and control characters). See docs/design.md.
std::string format_held_env(const std::vector<InheritedHold>& holds) {
  if (holds.empty()) return {};
  std::string out = "1";
  std::string entry;
  std::size_t written = 0;
  std::size_t left_out = 0;
  bool full = false;
  for (const InheritedHold& hold : holds) {
    InheritedHold h = fit_held_entry(hold);
    if (full || !held_entry_problem(h).empty()) {
      ++left_out;
      continue;
    }
    entry.clear();
    absl::StrAppend(&entry, ";", h.level, ",",
                    h.mode == Mode::kShared ? "s" : "x", ",", h.pid, ",");
    append_escaped(&entry, h.name);
    entry.push_back(',');
    append_escaped(&entry, h.lock_file);
    if (written == kMaxHeldEnvEntries ||
        out.size() + entry.size() + kOmittedItemRoom > kMaxHeldEnvBytes) {
      full = true;  // keep the first N, as the reader does
      ++left_out;
      continue;
    }
    out += entry;
    ++written;
  }
  if (left_out != 0) absl::StrAppend(&out, ";+", left_out);
  return out;
}

ParsedHeldEnv parse_held_env(std::string_view value) {
  ParsedHeldEnv out;
  if (value.empty()) return out;
  const std::size_t first = value.find(';');
  const std::string_view version = value.substr(0, first);
  if (version != "1") {
    out.problems.push_back(
        absl::StrCat("ignoring ", to_absl(kHeldEnvVar), ": unknown version '",
                     shown(version),
                     "' (expected '1;...'); no tier of the parent is checked"));
    return out;
  }
  if (first == std::string_view::npos) return out;
  std::size_t past_limits = 0;
  std::size_t index = 0;
  for (std::size_t pos = first + 1;;) {
    std::size_t end = value.find(';', pos);
    const bool last = end == std::string_view::npos;
    if (last) end = value.size();
    const std::string_view item = value.substr(pos, end - pos);
    ++index;
    std::size_t omitted = 0;
    if (last && omitted_item(item, &omitted)) {
      out.problems.push_back(absl::StrCat(
          "the parent left ", omitted, " of its holds out of ",
          to_absl(kHeldEnvVar), " (limits: ", kMaxHeldEnvEntries, " entries, ",
          kMaxHeldEnvBytes, " bytes); they are not checked"));
      break;
    }
    // The writer's rule exactly (room kept for a final "+N").
    if (end + kOmittedItemRoom > kMaxHeldEnvBytes ||
        out.holds.size() == kMaxHeldEnvEntries) {
      ++past_limits;
    } else {
      std::string_view why;
      InheritedHold h = decode_entry(item, &why);
      if (why.empty()) {
        out.holds.push_back(std::move(h));
      } else {
        out.problems.push_back(absl::StrCat("ignoring ", to_absl(kHeldEnvVar),
                                            " entry ", index, " '", shown(item),
                                            "': ", to_absl(why)));
      }
    }
    if (last) break;
    pos = end + 1;
  }
  if (past_limits != 0) {
    out.problems.push_back(absl::StrCat(
        "ignoring ", past_limits, " ", to_absl(kHeldEnvVar),
        past_limits == 1 ? " entry" : " entries", " past its limits (",
        kMaxHeldEnvEntries, " entries, ", kMaxHeldEnvBytes,
        " bytes); kept the first ", out.holds.size()));
  }
  return out;
}

std::atomic<const std::vector<InheritedHold>*> g_inherited_holds{nullptr};

const std::vector<InheritedHold>& inherited_holds_slow() {
  InheritedState& s = inherited_state();
  UniqueLock lock(s.mu);
  if (const auto* p = g_inherited_holds.load(std::memory_order_relaxed)) {
    return *p;
  }
  auto* holds = new std::vector<InheritedHold>();  // kept: views may escape
  // Read once per process, normally before threads change the environment.
  if (const char* env = std::getenv(  // NOLINT(concurrency-mt-unsafe)
          std::string(kHeldEnvVar).c_str());
      env != nullptr && *env != '\0') {
    ParsedHeldEnv parsed = parse_held_env(env);
    for (const std::string& problem : parsed.problems) {
      std::fprintf(stderr, "tierlock: %s\n", problem.c_str());
    }
    *holds = std::move(parsed.holds);
  }
  g_inherited_holds.store(holds, std::memory_order_release);
  return *holds;
}

void reset_inherited_holds_for_testing() {
  InheritedState& s = inherited_state();
  UniqueLock lock(s.mu);
  // The old vector stays alive (a concurrent reader may hold a reference),
  // reachable from `retired` so leak checkers see it is kept on purpose.
  static auto* retired = new std::vector<const std::vector<InheritedHold>*>();
  if (const auto* old = g_inherited_holds.load(std::memory_order_relaxed)) {
    retired->push_back(old);
  }
  g_inherited_holds.store(nullptr, std::memory_order_release);
}

}  // namespace tierlock::internal

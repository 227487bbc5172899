// Shared pieces of the `tierlock` command: exit codes, messages.
#include "cli.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tierlock/text.h"

namespace tierlock::cli {

int exit_code_for(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kOk;
    case absl::StatusCode::kNotFound:
      return kNoDirectory;
    case absl::StatusCode::kPermissionDenied:
      return kPermission;
    default:
      return kOther;
  }
}

std::string error_text(int err) {
  return std::error_code(err, std::generic_category()).message();
}

bool valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    std::size_t n = 0;
    std::uint32_t cp = 0;
    if (b >= 0xc2 && b <= 0xdf) {
      n = 1, cp = b & 0x1f;
    } else if (b >= 0xe0 && b <= 0xef) {
      n = 2, cp = b & 0x0f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      n = 3, cp = b & 0x07;
    } else {
      return false;  // a continuation byte, 0xc0/0xc1, or above 0xf4
    }
    if (i + n >= text.size()) return false;  // truncated
    for (std::size_t k = 1; k <= n; ++k) {
      const auto c = static_cast<unsigned char>(text[i + k]);
      if ((c & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3f);
    }
    // Overlong forms, surrogates, beyond U+10FFFF.
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

std::string safe_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (;;) {
    const std::size_t slash = text.find('\\');
    out += escape_text(text.substr(0, slash));
    if (slash == std::string_view::npos) return out;
    out += '\\';
    text.remove_prefix(slash + 1);
  }
}

std::string hex_bytes(std::string_view text) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size() * 2);
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    out += kDigits[u >> 4];
    out += kDigits[u & 0xf];
  }
  return out;
}

bool parse_timeout(const std::string& text,
                   std::optional<std::chrono::nanoseconds>* timeout) {
  // strtod takes leading blanks, hex floats, "inf" and "nan": blanks are
  // refused here, NaN below; the rest are numbers after all.
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0])))
    return false;
  char* end = nullptr;
  errno = 0;
  const double s = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || std::isnan(s) || s < 0 ||
      std::signbit(s)) {
    // -0 is refused as negative: the sign says the user meant something else.
    return false;
  }
  if (s >= kForeverSeconds) {  // ERANGE overflow gives HUGE_VAL: forever too
    *timeout = std::nullopt;
    return true;
  }
  *timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::duration<double>(s));
  return true;
}

bool split_operands(const std::vector<std::string>& tokens, bool after_marker,
                    bool with_dir, std::string* dir,
                    std::vector<std::string>* command, std::string* error) {
  std::size_t i = 0;
  if (!after_marker && !tokens.empty() && tokens[0].size() > 1 &&
      tokens[0][0] == '-') {
    *error = absl::StrCat("unknown option '", escape_text(tokens[0]),
                          "' (options go before ", with_dir ? "DIR" : "COMMAND",
                          ")");
    return false;
  }
  if (with_dir) {
    if (tokens.empty()) {
      *error = "DIR is required (or --backend URL --key NAME)";
      return false;
    }
    *dir = tokens[i++];
    if (i < tokens.size() && tokens[i] == "--") ++i;
  }
  command->assign(tokens.begin() + static_cast<std::ptrdiff_t>(i),
                  tokens.end());
  if (command->empty()) {
    *error = with_dir ? "COMMAND is required (usage: tierlock run [OPTIONS] "
                        "DIR [--] COMMAND [ARG...])"
                      : "no command given (usage: tierlock run --backend URL "
                        "--key NAME [OPTIONS] [--] "
                        "COMMAND [ARG...])";
    return false;
  }
  return true;
}

std::string human_duration(std::chrono::nanoseconds d) {
  return format_duration(d);
}

namespace {
std::vector<std::string>& command_line_storage() {
  static std::vector<std::string> args;
  return args;
}
}  // namespace

void set_command_line(int argc, char** argv) {
  command_line_storage().assign(argv, argv + argc);
}

const std::vector<std::string>& command_line() {
  return command_line_storage();
}

void print_error(absl::string_view path, absl::string_view reason) {
  std::string line = absl::StrCat(
      "tierlock: ", escape_text(std::string_view(path.data(), path.size())),
      ": ", safe_text(std::string_view(reason.data(), reason.size())), "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

namespace {

// "12:01:03" today, "2026-11-22 12:01:03" on another day (local time).
std::string local_time(std::chrono::system_clock::time_point t) {
  const absl::TimeZone tz = absl::LocalTimeZone();
  const absl::Time at = absl::FromChrono(t);
  const bool today = absl::FormatTime("%Y-%m-%d", at, tz) ==
                     absl::FormatTime("%Y-%m-%d", absl::Now(), tz);
  return absl::FormatTime(today ? "%H:%M:%S" : "%Y-%m-%d %H:%M:%S", at, tz);
}

std::string describe_one(const Holder& h) {
  // No pid but a taker: the process that took the lock has exited and the
  // one that inherited it was not found (another user's, or the bounded
  // /proc scan ran out): say that, not "another pid namespace".
  std::string out =
      h.pid.has_value() ? absl::StrCat("pid ", *h.pid)
      : h.taker_pid.has_value()
          ? absl::StrCat("a process that inherited it from pid ", *h.taker_pid,
                         " (exited; not visible or not found in time)")
          : std::string("a process in another pid namespace");
  if (h.program.has_value())
    absl::StrAppend(&out, " '", escape_text(*h.program), "'");
  if (h.since.has_value())
    absl::StrAppend(&out, " since ", local_time(*h.since));
  return out;
}

}  // namespace

std::string describe_holders(const std::vector<Holder>& holders) {
  if (holders.empty())
    return "no holder visible (it may have just been released)";
  std::string out = holders.front().mode == Mode::kExclusive
                        ? "held exclusively by "
                        : "held shared by ";
  for (std::size_t i = 0; i < holders.size(); ++i) {
    if (i > 0) out += ", ";
    out += describe_one(holders[i]);
  }
  return out;
}

}  // namespace tierlock::cli

// escape_text: one escaping rule for every human-readable output.
#include "tierlock/text.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tierlock {
namespace {

constexpr char kHex[] = "0123456789abcdef";

void append_byte_escape(std::string& out, unsigned char b) {
  out += "\\x";
  out += kHex[b >> 4];
  out += kHex[b & 0xf];
}

void append_code_point_escape(std::string& out, std::uint32_t cp) {
  out += "\\u";
  for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(cp >> shift) & 0xf];
}

// Code points shown escaped although valid: C1 controls, the bidirectional
// controls (they reorder the text around them) and the Unicode line breaks.
bool escaped_code_point(std::uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9f) || cp == 0x061c || cp == 0x200e ||
         cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) ||
         (cp >= 0x2066 && cp <= 0x2069);
}

// Decodes one UTF-8 sequence at s[i]: its length (1-4) and code point, or 0
// if the bytes there are not a valid, shortest-form, non-surrogate sequence.
std::size_t decode(std::string_view s, std::size_t i, std::uint32_t* cp) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  std::size_t len;
  std::uint32_t min;
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  } else if ((b0 & 0xe0) == 0xc0) {
    len = 2;
    min = 0x80;
    *cp = b0 & 0x1f;
  } else if ((b0 & 0xf0) == 0xe0) {
    len = 3;
    min = 0x800;
    *cp = b0 & 0x0f;
  } else if ((b0 & 0xf8) == 0xf0) {
    len = 4;
    min = 0x10000;
    *cp = b0 & 0x07;
  } else {
    return 0;
  }
  if (s.size() - i < len) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xc0) != 0x80) return 0;
    *cp = (*cp << 6) | (b & 0x3f);
  }
  if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff)) return 0;
  return len;
}

}  // namespace

std::string escape_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b >= 0x20 && b < 0x7f) {  // the common case: printable ASCII
      if (b == '\\') out += '\\';
      out += text[i++];
      continue;
    }
    std::uint32_t cp = 0;
    const std::size_t len = decode(text, i, &cp);
    if (len == 0 || cp < 0x20 || cp == 0x7f) {
      append_byte_escape(out, b);
      ++i;
    } else if (escaped_code_point(cp)) {
      append_code_point_escape(out, cp);
      i += len;
    } else {
      out.append(text.substr(i, len));
      i += len;
    }
  }
  return out;
}

std::string format_duration(std::chrono::nanoseconds d) {
  const double s = std::max(0.0, std::chrono::duration<double>(d).count());
  if (s < 0.01) return absl::StrFormat("%.1f ms", s * 1e3);
  if (s < 1) return absl::StrFormat("%.0f ms", s * 1e3);
  if (s < 10) return absl::StrFormat("%.2f s", s);
  if (s < 60) return absl::StrFormat("%.1f s", s);
  const auto whole = static_cast<long long>(std::llround(s));
  if (whole < 3600) {
    return absl::StrCat(whole / 60, " min", whole % 60 == 0 ? "" : " ",
                        whole % 60 == 0 ? "" : absl::StrCat(whole % 60, " s"));
  }
  const long long minutes = (whole + 30) / 60;
  return absl::StrCat(
      minutes / 60, " h",
      minutes % 60 == 0 ? "" : absl::StrCat(" ", minutes % 60, " min"));
}

}  // namespace tierlock

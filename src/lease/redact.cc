// src/lease/redact.cc
//
// redact_url (tierlock/lease.h): passwords out of URLs, connection strings
// and messages that quote them.
#include <cctype>
#include <string>
#include <string_view>

#include "tierlock/lease.h"

namespace tierlock {
namespace {

constexpr std::string_view kHidden = "***";

bool is_space(char c) {
  return std::isspace(static_cast<unsigned char>(c)) != 0;
}

bool is_scheme_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '+' ||
         c == '-' || c == '.';
}

// Where a URL quoted in a message ends.
bool ends_url(char c) {
  return is_space(c) || c == '"' || c == '\'' || c == '>';
}

// Hides the password of each "scheme://user:password@" in `s`.
std::string redact_userinfo(std::string_view s) {
  std::string out;
  std::size_t copied = 0;
  for (std::size_t sep = s.find("://"); sep != std::string_view::npos;
       sep = s.find("://", sep + 3)) {
    if (sep == 0 || !is_scheme_char(s[sep - 1])) continue;
    const std::size_t start = sep + 3;
    std::size_t end = start;
    while (end < s.size() && !ends_url(s[end])) ++end;
    // The userinfo ends at the URL's last '@': a password may hold '/', '?'
    // or '@' unencoded, and hiding too much is the safe mistake.
    const std::size_t at = s.substr(start, end - start).rfind('@');
    if (at == std::string_view::npos) continue;
    const std::size_t colon = s.substr(start, at).find(':');
    if (colon == std::string_view::npos) continue;  // a user name only
    out.append(s.substr(copied, start + colon + 1 - copied));
    out.append(kHidden);
    copied = start + at;
    sep = copied;
  }
  out.append(s.substr(copied));
  return out;
}

bool ieq(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// Hides the value of each "...password = VALUE" in `s`.
std::string redact_keywords(std::string_view s) {
  constexpr std::string_view kKey = "password";
  std::string out;
  std::size_t copied = 0;
  for (std::size_t i = 0; i + kKey.size() <= s.size(); ++i) {
    if (!ieq(s.substr(i, kKey.size()), kKey)) continue;
    std::size_t v = i + kKey.size();
    while (v < s.size() && is_space(s[v])) ++v;
    if (v >= s.size() || s[v] != '=') continue;
    ++v;
    while (v < s.size() && is_space(s[v])) ++v;
    std::size_t end = v;
    if (end < s.size() && s[end] == '\'') {
      // libpq quoting: '...' with backslash escapes; unterminated: all of it.
      for (++end; end < s.size() && s[end] != '\''; ++end) {
        if (s[end] == '\\' && end + 1 < s.size()) ++end;
      }
      if (end < s.size()) ++end;
    } else {
      auto value_end = [&](std::size_t p) {
        while (p < s.size() && !is_space(s[p]) && s[p] != '&' && s[p] != '#' &&
               s[p] != '"') {
          ++p;
        }
        return p;
      };
      end = value_end(end);
      // Words after it without '=' are most likely the rest of a password
      // with a space in it (libpq would reject them; its message quotes them).
      for (;;) {
        std::size_t w = end;
        while (w < s.size() && is_space(s[w])) ++w;
        if (w == end || w >= s.size()) break;
        const std::size_t we = value_end(w);
        if (we == w || s.substr(w, we - w).find('=') != std::string_view::npos)
          break;
        end = we;
      }
    }
    out.append(s.substr(copied, v - copied));
    out.append(kHidden);
    copied = end;
    i = end == 0 ? 0 : end - 1;
  }
  out.append(s.substr(copied));
  return out;
}

}  // namespace

std::string redact_url(std::string_view text) {
  return redact_keywords(redact_userinfo(text));
}

}  // namespace tierlock

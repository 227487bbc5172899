// Shared pieces of the `tierlock` command: exit codes, messages.
#include "cli.h"

#include <cstdio>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

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

std::string printable(absl::string_view text) {
  std::string out(text);
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = '?';
  }
  return out;
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
  std::string line = absl::StrCat("tierlock: ", printable(path), ": ",
                                  printable(reason), "\n");
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
  std::string out =
      h.pid.has_value() ? absl::StrCat("pid ", *h.pid) : "a process in another pid namespace";
  if (h.program.has_value()) absl::StrAppend(&out, " '", printable(*h.program), "'");
  if (h.since.has_value()) absl::StrAppend(&out, " since ", local_time(*h.since));
  return out;
}

}  // namespace

std::string describe_holders(const std::vector<Holder>& holders) {
  if (holders.empty()) return "no holder visible (it may have just been released)";
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

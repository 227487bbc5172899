// tierlock status: who holds each directory's lock. Never creates, takes or
// breaks anything (tierlock::inspect_lock only looks).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli.h"
#include "nlohmann/json.hpp"
#include "tierlock/holder.h"

namespace tierlock::cli {
namespace {

struct StatusOptions {
  bool json = false;
  std::string lock_name = ".lock";
  std::vector<std::string> dirs;
};

std::string utc(std::chrono::system_clock::time_point t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromChrono(t),
                          absl::UTCTimeZone());
}

std::string tier_text(const Holder& h) {
  std::string out = absl::StrCat(*h.tier_level);
  if (h.tier_name.has_value() && !h.tier_name->empty()) {
    absl::StrAppend(&out, ":", *h.tier_name);
  }
  return out;
}

nlohmann::ordered_json holder_json(const Holder& h) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (h.pid.has_value()) j["pid"] = *h.pid;
  j["mode"] = std::string(mode_name(h.mode));
  if (h.program.has_value()) j["program"] = *h.program;
  if (h.host.has_value()) j["host"] = *h.host;
  if (h.since.has_value()) j["since"] = utc(*h.since);
  if (h.tier_level.has_value()) {
    j["tier"] = {{"level", *h.tier_level}, {"name", h.tier_name.value_or("")}};
  }
  if (h.start_time.has_value()) j["start_time"] = *h.start_time;
  j["recorded"] = h.recorded;
  return j;
}

void print_json(const std::string& dir, const LockState& state) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  j["dir"] = dir;
  j["lock_file"] = state.lock_file.native();
  j["state"] = state.holders.empty() ? "free" : "held";
  if (!state.holders.empty()) {
    j["mode"] = std::string(mode_name(state.holders.front().mode));
  }
  j["holders"] = nlohmann::ordered_json::array();
  for (const Holder& h : state.holders) j["holders"].push_back(holder_json(h));
  // Program names come from other processes: never let invalid UTF-8 make
  // the output (or the program) fail.
  std::string line = j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
}

void print_text(const LockState& state) {
  std::string out = printable(state.lock_file.native());
  if (state.holders.empty()) {
    absl::StrAppend(&out, ": free", state.lock_file_exists ? "" : " (no lock file)", "\n");
  } else {
    absl::StrAppend(&out, ": held ",
                    state.holders.front().mode == Mode::kExclusive ? "exclusively" : "shared",
                    "\n");
    for (const Holder& h : state.holders) {
      absl::StrAppend(&out, "  pid ", h.pid.has_value() ? absl::StrCat(*h.pid) : "?");
      if (h.since.has_value()) absl::StrAppend(&out, "  since ", utc(*h.since));
      if (h.host.has_value()) absl::StrAppend(&out, "  host ", printable(*h.host));
      if (h.tier_level.has_value()) absl::StrAppend(&out, "  tier ", printable(tier_text(h)));
      if (h.program.has_value()) absl::StrAppend(&out, "  '", printable(*h.program), "'");
      out += "\n";
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

int run_status(const StatusOptions& o) {
  int code = kOk;
  for (const std::string& dir : o.dirs) {
    absl::StatusOr<LockState> state = inspect_lock(dir, o.lock_name);
    if (!state.ok()) {
      print_error(dir, state.status().code() == absl::StatusCode::kNotFound
                           ? std::string("no such directory")
                           : std::string(state.status().message()));
      code = kOther;
      continue;
    }
    if (o.json) {
      print_json(dir, *state);
    } else {
      print_text(*state);
    }
  }
  std::fflush(stdout);
  return code;
}

}  // namespace

void setup_status(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<StatusOptions>();
  CLI::App* status = app.add_subcommand(
      "status",
      "tierlock status [--json] [--lock-name NAME] DIR...\n\n"
      "Show whether each DIR's lock is free or held, and by whom: pid, "
      "program, host, since, tier. Holders that are not tierlock (flock(1), "
      "Python's filelock) are found in the kernel's lock table and named from "
      "/proc; what is not known is left out. Never takes or breaks the lock "
      "and creates nothing.");
  status->add_flag("--json", o->json,
                   "One JSON object per directory and line: dir, lock_file, "
                   "state (free/held), mode, holders [{pid, mode, program, host, "
                   "since (UTC), tier {level, name}, start_time, recorded}]");
  status->add_option("--lock-name", o->lock_name,
                     "The lock file's name inside DIR (default .lock)")
      ->type_name("NAME");
  status->add_option("DIR", o->dirs, "Directories to inspect")->required();
  status->footer("Exit codes: 0 every directory was inspected; 1 otherwise "
                 "(one error line per bad directory); 64 usage.");
  status->callback([o, exit_code] { *exit_code = run_status(*o); });
}

}  // namespace tierlock::cli

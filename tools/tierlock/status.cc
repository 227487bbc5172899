// tierlock status: who holds each directory's lock. Never creates, takes or
// breaks anything (tierlock::inspect_lock only looks).
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli.h"
#include "lease_run.h"
#include "nlohmann/json.hpp"
#include "tierlock/holder.h"
#include "tierlock/text.h"

namespace tierlock::cli {
namespace {

struct StatusOptions {
  bool json = false;
  std::string lock_name = ".lock";
  std::vector<std::string> dirs;
  std::string backend;  // lease mode: --backend URL --key K
  std::string key;
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

// Sets j[key] to `text`. JSON strings are Unicode: text that is not valid
// UTF-8 (a path or program name is any bytes) gets its escaped form
// (escape_text) under `key` and its exact bytes, in hexadecimal, under
// `key`_bytes, so nothing is lost or replaced.
void put_text(nlohmann::ordered_json& j, const std::string& key,
              const std::string& text) {
  if (valid_utf8(text)) {
    j[key] = text;
  } else {
    j[key] = escape_text(text);
    j[key + "_bytes"] = hex_bytes(text);
  }
}

nlohmann::ordered_json holder_json(const Holder& h) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (h.pid.has_value()) j["pid"] = *h.pid;
  j["mode"] = std::string(mode_name(h.mode));
  if (h.program.has_value()) put_text(j, "program", *h.program);
  if (h.host.has_value()) put_text(j, "host", *h.host);
  if (h.since.has_value()) j["since"] = utc(*h.since);
  if (h.tier_level.has_value()) {
    nlohmann::ordered_json tier = {{"level", *h.tier_level}};
    put_text(tier, "name", h.tier_name.value_or(""));
    j["tier"] = std::move(tier);
  }
  if (h.start_time.has_value()) j["start_time"] = *h.start_time;
  j["recorded"] = h.recorded;
  return j;
}

void print_json(const std::string& dir, const LockState& state) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  put_text(j, "dir", dir);
  put_text(j, "lock_file", state.lock_file.native());
  j["state"] = state.holders.empty() ? "free" : "held";
  if (!state.holders.empty()) {
    j["mode"] = std::string(mode_name(state.holders.front().mode));
  }
  j["holders"] = nlohmann::ordered_json::array();
  for (const Holder& h : state.holders) j["holders"].push_back(holder_json(h));
  if (!state.unsafe_reason.empty())
    put_text(j, "unsafe_reason", state.unsafe_reason);
  // ASCII only (\uXXXX for the rest): the values are exact after parsing,
  // and C1 or bidi controls in a name reach no terminal raw. Every string
  // is valid UTF-8 by now (put_text); `strict` would only throw.
  std::string line =
      j.dump(-1, ' ', true, nlohmann::ordered_json::error_handler_t::strict);
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
}

// One line of ASCII JSON, as print_json writes.
void write_json_line(const nlohmann::ordered_json& j) {
  std::string line =
      j.dump(-1, ' ', true, nlohmann::ordered_json::error_handler_t::strict);
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
}

void print_text(const LockState& state) {
  std::string out = escape_text(state.lock_file.native());
  if (state.holders.empty()) {
    absl::StrAppend(&out, ": free",
                    state.lock_file_exists ? "" : " (no lock file)", "\n");
  } else {
    absl::StrAppend(&out, ": held ",
                    state.holders.front().mode == Mode::kExclusive
                        ? "exclusively"
                        : "shared",
                    "\n");
    for (const Holder& h :
         state.holders) {  // escape_text: other processes' text
      absl::StrAppend(&out, "  pid ",
                      h.pid.has_value() ? absl::StrCat(*h.pid) : "?");
      if (h.taker_pid.has_value()) {
        absl::StrAppend(
            &out, "  inherited from pid ", *h.taker_pid, " (exited",
            h.pid.has_value()
                ? ")"
                : "; the holder is not visible or not found in time)");
      }
      if (h.since.has_value()) absl::StrAppend(&out, "  since ", utc(*h.since));
      if (h.host.has_value())
        absl::StrAppend(&out, "  host ", escape_text(*h.host));
      if (h.tier_level.has_value())
        absl::StrAppend(&out, "  tier ", escape_text(tier_text(h)));
      if (h.program.has_value())
        absl::StrAppend(&out, "  '", escape_text(*h.program), "'");
      out += "\n";
    }
  }
  if (!state.unsafe_reason.empty()) {
    absl::StrAppend(
        &out, "  unsafe lock file: ", safe_text(state.unsafe_reason), "\n");
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

int run_status(const StatusOptions& o) {
  if (!o.backend.empty() || !o.key.empty()) {
    if (o.backend.empty()) {
      print_error("--key", "needs --backend");
      return kUsage;
    }
    if (o.key.empty()) {
      print_error("--backend", "needs --key (the lease's key)");
      return kUsage;
    }
    if (!o.dirs.empty()) {
      print_error(o.dirs.front(),
                  "DIR is not allowed with --backend (a lease has no "
                  "directory: tierlock status --backend URL --key NAME)");
      return kUsage;
    }
    if (o.lock_name != ".lock") {
      print_error("--lock-name", "is for directory locks (not --backend)");
      return kUsage;
    }
    return run_lease_status({o.backend, o.key, o.json});
  }
  if (o.dirs.empty()) {
    // As CLI11 words a missing required operand (DIR is optional only
    // because --backend replaces it).
    print_error("DIR", "is required (tierlock status --help)");
    return kUsage;
  }
  int code = kOk;
  for (const std::string& dir : o.dirs) {
    absl::StatusOr<LockState> state = inspect_lock(dir, o.lock_name);
    if (!state.ok()) {
      // "no such directory" only if it is DIR that is missing.
      struct stat dir_stat;
      const bool missing =
          state.status().code() == absl::StatusCode::kNotFound &&
          ::stat(dir.c_str(), &dir_stat) != 0 &&
          (errno == ENOENT || errno == ENOTDIR);
      print_error(dir, missing ? std::string("no such directory")
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

void print_lease_status(const std::string& where, std::string_view backend,
                        const std::string& key,
                        const std::optional<Holder>& holder, bool json) {
  if (json) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    put_text(j, "backend", where);
    put_text(j, "key", key);
    j["state"] = holder.has_value() ? "held" : "free";
    if (holder.has_value()) {
      const Holder& h = *holder;
      nlohmann::ordered_json o = nlohmann::ordered_json::object();
      if (h.owner_id.has_value()) put_text(o, "owner_id", *h.owner_id);
      if (h.pid.has_value()) o["pid"] = *h.pid;
      if (h.program.has_value()) put_text(o, "program", *h.program);
      if (h.host.has_value()) put_text(o, "host", *h.host);
      if (h.since.has_value()) o["since"] = utc(*h.since);
      if (h.token.has_value()) o["token"] = *h.token;
      j["holder"] = std::move(o);
    }
    write_json_line(j);
    std::fflush(stdout);
    return;
  }
  std::string out = absl::StrCat("lease '", escape_text(key), "' on ",
                                 escape_text(backend), ": ");
  if (!holder.has_value()) {
    out += "free\n";
  } else {
    const Holder& h = *holder;
    out += "held\n ";
    // escape_text: the holder's text is whatever it stored.
    if (h.owner_id.has_value())
      absl::StrAppend(&out, " owner ", escape_text(*h.owner_id));
    if (h.pid.has_value()) absl::StrAppend(&out, "  pid ", *h.pid);
    if (h.since.has_value()) absl::StrAppend(&out, "  since ", utc(*h.since));
    if (h.host.has_value())
      absl::StrAppend(&out, "  host ", escape_text(*h.host));
    if (h.token.has_value()) absl::StrAppend(&out, "  token ", *h.token);
    if (h.program.has_value())
      absl::StrAppend(&out, "  '", escape_text(*h.program), "'");
    if (!h.owner_id && !h.pid && !h.host && !h.program) {
      absl::StrAppend(&out, " (the backend does not say by whom)");
    }
    out += "\n";
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
}

void setup_status(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<StatusOptions>();
  CLI::App* status = app.add_subcommand(
      "status",
      "tierlock status [--json] [--lock-name NAME] DIR...\n"
      "tierlock status [--json] --backend URL --key NAME\n\n"
      "Show whether each DIR's lock is free or held, and by whom: pid, "
      "program, host, since, tier. Holders that are not tierlock (flock(1), "
      "Python's filelock) are found in the kernel's lock table and named from "
      "/proc; what is not known is left out. Never takes or breaks the lock "
      "and creates nothing.");
  status->add_flag(
      "--json", o->json,
      "One JSON object per directory and line: dir, lock_file, "
      "state (free/held), mode, holders [{pid, mode, program, host, "
      "since (UTC), tier {level, name}, start_time, recorded}], "
      "unsafe_reason (only if another user could delete the lock file). "
      "ASCII JSON; a name that is not UTF-8 is given escaped, with its "
      "exact bytes in hex in NAME_bytes (dir_bytes, program_bytes, ...)");
  status
      ->add_option("--lock-name", o->lock_name,
                   "The lock file's name inside DIR (default .lock)")
      ->type_name("NAME");
  status->add_option("DIR", o->dirs, "Directories to inspect");
  status
      ->add_option("--backend", o->backend,
                   "Show who holds the lease --key on this backend instead "
                   "(URL as for tierlock run --backend): owner, pid, host, "
                   "since, token, program. JSON: backend, key, state, "
                   "holder {owner_id, pid, program, host, since, token}")
      ->type_name("URL");
  status->add_option("--key", o->key, "The lease's key (with --backend)")
      ->type_name("NAME");
  status->footer(
      "Exit codes: 0 every directory (or the lease) was inspected; 1 "
      "otherwise (one error line per bad directory, or the backend's "
      "error); 64 usage (also DIR with --backend).");
  status->callback([o, exit_code] { *exit_code = run_status(*o); });
}

}  // namespace tierlock::cli

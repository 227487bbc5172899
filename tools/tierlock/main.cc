// tierlock: run a command under a directory lock, or show who holds one.
// Thin: each subcommand lives in its own file (run.cc, status.cc, lock.cc,
// version.cc); here only the app and the one error format for parse errors.
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <utility>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cli.h"
#include "tierlock/text.h"

namespace {

// CLI11's parse errors in tierlock's format: ("<what>", "<why>") for
// print_error. CLI11 2.1 says what failed only in its message text, so the
// known shapes are taken apart here; anything else keeps CLI11's words.
std::pair<std::string, std::string> usage_error(const CLI::ParseError& e,
                                                const std::string& subcommand,
                                                int argc, char** argv) {
  const std::string text = e.what();
  const std::string help =
      subcommand.empty() ? std::string("tierlock --help")
                         : absl::StrCat("tierlock ", subcommand, " --help");
  if (dynamic_cast<const CLI::ConversionError*>(&e) != nullptr) {
    // "Could not convert: --ttl = abc"
    const std::string kPrefix = "Could not convert: ";
    const std::size_t eq = text.find(" = ");
    if (absl::StartsWith(text, kPrefix) && eq != std::string::npos) {
      return {text.substr(kPrefix.size(), eq - kPrefix.size()),
              absl::StrCat("expected a number, not '",
                           tierlock::escape_text(text.substr(eq + 3)), "'")};
    }
  }
  if (dynamic_cast<const CLI::ExtrasError*>(&e) != nullptr) {
    // "The following argument(s) was/were not expected: X Y" (reversed).
    const std::size_t colon = text.find(": ");
    std::string extra =
        colon == std::string::npos ? text : text.substr(colon + 2);
    const std::size_t space = extra.rfind(' ');
    if (space != std::string::npos) extra = extra.substr(space + 1);
    return {extra, absl::StrCat("unexpected argument (", help, ")")};
  }
  if (dynamic_cast<const CLI::ArgumentMismatch*>(&e) != nullptr) {
    // "--timeout: 1 required TEXT missing"
    const std::size_t colon = text.find(": ");
    if (colon != std::string::npos && absl::StrContains(text, "missing")) {
      return {text.substr(0, colon), "needs a value"};
    }
  }
  if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr) {
    if (subcommand.empty()) {
      // require_subcommand: nothing, or something that is not one.
      if (argc > 1) {
        return {argv[1],
                "not a subcommand or option (run, status, lock, version; "
                "tierlock --help)"};
      }
      return {"subcommand",
              "missing: run, status, lock or version (tierlock --help)"};
    }
    // "--fd is required", "DIR is required"
    const std::string kSuffix = " is required";
    if (absl::EndsWith(text, kSuffix)) {
      return {text.substr(0, text.size() - kSuffix.size()),
              absl::StrCat("is required (", help, ")")};
    }
  }
  std::string why = text;
  if (!why.empty() && why[0] >= 'A' && why[0] <= 'Z') why[0] += 'a' - 'A';
  return {subcommand.empty() ? std::string("tierlock") : subcommand,
          absl::StrCat(why, " (", help, ")")};
}

int run_main(int argc, char** argv) {
  tierlock::cli::set_command_line(argc, argv);
  CLI::App app(
      "tierlock: cross-process directory locks (flock-based, interoperable "
      "with flock(1) and Python's filelock).\n\n"
      "  tierlock run [OPTIONS] DIR [--] COMMAND [ARG...]\n"
      "      run COMMAND while holding DIR's lock (DIR/.lock)\n"
      "  tierlock run [OPTIONS] DIR -c 'SHELL COMMAND'\n"
      "      the same through /bin/sh -c, as flock -c\n"
      "  tierlock run --backend URL --key NAME [OPTIONS] [--] COMMAND "
      "[ARG...]\n"
      "      run COMMAND while holding a lease (PostgreSQL, Redis, SQLite, "
      "etcd)\n"
      "  tierlock status [--json] DIR...\n"
      "      show who holds each DIR's lock\n"
      "  tierlock lock [-s] [-n] [-w SECONDS] [-u] --fd N\n"
      "      lock a descriptor the shell opened, as `flock N`\n"
      "  tierlock version\n"
      "      the version and the build's options",
      "tierlock");
  app.footer(
      "Exit codes: the command's own status for `run` (128+N if it was killed "
      "by signal N); 75 the lock is held (--no-wait, --timeout; see -E); 64 "
      "usage; 66 no such directory; 70 an ancestor already holds the lock "
      "(run --reentrant); 74 the lease was lost (--backend); 77 permission "
      "denied; 126 command cannot be executed; 127 command not found; "
      "129/130/143 SIGHUP/SIGINT/SIGTERM while waiting (nothing held); 1 any "
      "other error.\n"
      "Every error is one line on stderr: tierlock: <what>: <why>.\n"
      "See `tierlock SUBCOMMAND --help` for each mode's options.");
  app.set_version_flag("--version", tierlock::cli::version_line());
  app.require_subcommand(1);
  // `tierlock run -- COMMAND…` (a `--` before run's first operand) hands the
  // rest to this app in CLI11 2.1: keep it unparsed for run (run.cc).
  app.prefix_command();
  int exit_code = tierlock::cli::kOk;
  tierlock::cli::setup_run(app, &exit_code);
  tierlock::cli::setup_status(app, &exit_code);
  tierlock::cli::setup_lock(app, &exit_code);
  tierlock::cli::setup_version(app, &exit_code);
  // Subcommands inherit prefix_command() and allow_extras from the app:
  // only `run` keeps its operands unparsed; the others refuse what they do
  // not know (`status --frobnicate DIR` used to be ignored).
  for (const char* name : {"status", "lock", "version"})
    app.get_subcommand(name)->prefix_command(false)->allow_extras(false);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::string subcommand;
    for (const CLI::App* sub : app.get_subcommands())
      subcommand = sub->get_name();
    auto [what, why] = usage_error(e, subcommand, argc, argv);
    tierlock::cli::print_error(what, tierlock::escape_text(why));
    return tierlock::cli::kUsage;
  }
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run_main(argc, argv);
  } catch (const std::exception& e) {
    // Out of memory and the like: one line, never an uncaught exception.
    std::fprintf(stderr, "tierlock: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "tierlock: unknown error\n");
  }
  return tierlock::cli::kOther;
}

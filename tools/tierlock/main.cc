// tierlock: run a command under a directory lock, or show who holds one.
// Thin: each subcommand lives in its own file (run.cc, status.cc).
#include <cstdio>
#include <exception>

#include "CLI/CLI.hpp"
#include "cli.h"

namespace {

int run_main(int argc, char** argv) {
  tierlock::cli::set_command_line(argc, argv);
  CLI::App app(
      "tierlock: cross-process directory locks (flock-based, interoperable "
      "with "
      "flock(1) and Python's filelock).",
      "tierlock");
  app.footer(
      "Exit codes: the command's own status for `run` (128+N if it was killed "
      "by signal N); 75 the lock is held (--no-wait, --timeout; see -E); 64 "
      "usage; 66 no such directory; 77 permission denied; 126 command cannot "
      "be executed; 127 command not found; 129/130/143 SIGHUP/SIGINT/SIGTERM "
      "while waiting (nothing held); 1 any other error.\n"
      "See `tierlock SUBCOMMAND --help` and docs/cli.md.");
  app.require_subcommand(1);
  // `tierlock run -- COMMAND…` (a `--` before run's first operand) hands the
  // rest to this app in CLI11 2.1: keep it unparsed for run (run.cc).
  app.prefix_command();
  int exit_code = tierlock::cli::kOk;
  tierlock::cli::setup_run(app, &exit_code);
  tierlock::cli::setup_status(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, or the error and a hint
    return code == 0 ? 0 : tierlock::cli::kUsage;
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

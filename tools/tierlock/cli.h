// tools/tierlock/cli.h
//
// Shared pieces of the `tierlock` command:
//   ExitCode        - the documented exit codes (see docs/cli.md).
//   setup_run / setup_status - register a subcommand on the CLI11 app; its
//                     callback stores the subcommand's exit code.
//   exit_code_for   - the exit code for a library error.
//   print_error     - "tierlock: <path>: <reason>" on stderr, one line.
//   describe_holders - "held exclusively by pid 1234 'make -j8' since 12:01:03".
//   command_line    - the process's arguments, as main() got them.
#ifndef TIERLOCK_TOOLS_TIERLOCK_CLI_H_
#define TIERLOCK_TOOLS_TIERLOCK_CLI_H_

#include <string>
#include <string_view>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "tierlock/holder.h"

namespace tierlock::cli {

// Exit codes (sysexits.h values where one fits). The conflict code is
// kConflict unless -E changes it.
enum ExitCode : int {
  kOk = 0,
  kOther = 1,              // any other failure
  kUsage = 64,             // EX_USAGE: bad command line
  kNoDirectory = 66,       // EX_NOINPUT: the directory does not exist / is not one
  kConflict = 75,          // EX_TEMPFAIL: the lock is held (--no-wait, --timeout)
  kPermission = 77,        // EX_NOPERM
  kCannotExecute = 126,    // the command exists but cannot be run
  kCommandNotFound = 127,
};

// Registers `tierlock run` / `tierlock status` on `app`. When the subcommand
// is parsed its callback runs it and stores the exit code in *exit_code.
void setup_run(CLI::App& app, int* exit_code);
void setup_status(CLI::App& app, int* exit_code);

// Returns the exit code for `status` (kNotFound -> kNoDirectory, ...).
int exit_code_for(const absl::Status& status);

// Prints "tierlock: <path>: <reason>" to stderr.
void print_error(absl::string_view path, absl::string_view reason);

// Describes who holds a lock: "held exclusively by pid 1234 'make -j8' since
// 12:01:03", "held shared by pid 1 'a', pid 2 'b'". Fields that are not
// known are left out. Empty holders: "no holder visible".
std::string describe_holders(const std::vector<Holder>& holders);

// Quotes `text` for a one-line message: control characters become '?'.
std::string printable(absl::string_view text);
// Returns the text of errno value `err` (thread-safe, unlike strerror).
std::string error_text(int err);

// The process's arguments as main() got them (set once by main, before the
// parse): `run --backend` passes them on to tierlock-lease.
void set_command_line(int argc, char** argv);
const std::vector<std::string>& command_line();

}  // namespace tierlock::cli

#endif  // TIERLOCK_TOOLS_TIERLOCK_CLI_H_

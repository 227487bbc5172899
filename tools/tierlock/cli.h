// tools/tierlock/cli.h
//
// Shared pieces of the `tierlock` command:
//   ExitCode        - the documented exit codes (see docs/cli.md).
//   setup_run / setup_status - register a subcommand on the CLI11 app; its
//                     callback stores the subcommand's exit code.
//   exit_code_for   - the exit code for a library error.
//   print_error     - "tierlock: <path>: <reason>" on stderr, one line.
//   print_lease_status - `status --backend`'s output (text or JSON).
//   describe_holders - "held exclusively by pid 1234 'make -j8' since
//   12:01:03". command_line    - the process's arguments, as main() got them.
//   valid_utf8 / hex_bytes - for exact JSON of names that are not UTF-8.
//   parse_timeout   - --timeout's value, huge ones saturated to "forever".
//   split_operands  - DIR and COMMAND of `run` (options end at the first
//   operand).
//   human_duration  - "313 ms", "2.35 s", "12.3 s", "2 min 5 s".
// Every human-readable message escapes untrusted text with
// tierlock::escape_text (tierlock/text.h).
#ifndef TIERLOCK_TOOLS_TIERLOCK_CLI_H_
#define TIERLOCK_TOOLS_TIERLOCK_CLI_H_

#include <chrono>
#include <optional>
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
  kOther = 1,          // any other failure
  kUsage = 64,         // EX_USAGE: bad command line
  kNoDirectory = 66,   // EX_NOINPUT: the directory does not exist / is not one
  kLeaseLost = 74,     // the lease was lost while the command ran (--backend);
                       // the command was stopped (docs/cli.md)
  kSelfDeadlock = 70,  // an ancestor tierlock holds this lock: waiting for
                       // it would wait forever (--reentrant runs under it)
  kConflict = 75,      // EX_TEMPFAIL: the lock is held (--no-wait, --timeout)
  kPermission = 77,    // EX_NOPERM
  kCannotExecute = 126,  // the command exists but cannot be run
  kCommandNotFound = 127,
};

// Registers `tierlock run` / `tierlock status` on `app`. When the subcommand
// is parsed its callback runs it and stores the exit code in *exit_code.
void setup_run(CLI::App& app, int* exit_code);
void setup_status(CLI::App& app, int* exit_code);
void setup_lock(CLI::App& app, int* exit_code);
void setup_version(CLI::App& app, int* exit_code);
// The one-line version (`tierlock --version`): "tierlock 0.1.0".
std::string version_line();

// Returns the exit code for `status` (kNotFound -> kNoDirectory, ...).
int exit_code_for(const absl::Status& status);

// Prints "tierlock: <path>: <reason>" to stderr, one line: `path` is raw
// (escaped here with escape_text); `reason` is safe_text'ed, so it may be
// built from already escaped pieces (the library's messages,
// describe_holders) without their backslashes doubling.
void print_error(absl::string_view path, absl::string_view reason);

// Describes who holds a lock: "held exclusively by pid 1234 'make -j8' since
// 12:01:03", "held shared by pid 1 'a', pid 2 'b'". Fields that are not
// known are left out. Empty holders: "no holder visible". Untrusted fields
// (the program) are escaped (escape_text).
std::string describe_holders(const std::vector<Holder>& holders);

// Prints a lease's holder for `tierlock status --backend` (status.cc, which
// has the JSON writer): `where` is the redacted backend URL, `backend` its
// name; `holder` nullopt means free. JSON: one object line.
void print_lease_status(const std::string& where, std::string_view backend,
                        const std::string& key,
                        const std::optional<Holder>& holder, bool json);

// Returns `text` escaped as escape_text does, except that backslashes are
// kept: text that is already escaped comes back unchanged, and raw control,
// bidi or invalid bytes in it still cannot reach a terminal.
std::string safe_text(std::string_view text);
// Returns true if `text` is valid UTF-8 (JSON strings must be).
bool valid_utf8(std::string_view text);
// Returns `text` as lowercase hexadecimal, two digits per byte.
std::string hex_bytes(std::string_view text);

// Parses a timeout in decimal seconds ("0.5", "30", "1e300", "inf") into
// *timeout: nullopt means no timeout, which is what any value of
// kForeverSeconds or more means (no wait that long is meant, and converting
// it to nanoseconds would overflow). False, with *timeout untouched, for
// text that is not a number, NaN, or negative.
inline constexpr double kForeverSeconds = 1e9;  // ~31.7 years
bool parse_timeout(const std::string& text,
                   std::optional<std::chrono::nanoseconds>* timeout);

// Splits the operands of `tierlock run` (what option parsing left, in
// order) into DIR (when `with_dir`) and COMMAND. Option parsing stops at the
// first operand, so `tokens` starts there (or after a `--` that ends the
// options: `after_marker`). One `--` right after DIR is dropped; everything
// else is the command's, verbatim. An unknown option before the first
// operand (`tokens[0]` starts with '-', no `--` before it) is an error:
// returns false with the message in *error.
bool split_operands(const std::vector<std::string>& tokens, bool after_marker,
                    bool with_dir, std::string* dir,
                    std::vector<std::string>* command, std::string* error);
// Returns `d` rounded for people: "0.4 ms", "313 ms", "2.35 s", "12.3 s",
// "2 min 5 s", "1 h 2 min". Never more than three significant digits.
std::string human_duration(std::chrono::nanoseconds d);

// Returns the text of errno value `err` (thread-safe, unlike strerror).
std::string error_text(int err);

// The process's arguments as main() got them (set once by main, before the
// parse): `run --backend` passes them on to tierlock-lease.
void set_command_line(int argc, char** argv);
const std::vector<std::string>& command_line();

}  // namespace tierlock::cli

#endif  // TIERLOCK_TOOLS_TIERLOCK_CLI_H_

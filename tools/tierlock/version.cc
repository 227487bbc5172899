// tierlock version: what this build of the command is and what it can do.
// The facts come from the build (compile definitions set in
// tools/tierlock/CMakeLists.txt) and from the library itself
// (tier_debug_checks), not from a guess at run time.
#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "cli.h"
#include "tierlock/tier.h"

#ifndef TIERLOCK_CLI_VERSION
#define TIERLOCK_CLI_VERSION "unknown"
#endif
#ifndef TIERLOCK_CLI_LEASE_BACKENDS
#define TIERLOCK_CLI_LEASE_BACKENDS ""
#endif
#ifndef TIERLOCK_CLI_BUILD_TYPE
#define TIERLOCK_CLI_BUILD_TYPE ""
#endif

namespace tierlock::cli {

std::string version_line() {
  return absl::StrCat("tierlock ", TIERLOCK_CLI_VERSION);
}

namespace {

int run_version() {
  const std::string backends = TIERLOCK_CLI_LEASE_BACKENDS;
  std::string out = absl::StrCat(
      version_line(), "\n", "lease backends: ",
      backends.empty() ? std::string("none (built without tierlock-lease)")
                       : absl::StrCat(backends,
                                      " (run --backend, through "
                                      "tierlock-lease)"),
      "\n", "debug checks: ",
      tier_debug_checks() ? "on (TIERLOCK_DEBUG_CHECKS: lock-order checks "
                            "abort by default)"
                          : "off",
      "\n", "build type: ",
      std::string(TIERLOCK_CLI_BUILD_TYPE).empty() ? "not set"
                                                   : TIERLOCK_CLI_BUILD_TYPE,
      "\n");
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  return kOk;
}

}  // namespace

void setup_version(CLI::App& app, int* exit_code) {
  CLI::App* version = app.add_subcommand(
      "version",
      "tierlock version\n\nShow the version and the build's options: the "
      "lease backends compiled in, whether debug checks are on, the build "
      "type.");
  version->callback([exit_code] { *exit_code = run_version(); });
}

}  // namespace tierlock::cli

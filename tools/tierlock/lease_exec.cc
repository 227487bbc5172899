// `tierlock run --backend` and `tierlock status --backend` in the `tierlock`
// command: execs `tierlock-lease`
// (the same command built with leases, next to this binary) with this
// process's own arguments. The lease backends' client libraries (libpq pulls
// in ~20 shared libraries) then cost only the runs that use them, not every
// start of the directory-lock command.
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "cli.h"
#include "lease_run.h"

namespace tierlock::cli {

namespace {

// Execs tierlock-lease with this process's arguments (it parses them again);
// returns only on failure, after the error line.
int exec_lease_command() {
  std::error_code ec;
  const std::filesystem::path self =
      std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) {
    print_error("/proc/self/exe",
                ec.message() + " (needed to find tierlock-lease)");
    return kOther;
  }
  const std::filesystem::path helper = self.parent_path() / "tierlock-lease";
  const std::vector<std::string>& args = command_line();
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  std::string name = helper.string();
  argv.push_back(name.data());
  for (std::size_t i = 1; i < args.size(); ++i) {
    argv.push_back(const_cast<char*>(args[i].c_str()));  // execv's signature
  }
  argv.push_back(nullptr);
  ::execv(helper.c_str(), argv.data());
  const int err = errno;
  print_error(
      helper.string(),
      std::error_code(err, std::generic_category()).message() +
          (err == ENOENT ? " (this build of tierlock has no lease support)"
                         : ""));
  return kOther;
}

}  // namespace

int run_lease(const LeaseRunOptions& /*options: parsed again there*/) {
  return exec_lease_command();
}

int run_lease_status(const LeaseStatusOptions& /*options: parsed again*/) {
  return exec_lease_command();
}

}  // namespace tierlock::cli

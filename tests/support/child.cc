#include "support/child.h"

#include <grp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <string_view>

namespace tierlock::testing {

ChildOutcome run_in_child(const std::function<std::string()>& body,
                          std::chrono::milliseconds timeout) {
  Process p = Process::fork([&body](LineChannel& ch) -> int {
    std::string msg;
    try {
      msg = body();
    } catch (const std::exception& e) {
      msg = std::string("exception in child: ") + e.what();
    } catch (...) {
      msg = "unknown exception in child";
    }
    // The message may span lines; the parent reads to EOF.
    std::string_view rest = msg;
    while (!rest.empty()) {
      std::size_t nl = rest.find('\n');
      ch.write_line(rest.substr(0, nl));
      if (nl == std::string_view::npos) break;
      rest.remove_prefix(nl + 1);
    }
    if (msg.empty()) return 0;
    if (msg.rfind(kChildSkip, 0) == 0) return 77;
    return 1;
  });
  ChildOutcome out;
  out.message = p.io().read_all(timeout);
  while (!out.message.empty() && out.message.back() == '\n') {
    out.message.pop_back();
  }
  out.status = p.wait(timeout);
  if (out.status.code != 0 && out.message.empty()) {
    out.message = "child failed: " + out.status.describe();
  }
  return out;
}

std::string drop_privileges(uid_t uid, gid_t gid) {
  if (::setgroups(0, nullptr) != 0) {
    return std::string(kChildSkip) + "setgroups: " + std::strerror(errno);
  }
  if (::setgid(gid) != 0) {
    return std::string(kChildSkip) + "setgid: " + std::strerror(errno);
  }
  if (::setuid(uid) != 0) {
    return std::string(kChildSkip) + "setuid: " + std::strerror(errno);
  }
  if (::geteuid() != uid || ::getegid() != gid) {
    return std::string(kChildSkip) + "could not switch user";
  }
  return "";
}

}  // namespace tierlock::testing

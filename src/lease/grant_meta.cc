// src/lease/grant_meta.cc
//
// this_grant_meta: what leases record about the granting process.
#include "lease/grant_meta.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace tierlock::internal {
namespace {

std::string read_host() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return {};
  return host;
}

// Read directly (not through a stream) so a huge command line costs at most
// one bounded read.
std::string read_program() {
  const int fd = ::open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  std::string out(kMaxGrantProgram + 1, '\0');
  std::size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  out.resize(got);
  while (!out.empty() && out.back() == '\0') out.pop_back();
  std::replace(out.begin(), out.end(), '\0', ' ');
  if (out.size() > kMaxGrantProgram) out.resize(kMaxGrantProgram);
  return out;
}

}  // namespace

GrantMeta this_grant_meta() {
  // The command line can change only by exec (a new process image).
  static const GrantMeta* const kFixed =
      new GrantMeta{read_host(), 0, read_program()};
  GrantMeta m = *kFixed;
  m.pid = ::getpid();
  return m;
}

}  // namespace tierlock::internal

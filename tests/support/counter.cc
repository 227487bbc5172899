#include "support/counter.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace tierlock::testing {
namespace {

std::string errno_text(const char* what, const std::filesystem::path& file) {
  return std::string(what) + " '" + file.string() +
         "': " + std::strerror(errno);
}

// Reads the whole descriptor from offset 0; -1 on error.
long long parse_fd(int fd) {
  char buf[64];
  std::size_t len = 0;
  while (len < sizeof buf - 1) {
    ssize_t n =
        ::pread(fd, buf + len, sizeof buf - 1 - len, static_cast<off_t>(len));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    len += static_cast<std::size_t>(n);
  }
  buf[len] = '\0';
  return len == 0 ? 0 : std::strtoll(buf, nullptr, 10);
}

}  // namespace

std::string increment_counter(const std::filesystem::path& file) {
  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return errno_text("open", file);
  long long value = parse_fd(fd);
  if (value < 0) {
    std::string err = errno_text("read", file);
    ::close(fd);
    return err;
  }
  std::string text = std::to_string(value + 1);
  ssize_t n = ::pwrite(fd, text.data(), text.size(), 0);
  if (n != static_cast<ssize_t>(text.size())) {
    std::string err = errno_text("write", file);
    ::close(fd);
    return err;
  }
  if (::ftruncate(fd, static_cast<off_t>(text.size())) != 0) {
    std::string err = errno_text("ftruncate", file);
    ::close(fd);
    return err;
  }
  ::close(fd);
  return "";
}

long long read_counter(const std::filesystem::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? 0 : -1;
  long long v = parse_fd(fd);
  ::close(fd);
  return v;
}

}  // namespace tierlock::testing

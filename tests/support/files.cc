#include "support/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace tierlock::testing {
namespace {

[[noreturn]] void fail(std::string_view what, const std::filesystem::path& p) {
  throw std::system_error(errno, std::generic_category(),
                          std::string(what) + " '" + p.string() + "'");
}

std::int64_t to_ns(const struct timespec& ts) {
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

std::string read_file(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail("open", path);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int saved = errno;
      ::close(fd);
      errno = saved;
      fail("read", path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

void write_file(const std::filesystem::path& path, std::string_view content,
                mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) fail("open", path);
  std::size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int saved = errno;
      ::close(fd);
      errno = saved;
      fail("write", path);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fchmod(fd, mode) != 0) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    fail("fchmod", path);
  }
  ::close(fd);
}

mode_t file_mode(const std::filesystem::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) fail("lstat", path);
  return st.st_mode & 07777;
}

std::uint64_t inode_of(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("stat", path);
  return st.st_ino;
}

FileSnapshot snapshot(const std::filesystem::path& path) {
  FileSnapshot s;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return s;
  s.exists = true;
  s.mode = st.st_mode & 07777;
  s.uid = st.st_uid;
  s.gid = st.st_gid;
  s.inode = st.st_ino;
  s.size = st.st_size;
  s.mtime_ns = to_ns(st.st_mtim);
  s.ctime_ns = to_ns(st.st_ctim);
  if (S_ISREG(st.st_mode)) {
    s.type = 'f';
    s.content = read_file(path);
  } else if (S_ISDIR(st.st_mode)) {
    s.type = 'd';
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(path, ec)) {
      s.entries.push_back(e.path().filename().string());
    }
    std::sort(s.entries.begin(), s.entries.end());
  } else if (S_ISLNK(st.st_mode)) {
    s.type = 'l';
    std::error_code ec;
    s.link_target = std::filesystem::read_symlink(path, ec).string();
  } else if (S_ISFIFO(st.st_mode)) {
    s.type = 'p';
  } else if (S_ISSOCK(st.st_mode)) {
    s.type = 's';
  } else if (S_ISCHR(st.st_mode)) {
    s.type = 'c';
  } else if (S_ISBLK(st.st_mode)) {
    s.type = 'b';
  }
  return s;
}

void PrintTo(const FileSnapshot& s, std::ostream* os) {
  if (!s.exists) {
    *os << "{missing}";
    return;
  }
  *os << "{type=" << s.type << " mode=0" << std::oct << s.mode << std::dec
      << " uid=" << s.uid << " gid=" << s.gid << " ino=" << s.inode
      << " size=" << s.size << " mtime_ns=" << s.mtime_ns
      << " ctime_ns=" << s.ctime_ns;
  if (s.type == 'f') *os << " content=\"" << s.content << "\"";
  if (s.type == 'l') *os << " target=\"" << s.link_target << "\"";
  if (s.type == 'd') {
    *os << " entries=[";
    for (const auto& e : s.entries) *os << e << " ";
    *os << "]";
  }
  *os << "}";
}

}  // namespace tierlock::testing

#include "support/temp_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <system_error>
#include <vector>

namespace tierlock::testing {

TempDir::TempDir() {
  const char* env = std::getenv("TMPDIR");
  std::string root = (env != nullptr && *env != '\0') ? env : "/tmp";
  std::string tmpl = root + "/tierlock-test.XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    throw std::system_error(errno, std::generic_category(),
                            "mkdtemp '" + tmpl + "'");
  }
  path_ = std::filesystem::canonical(std::filesystem::path(buf.data()));
}

TempDir::~TempDir() { remove_tree(path_); }

namespace {

void make_removable(const std::filesystem::path& dir) noexcept {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return;
  if ((st.st_mode & S_IRWXU) != S_IRWXU) {
    ::chmod(dir.c_str(), (st.st_mode & 07777) | S_IRWXU);
  }
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) make_removable(it->path());
  }
}

}  // namespace

void remove_tree(const std::filesystem::path& path) noexcept {
  if (path.empty()) return;
  make_removable(path);
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

}  // namespace tierlock::testing

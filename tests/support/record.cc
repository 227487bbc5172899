#include "support/record.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tierlock::testing {
namespace {

constexpr std::size_t kField = 20;               // digits per half
constexpr std::size_t kRecord = 2 * kField + 2;  // "<a> <b>\n"

absl::Status errno_error(const char* what, const std::filesystem::path& file) {
  return absl::ErrnoToStatus(errno,
                             absl::StrCat(what, " '", file.native(), "'"));
}

bool all_digits(std::string_view s) {
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return !s.empty();
}

absl::StatusOr<long long> parse(int fd, const std::filesystem::path& file) {
  char buf[kRecord + 1];
  std::size_t len = 0;
  while (len < sizeof buf) {
    ssize_t n =
        ::pread(fd, buf + len, sizeof buf - len, static_cast<off_t>(len));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("read", file);
    if (n == 0) break;
    len += static_cast<std::size_t>(n);
  }
  if (len == 0) return 0;
  const std::string_view rec(buf, len);
  if (len != kRecord || rec[kField] != ' ' || rec[kRecord - 1] != '\n' ||
      !all_digits(rec.substr(0, kField)) ||
      rec.substr(0, kField) != rec.substr(kField + 1, kField)) {
    return absl::DataLossError(absl::StrCat("torn record in '", file.native(),
                                            "': \"", std::string(rec), "\""));
  }
  return std::stoll(std::string(rec.substr(0, kField)));
}

}  // namespace

std::string increment_record(const std::filesystem::path& file) {
  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return errno_error("open", file).ToString();
  std::string err;
  absl::StatusOr<long long> value = parse(fd, file);
  if (!value.ok()) {
    err = value.status().ToString();
  } else {
    char half[kField + 2];
    std::snprintf(half, sizeof half, "%020lld", *value + 1);
    const std::string first = absl::StrCat(half, " ");
    const std::string second = absl::StrCat(half, "\n");
    // Two writes on purpose: a reader or writer that overlaps us can see the
    // first half new and the second old.
    if (::pwrite(fd, first.data(), first.size(), 0) !=
            static_cast<ssize_t>(first.size()) ||
        ::pwrite(fd, second.data(), second.size(),
                 static_cast<off_t>(kField + 1)) !=
            static_cast<ssize_t>(second.size())) {
      err = errno_error("write", file).ToString();
    }
  }
  ::close(fd);
  return err;
}

absl::StatusOr<long long> read_record(const std::filesystem::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return 0;
    return errno_error("open", file);
  }
  absl::StatusOr<long long> v = parse(fd, file);
  ::close(fd);
  return v;
}

}  // namespace tierlock::testing

// tests/support/files.h
//
// Small file utilities for tests:
//   read_file / write_file - whole-file I/O that reports errors as exceptions.
//   FileSnapshot           - what a file looks like (type, mode, owner,
//   content,
//                            link target, times), to prove tierlock left a
//                            foreign file alone.
#ifndef TIERLOCK_TESTS_SUPPORT_FILES_H_
#define TIERLOCK_TESTS_SUPPORT_FILES_H_

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace tierlock::testing {

// Returns the whole content of `path`. Throws std::system_error on failure.
std::string read_file(const std::filesystem::path& path);

// Creates or truncates `path` with `content` and sets its mode to `mode`
// (exactly, regardless of umask). Throws std::system_error on failure.
void write_file(const std::filesystem::path& path, std::string_view content,
                mode_t mode = 0644);

// Returns the permission bits (07777) of `path` without following a symlink.
// Throws std::system_error on failure.
mode_t file_mode(const std::filesystem::path& path);

// Returns the inode number of `path` (following symlinks). Throws on failure.
std::uint64_t inode_of(const std::filesystem::path& path);

// What a path looks like, without following a symlink at the last component.
struct FileSnapshot {
  bool exists = false;
  char type = '?';  // 'f' file, 'd' dir, 'l' symlink, 'p' FIFO, 's' socket, ...
  mode_t mode = 0;  // 07777 bits
  uid_t uid = 0;
  gid_t gid = 0;
  std::uint64_t inode = 0;
  std::int64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  std::string content;               // regular files only
  std::string link_target;           // symlinks only
  std::vector<std::string> entries;  // directories only, sorted

  friend bool operator==(const FileSnapshot&, const FileSnapshot&) = default;
};

// Takes a snapshot of `path` (lstat; reads content, link target or entries).
FileSnapshot snapshot(const std::filesystem::path& path);

// gtest printer.
void PrintTo(const FileSnapshot& s, std::ostream* os);

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_FILES_H_

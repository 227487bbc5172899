// tests/support/temp_dir.h
//
// A per-test temporary directory:
//   TempDir - mkdtemp under $TMPDIR (or /tmp); removed recursively on
//   destruction.
#ifndef TIERLOCK_TESTS_SUPPORT_TEMP_DIR_H_
#define TIERLOCK_TESTS_SUPPORT_TEMP_DIR_H_

#include <filesystem>

namespace tierlock::testing {

// Creates a fresh directory (mode 0700) under $TMPDIR or /tmp and removes it,
// with everything in it, when destroyed. Permissions that would stop the
// removal (a 0555 subdirectory, say) are restored first. Throws
// std::system_error if the directory cannot be created.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Returns the directory's canonical absolute path.
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Removes `path` recursively, making directories writable first. Never follows
// symlinks. Errors are ignored.
void remove_tree(const std::filesystem::path& path) noexcept;

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_TEMP_DIR_H_

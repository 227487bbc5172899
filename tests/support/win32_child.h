// tests/support/win32_child.h
//
// Windows test support (built only for Windows):
//   Win32Child     - another process (CreateProcessW) with pipes on its
//                    stdin and stdout, for cross-process tests.
//   Win32TempDir   - a fresh directory under %TEMP%, removed at the end.
//   helper_path    - tl_win32_helper.exe, beside the running test.
#ifndef TIERLOCK_TESTS_SUPPORT_WIN32_CHILD_H_
#define TIERLOCK_TESTS_SUPPORT_WIN32_CHILD_H_

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace tierlock::testing {

// Returns the path of tl_win32_helper.exe (in the test's own directory).
std::filesystem::path helper_path();

// A child process running tl_win32_helper.exe with `args`. Its stdin and
// stdout are pipes to us; stderr is ours. The destructor kills it if it is
// still running. Throws std::runtime_error if it cannot be started.
class Win32Child {
 public:
  explicit Win32Child(const std::vector<std::wstring>& args);
  ~Win32Child();
  Win32Child(const Win32Child&) = delete;
  Win32Child& operator=(const Win32Child&) = delete;

  // Blocks until the child prints a line; returns it without the newline,
  // or nullopt at EOF.
  std::optional<std::string> read_line();
  // Writes a line to the child's stdin.
  void write_line(const std::string& line);
  // Closes the child's stdin (it sees EOF).
  void close_stdin();
  // Waits up to `timeout` for the child to exit; its exit code, or nullopt.
  std::optional<unsigned long> wait(std::chrono::milliseconds timeout);
  // Kills the child (TerminateProcess) and waits for it to be gone.
  void kill();

 private:
  void* process_ = nullptr;
  void* stdin_ = nullptr;
  void* stdout_ = nullptr;
};

// Runs the helper with `args` to completion (stdin closed at once) and
// returns its exit code; -1 if it did not exit within 30 s.
long run_helper(const std::vector<std::wstring>& args);

// A fresh directory under %TEMP%, removed with everything in it.
class Win32TempDir {
 public:
  Win32TempDir();
  ~Win32TempDir();
  Win32TempDir(const Win32TempDir&) = delete;
  Win32TempDir& operator=(const Win32TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_WIN32_CHILD_H_

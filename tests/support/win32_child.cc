// Windows test support: child processes with pipes, temporary directories.
#include "support/win32_child.h"

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <atomic>
#include <stdexcept>
#include <system_error>

namespace tierlock::testing {
namespace {

std::wstring quote(const std::wstring& arg) {
  // Enough for the paths and words the tests pass (no embedded quotes).
  return L"\"" + arg + L"\"";
}

void close(void*& h) {
  if (h != nullptr && h != INVALID_HANDLE_VALUE) ::CloseHandle(h);
  h = nullptr;
}

}  // namespace

std::filesystem::path helper_path() {
  std::wstring self(32768, L'\0');
  const DWORD n = ::GetModuleFileNameW(nullptr, self.data(),
                                       static_cast<DWORD>(self.size()));
  self.resize(n);
  return std::filesystem::path(self).parent_path() / L"tl_win32_helper.exe";
}

Win32Child::Win32Child(const std::vector<std::wstring>& args) {
  SECURITY_ATTRIBUTES sa = {};
  sa.nLength = sizeof sa;
  sa.bInheritHandle = TRUE;
  HANDLE in_read = nullptr, in_write = nullptr, out_read = nullptr,
         out_write = nullptr;
  if (!::CreatePipe(&in_read, &in_write, &sa, 0) ||
      !::CreatePipe(&out_read, &out_write, &sa, 0)) {
    throw std::runtime_error("CreatePipe failed");
  }
  // Our ends stay with us.
  ::SetHandleInformation(in_write, HANDLE_FLAG_INHERIT, 0);
  ::SetHandleInformation(out_read, HANDLE_FLAG_INHERIT, 0);
  std::wstring cmd = quote(helper_path().native());
  for (const std::wstring& a : args) cmd += L" " + quote(a);
  STARTUPINFOW si = {};
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdInput = in_read;
  si.hStdOutput = out_write;
  si.hStdError = ::GetStdHandle(STD_ERROR_HANDLE);
  PROCESS_INFORMATION pi = {};
  const BOOL ok = ::CreateProcessW(nullptr, cmd.data(), nullptr, nullptr, TRUE,
                                   0, nullptr, nullptr, &si, &pi);
  const DWORD err = ::GetLastError();
  ::CloseHandle(in_read);
  ::CloseHandle(out_write);
  if (!ok) {
    ::CloseHandle(in_write);
    ::CloseHandle(out_read);
    throw std::system_error(static_cast<int>(err), std::system_category(),
                            "CreateProcessW");
  }
  ::CloseHandle(pi.hThread);
  process_ = pi.hProcess;
  stdin_ = in_write;
  stdout_ = out_read;
}

Win32Child::~Win32Child() {
  if (process_ != nullptr && !wait(std::chrono::milliseconds(0))) kill();
  close(stdin_);
  close(stdout_);
  close(process_);
}

std::optional<std::string> Win32Child::read_line() {
  std::string line;
  for (;;) {
    char c;
    DWORD n = 0;
    if (!::ReadFile(stdout_, &c, 1, &n, nullptr) || n == 0) {
      if (line.empty()) return std::nullopt;
      return line;
    }
    if (c == '\n') break;
    if (c != '\r') line.push_back(c);
  }
  return line;
}

void Win32Child::write_line(const std::string& line) {
  const std::string text = line + "\n";
  DWORD n = 0;
  ::WriteFile(stdin_, text.data(), static_cast<DWORD>(text.size()), &n,
              nullptr);
}

void Win32Child::close_stdin() { close(stdin_); }

std::optional<unsigned long> Win32Child::wait(
    std::chrono::milliseconds timeout) {
  if (::WaitForSingleObject(process_, static_cast<DWORD>(timeout.count())) !=
      WAIT_OBJECT_0) {
    return std::nullopt;
  }
  DWORD code = 0;
  ::GetExitCodeProcess(process_, &code);
  return code;
}

void Win32Child::kill() {
  ::TerminateProcess(process_, 137);
  ::WaitForSingleObject(process_, INFINITE);
}

long run_helper(const std::vector<std::wstring>& args) {
  Win32Child child(args);
  child.close_stdin();
  while (child.read_line().has_value()) {
  }
  std::optional<unsigned long> code = child.wait(std::chrono::seconds(30));
  return code.has_value() ? static_cast<long>(*code) : -1;
}

Win32TempDir::Win32TempDir() {
  static std::atomic<unsigned> counter{0};
  std::error_code ec;
  const std::filesystem::path base = std::filesystem::temp_directory_path(ec);
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::filesystem::path p =
        base / (L"tierlock-test-" + std::to_wstring(::GetCurrentProcessId()) +
                L"-" + std::to_wstring(counter.fetch_add(1)));
    if (::CreateDirectoryW(p.c_str(), nullptr)) {
      path_ = std::filesystem::canonical(p);
      return;
    }
  }
  throw std::runtime_error("cannot create a temporary directory");
}

Win32TempDir::~Win32TempDir() {
  std::error_code ec;
  // Long paths inside: remove through the "\\?\" form.
  std::filesystem::remove_all(L"\\\\?\\" + path_.native(), ec);
}

}  // namespace tierlock::testing

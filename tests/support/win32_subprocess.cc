// Windows implementation of tests/support/subprocess.h (CreateProcessW and
// anonymous pipes), so platform-neutral tests that start "another process"
// run on Windows too. Handles live in the header's int members: Windows
// handle values fit in 32 bits (they are sign-extended for 32/64-bit
// interoperability). Process::fork does not exist on Windows.
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "support/subprocess.h"

namespace tierlock::testing {
namespace {

HANDLE to_handle(int h) {
  return reinterpret_cast<HANDLE>(static_cast<std::intptr_t>(h));
}
int from_handle(HANDLE h) {
  return static_cast<int>(reinterpret_cast<std::intptr_t>(h));
}
void close_int_handle(int& h) {
  if (h != -1) ::CloseHandle(to_handle(h));
  h = -1;
}

std::wstring widen(const std::string& s) {
  if (s.empty()) return {};
  const int n = ::MultiByteToWideChar(CP_UTF8, 0, s.data(),
                                      static_cast<int>(s.size()), nullptr, 0);
  std::wstring w(static_cast<std::size_t>(n), L'\0');
  ::MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()),
                        w.data(), n);
  return w;
}

// A bare program name (no separator) is looked for beside the running test
// first: the test helpers are built there.
std::wstring resolve(const std::string& program) {
  if (program.find_first_of("/\\") == std::string::npos) {
    std::wstring self(32768, L'\0');
    self.resize(::GetModuleFileNameW(nullptr, self.data(),
                                     static_cast<DWORD>(self.size())));
    const std::filesystem::path beside =
        std::filesystem::path(self).parent_path() / widen(program);
    if (std::filesystem::exists(beside)) return beside.native();
  }
  return widen(program);
}

// Quotes one argument for CommandLineToArgvW / the CRT's parser.
std::wstring quote(const std::wstring& arg) {
  std::wstring out = L"\"";
  std::size_t backslashes = 0;
  for (wchar_t c : arg) {
    if (c == L'\\') {
      ++backslashes;
      continue;
    }
    if (c == L'"')
      out.append(backslashes * 2 + 1, L'\\');
    else
      out.append(backslashes, L'\\');
    backslashes = 0;
    out.push_back(c);
  }
  out.append(backslashes * 2, L'\\');
  out.push_back(L'"');
  return out;
}

}  // namespace

std::string ExitStatus::describe() const {
  if (timed_out) return "timed out (killed)";
  return "exit " + std::to_string(code);
}

LineChannel::LineChannel(LineChannel&& other) noexcept
    : rfd_(std::exchange(other.rfd_, -1)),
      wfd_(std::exchange(other.wfd_, -1)),
      buf_(std::move(other.buf_)),
      eof_(other.eof_) {}

LineChannel& LineChannel::operator=(LineChannel&& other) noexcept {
  if (this != &other) {
    close_read();
    close_write();
    rfd_ = std::exchange(other.rfd_, -1);
    wfd_ = std::exchange(other.wfd_, -1);
    buf_ = std::move(other.buf_);
    eof_ = other.eof_;
  }
  return *this;
}

LineChannel::~LineChannel() {
  close_read();
  close_write();
}

bool LineChannel::write_line(std::string_view line) {
  if (wfd_ == -1) return false;
  std::string text(line);
  text.push_back('\n');
  DWORD n = 0;
  return ::WriteFile(to_handle(wfd_), text.data(),
                     static_cast<DWORD>(text.size()), &n, nullptr) &&
         n == text.size();
}

bool LineChannel::fill(std::chrono::milliseconds timeout) {
  // Anonymous pipes have no overlapped reads: peek until data or EOF, in
  // 1 ms steps, at most `timeout`.
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    DWORD available = 0;
    if (!::PeekNamedPipe(to_handle(rfd_), nullptr, 0, nullptr, &available,
                         nullptr)) {
      eof_ = true;  // the writer is gone
      return true;
    }
    if (available > 0) {
      std::string chunk(available, '\0');
      DWORD n = 0;
      if (!::ReadFile(to_handle(rfd_), chunk.data(), available, &n, nullptr)) {
        eof_ = true;
        return true;
      }
      chunk.resize(n);
      buf_ += chunk;
      return true;
    }
    if (std::chrono::steady_clock::now() >= until) return false;
    ::Sleep(1);
  }
}

std::optional<std::string> LineChannel::read_line(
    std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const std::size_t nl = buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    if (eof_ || rfd_ == -1) return std::nullopt;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() < 0 || !fill(left)) return std::nullopt;
  }
}

bool LineChannel::readable_now() {
  if (buf_.find('\n') != std::string::npos || eof_) return true;
  fill(std::chrono::milliseconds(0));
  return buf_.find('\n') != std::string::npos || eof_;
}

std::string LineChannel::read_all(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!eof_ && rfd_ != -1) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() < 0 || !fill(left)) break;
  }
  return std::exchange(buf_, std::string());
}

void LineChannel::close_write() { close_int_handle(wfd_); }
void LineChannel::close_read() { close_int_handle(rfd_); }

Process Process::spawn(const std::vector<std::string>& argv) {
  SECURITY_ATTRIBUTES sa = {};
  sa.nLength = sizeof sa;
  sa.bInheritHandle = TRUE;
  HANDLE in_read = nullptr, in_write = nullptr, out_read = nullptr,
         out_write = nullptr;
  if (!::CreatePipe(&in_read, &in_write, &sa, 0) ||
      !::CreatePipe(&out_read, &out_write, &sa, 0)) {
    throw std::system_error(static_cast<int>(::GetLastError()),
                            std::system_category(), "CreatePipe");
  }
  ::SetHandleInformation(in_write, HANDLE_FLAG_INHERIT, 0);
  ::SetHandleInformation(out_read, HANDLE_FLAG_INHERIT, 0);
  const std::wstring program = resolve(argv.at(0));
  std::wstring cmd = quote(program);
  for (std::size_t i = 1; i < argv.size(); ++i) {
    cmd += L" " + quote(widen(argv[i]));
  }
  STARTUPINFOW si = {};
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdInput = in_read;
  si.hStdOutput = out_write;
  si.hStdError = ::GetStdHandle(STD_ERROR_HANDLE);
  PROCESS_INFORMATION pi = {};
  const BOOL ok =
      ::CreateProcessW(program.c_str(), cmd.data(), nullptr, nullptr, TRUE, 0,
                       nullptr, nullptr, &si, &pi);
  const DWORD err = ::GetLastError();
  ::CloseHandle(in_read);
  ::CloseHandle(out_write);
  if (!ok) {
    ::CloseHandle(in_write);
    ::CloseHandle(out_read);
    throw std::system_error(static_cast<int>(err), std::system_category(),
                            "CreateProcessW " + argv.at(0));
  }
  ::CloseHandle(pi.hThread);
  Process p;
  p.pid_ = static_cast<pid_t>(pi.dwProcessId);
  p.pidfd_ = from_handle(pi.hProcess);
  p.io_ = LineChannel(from_handle(out_read), from_handle(in_write));
  return p;
}

Process Process::fork(const std::function<int(LineChannel&)>&) {
  throw std::logic_error("Process::fork: there is no fork() on Windows");
}

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      status_(std::move(other.status_)),
      io_(std::move(other.io_)) {}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    kill_and_reap();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::exchange(other.pidfd_, -1);
    status_ = std::move(other.status_);
    io_ = std::move(other.io_);
  }
  return *this;
}

Process::~Process() { kill_and_reap(); }

bool Process::exited_now() {
  if (status_.has_value()) return true;
  return pidfd_ != -1 &&
         ::WaitForSingleObject(to_handle(pidfd_), 0) == WAIT_OBJECT_0;
}

ExitStatus Process::wait(std::chrono::milliseconds timeout) {
  if (status_.has_value()) return *status_;
  ExitStatus st;
  if (pidfd_ == -1) return st;
  if (::WaitForSingleObject(to_handle(pidfd_),
                            static_cast<DWORD>(timeout.count())) !=
      WAIT_OBJECT_0) {
    ::TerminateProcess(to_handle(pidfd_), 137);
    ::WaitForSingleObject(to_handle(pidfd_), INFINITE);
    st.timed_out = true;
    st.code = -1;
  } else {
    DWORD code = 0;
    ::GetExitCodeProcess(to_handle(pidfd_), &code);
    st.code = static_cast<int>(code);
  }
  close_int_handle(pidfd_);
  status_ = st;
  return st;
}

void Process::kill_and_reap() noexcept {
  if (pidfd_ == -1) return;
  ::TerminateProcess(to_handle(pidfd_), 137);
  ::WaitForSingleObject(to_handle(pidfd_), INFINITE);
  close_int_handle(pidfd_);
}

RunResult run(const std::vector<std::string>& argv,
              std::chrono::milliseconds timeout) {
  Process p = Process::spawn(argv);
  p.close_stdin();
  RunResult r;
  r.out = p.io().read_all(timeout);
  r.status = p.wait(timeout);
  return r;
}

std::string find_program(const std::string& name) {
  wchar_t found[MAX_PATH];
  if (::SearchPathW(nullptr, widen(name).c_str(), L".exe", MAX_PATH, found,
                    nullptr) == 0) {
    return {};
  }
  return std::filesystem::path(found).string();
}

}  // namespace tierlock::testing

// Windows: interruptible kernel waits (polling LockFileEx, woken by an
// event), process and thread ids, the clock, and who holds a lock (nobody
// can tell: Windows has no lock table that names holders).
#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "platform/platform.h"
#include "platform/win32_util.h"

namespace tierlock::internal::platform {

absl::Status set_interrupt_signal(int signo) {
  if (signo == 0) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrCat(
      "interrupt signal ", signo,
      ": Windows has no signals; waits poll and are ended by an event"));
}

int interrupt_signal() { return 0; }

InterruptibleWait::InterruptibleWait(std::optional<Clock::time_point> deadline)
    : deadline_(deadline),
      // Manual-reset: once interrupted, every later wait returns at once.
      // Null if the system is out of handles: then the wait sleeps its
      // backoff and sees the flag after it (<= 1 ms later).
      event_(::CreateEventW(nullptr, TRUE, FALSE, nullptr)) {}

InterruptibleWait::~InterruptibleWait() {
  if (event_ != nullptr) ::CloseHandle(event_);
}

bool InterruptibleWait::deadline_passed() const {
  return deadline_.has_value() && Clock::now() >= *deadline_;
}

void InterruptibleWait::interrupt() {
  interrupted_.store(true, std::memory_order_release);
  if (event_ != nullptr) ::SetEvent(event_);
}

absl::StatusOr<InterruptibleWait::Result> InterruptibleWait::lock(
    NativeHandle handle, Mode mode, const std::filesystem::path& lock_file) {
  const DWORD flags = mode == Mode::kExclusive ? LOCKFILE_EXCLUSIVE_LOCK : 0;
  // Waits are in whole milliseconds (the Win32 timeout unit): the first
  // retry yields the processor, later ones sleep 1 ms on the event.
  bool first = true;
  for (;;) {
    if (interrupted_.load(std::memory_order_acquire)) {
      return Result::kInterrupted;
    }
    if (deadline_passed()) return Result::kDeadline;
    if (win32::convert_lock(handle, flags)) return Result::kLocked;
    const DWORD err = ::GetLastError();
    if (err != ERROR_LOCK_VIOLATION && err != ERROR_IO_PENDING) {
      return win32::win32_status(err, "LockFileEx", lock_file);
    }
    if (first) {
      first = false;
      ::SwitchToThread();
      continue;
    }
    DWORD ms = 1;
    if (deadline_) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(
          *deadline_ - Clock::now());
      ms = static_cast<DWORD>(std::clamp<std::int64_t>(left.count(), 0, 1));
    }
    if (event_ != nullptr) {
      ::WaitForSingleObject(event_, ms);
    } else {
      ::Sleep(ms);
    }
  }
}

std::int64_t current_pid() {
  return static_cast<std::int64_t>(::GetCurrentProcessId());
}
std::int64_t current_tid() {
  return static_cast<std::int64_t>(::GetCurrentThreadId());
}

std::int64_t coarse_realtime_ns() {
  FILETIME ft;
  ::GetSystemTimeAsFileTime(&ft);
  const std::uint64_t ticks =
      (std::uint64_t{ft.dwHighDateTime} << 32) | ft.dwLowDateTime;
  // 100 ns ticks since 1601-01-01; the Unix epoch is 11644473600 s later.
  constexpr std::uint64_t kEpochDelta = 116444736000000000ULL;
  return static_cast<std::int64_t>(ticks - kEpochDelta) * 100;
}

absl::StatusOr<std::vector<KernelHolder>> read_kernel_holders(const FileId&) {
  return absl::UnavailableError(
      "lock holders: Windows has no lock table that names the processes "
      "holding a LockFileEx lock, so who holds it cannot be known");
}

}  // namespace tierlock::internal::platform

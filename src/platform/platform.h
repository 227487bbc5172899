// src/platform/platform.h
//
// The platform seam: everything tierlock asks of the operating system about
// lock files. Nothing above this header includes <sys/file.h> or <windows.h>.
//   FileId          - identity of a lock file (device, inode; on Windows volume
//                     serial number, file index).
//   NativeHandle    - the descriptor type (int on POSIX, HANDLE on Windows).
//   path_text       - a path as UTF-8 text for messages and keys (POSIX: the
//                     native string itself, no copy).
//   OpenedLockFile  - a safely opened lock file: descriptor, identity,
//   canonical paths. open_lock_file  - safe open (no symlinks, regular files
//   only, never truncates). stat_lock_file  - the cheap identity probe used to
//   find an existing entry. lock / try_lock / unlock / close_handle - the
//   kernel lock itself.
#ifndef TIERLOCK_SRC_PLATFORM_PLATFORM_H_
#define TIERLOCK_SRC_PLATFORM_PLATFORM_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tierlock/mode.h"

namespace tierlock::internal::platform {

#if defined(_WIN32)
// A Win32 HANDLE (void*); <windows.h> stays out of this header.
using NativeHandle = void*;
// INVALID_HANDLE_VALUE.
inline NativeHandle const kInvalidHandle =
    reinterpret_cast<NativeHandle>(static_cast<std::intptr_t>(-1));
#else
using NativeHandle = int;
inline constexpr NativeHandle kInvalidHandle = -1;
#endif

// Returns `p` as text for messages and map keys: on POSIX the native byte
// string itself (a reference, no copy); on Windows, where paths are UTF-16,
// its UTF-8 spelling.
#if defined(_WIN32)
inline std::string path_text(const std::filesystem::path& p) {
  const std::u8string u8 = p.u8string();
  return std::string(u8.begin(), u8.end());
}
#else
inline const std::string& path_text(const std::filesystem::path& p) {
  return p.native();
}
#endif

struct FileId {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  friend bool operator==(const FileId&, const FileId&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const FileId& id) {
    return H::combine(std::move(h), id.dev, id.ino);
  }
};

struct OpenedLockFile {
  NativeHandle handle = kInvalidHandle;
  FileId id;
  std::filesystem::path directory;  // canonical
  std::filesystem::path lock_file;  // directory / name
  FileId directory_id;              // the directory opened (POSIX only)
  bool read_only = false;           // opened O_RDONLY (read-only dir/file/fs)
  // Why a user other than the caller and root could delete or replace the
  // lock file (see describe_unsafe); empty if nobody else can. Computed from
  // the directory's and the file's owner and mode at open.
  std::string unsafe_reason;
};

// The owner and mode of a file or directory, for describe_unsafe.
struct Ownership {
  std::uint32_t uid = 0;
  std::uint32_t mode = 0;  // permission bits, S_ISVTX included
};

// Returns why a user other than `caller` and root could unlink or replace the
// lock file `lock_file` (owned as `file`) in the directory `dir` (owned as
// `directory`), or an empty string if nobody else can. Unsafe when:
//   - the directory is writable by its group or by others without the
//     sticky bit (any of them may unlink or rename over any entry);
//   - the directory is owned by a user other than the caller and root (its
//     owner may do what it likes with its entries);
//   - the directory is sticky and writable by group or others (like /tmp),
//     and the lock file is owned by a user other than the caller and root
//     (that user may unlink it at any time).
// The reason names the paths, the owners' uids and the directory's mode.
// Platform-neutral; only POSIX calls it (Windows has ACLs, see
// win32_platform.cc).
std::string describe_unsafe(const std::filesystem::path& dir,
                            Ownership directory,
                            const std::filesystem::path& lock_file,
                            Ownership file, std::uint32_t caller);

// Returns describe_unsafe for the existing lock file `lock_file` in the
// directory `dir` (two lstats: the path, not a descriptor, so a report about
// a file nobody opened creates and opens nothing); empty if either cannot be
// looked at. Windows: always empty (ACLs are not evaluated, see
// win32_platform.cc).
std::string unsafe_reason_of(const std::filesystem::path& dir,
                             const std::filesystem::path& lock_file);

// What the lock file's path names now, against the file that was opened.
enum class PathCheck {
  // The path names the file; or the file still exists (link count > 0) in a
  // directory that was itself moved away from its path, which is where the
  // lock is (docs/design.md, "The path after open").
  kNamesIt,
  // The directory at the path is the one opened, and the name in it names
  // another file or nothing: the lock file was deleted or replaced.
  kReplaced,
  // The file was deleted, and its directory is no longer at the path.
  kGone,
};
// Checks the lock file `lock_file` opened as `handle` (identity `id`, in the
// directory `directory_id`). The common case is one lstat of the path (not
// following a symlink at the last component): it names the file, which
// implies a link count above zero. Only otherwise: an lstat of the directory
// path and an fstat of `handle`. Errors other than ENOENT/ENOTDIR are
// returned. Windows: one CreateFileW of the name (attributes only): kNamesIt
// or kReplaced, see win32_platform.cc.
absl::StatusOr<PathCheck> check_path(NativeHandle handle,
                                     const std::filesystem::path& lock_file,
                                     const FileId& id,
                                     const FileId& directory_id);

// Checks that `name` is a plain file name: not empty, not "." or "..", no '/'
// and no NUL; on Windows also no '\' or ':', no trailing '.' or ' ', and not
// a reserved device name (CON, NUL, COM1, ...). kInvalidArgument naming `dir`
// and the name otherwise.
absl::Status validate_lock_file_name(const std::filesystem::path& dir,
                                     std::string_view name);

// Returns the identity of the existing lock file `dir`/`name` without opening
// it and without following a symlink at the last component (one path walk).
// kNotFound if it (or the directory) does not exist; kInvalidArgument if it is
// not a regular file or `dir` is not a directory. Used only as a hint to find
// an existing entry; open_lock_file is the authority.
absl::StatusOr<FileId> stat_lock_file(const std::filesystem::path& dir,
                                      std::string_view name);

// Opens (creating if missing, mode 0666 & ~umask) the lock file `dir`/`name`:
// close-on-exec, never following a symlink, never blocking (a FIFO cannot
// hang us), never truncating; then insists on a regular file. Falls back to
// opening an existing file read-only where the directory, file or filesystem
// is read-only. With `create_directory`, creates `dir` (one level) if missing.
// An existing directory in which the file cannot be created (ENOENT from
// O_CREAT, as in /proc) is kUnimplemented, not kNotFound; a directory removed
// meanwhile is kNotFound.
absl::StatusOr<OpenedLockFile> open_lock_file(const std::filesystem::path& dir,
                                              std::string_view name,
                                              bool create_directory);

// Opens a new, independent descriptor (a new open file description) onto the
// same file as `handle`: used after fork() so the child's lock is its own.
// (Windows has no fork(); there it is ReOpenFile, used by nothing but tests.)
absl::StatusOr<NativeHandle> reopen(NativeHandle handle,
                                    const std::filesystem::path& lock_file);

// Returns the canonical absolute path of `dir` (resolving symlinks).
absl::StatusOr<std::filesystem::path> canonical_directory(
    const std::filesystem::path& dir);

// Takes the kernel lock, blocking until granted. EINTR is retried.
absl::Status lock(NativeHandle handle, Mode mode,
                  const std::filesystem::path& lock_file);
// Takes the kernel lock if it is free: true if taken, false if another holder
// (another open file description) has it. EINTR is retried.
absl::StatusOr<bool> try_lock(NativeHandle handle, Mode mode,
                              const std::filesystem::path& lock_file);
// Releases the kernel lock held through `handle`.
absl::Status unlock(NativeHandle handle,
                    const std::filesystem::path& lock_file);
// Closes the descriptor (never retried on EINTR: Linux has closed it already).
void close_handle(NativeHandle handle);

// A process holding the kernel lock on a file, as the kernel reports it.
struct KernelHolder {
  std::int64_t pid = 0;
  Mode mode = Mode::kExclusive;
};

// Returns the calling process's id.
std::int64_t current_pid();
// Returns the calling thread's id as the OS shows it (gettid on Linux,
// GetCurrentThreadId on Windows).
std::int64_t current_tid();
// Returns the wall-clock time in ns since the Unix epoch, cheaply (the last
// tick: CLOCK_REALTIME_COARSE through the vDSO on Linux,
// GetSystemTimeAsFileTime on Windows). For holder records' "since".
std::int64_t coarse_realtime_ns();

// Returns the processes holding a kernel lock on `id` (from /proc/locks on
// Linux), or kUnavailable when the lock table cannot be read (so "nobody"
// and "unknown" differ; always kUnavailable on Windows, which has no lock
// table that names holders). Waiters are not holders.
absl::StatusOr<std::vector<KernelHolder>> read_kernel_holders(const FileId& id);

// Holder records (src/holders/holder_record.h; docs/design.md "Holder
// records"). Records of a lock file live in the sidecar directory "<lock
// file>.holders".

// What /proc says about a process; fields empty when not readable. All
// fields are read through one open /proc/PID directory, so they describe one
// process even if it exits and its pid is reused meanwhile.
struct ProcessInfo {
  std::optional<std::uint64_t> start_time;  // /proc/PID/stat field 22
  // /proc/PID/cmdline: the exact bytes, arguments joined by spaces (the NUL
  // separators become spaces; nothing else is changed: escape to print).
  std::string program;
  // The filesystem uid (/proc/PID/status "Uid:", 4th field): the owner of
  // the files the process creates, so of its holder records.
  std::optional<std::uint32_t> fs_uid;
};
ProcessInfo process_info(std::int64_t pid);

// Whether a process has a file open through one of its descriptors.
enum class OpenState {
  kOpen,     // a descriptor of the process refers to the file
  kNotOpen,  // the process's descriptors were all looked at; none does
  kGone,     // no such process
  kUnknown,  // cannot tell (another user's process, /proc unreadable)
};
// Looks through /proc/PID/fd for a descriptor on `id`. Never blocks on the
// files' filesystems (statx with AT_STATX_DONT_SYNC: a hung network mount
// is not asked). Always kUnknown on Windows.
OpenState process_has_open(std::int64_t pid, const FileId& id);

// A process that holds a flock on `id` through an open file description it
// shares with the process that took the lock (the taker), found in
// /proc/PID/fdinfo.
struct DescriptionHolder {
  std::int64_t pid = 0;
  // The pid the lock line names (the taker, as /proc/locks shows it: 0 if
  // the kernel cannot show it in this pid namespace).
  std::int64_t kernel_pid = 0;
  Mode mode = Mode::kExclusive;
  std::uint64_t start_time = 0;  // for ordering: parents before children
};
struct DescriptionScan {
  // Oldest process first.
  std::vector<DescriptionHolder> holders;
  // Processes whose descriptors this user may not look at (another user's,
  // unless root): a holder among them is not found.
  int unreadable = 0;
  // The scan stopped at its bound (kMaxScanProcesses or kScanBudget).
  bool truncated = false;
};
// Scans every process's descriptors (/proc/[0-9]*/fd, statx without sync,
// then /proc/PID/fdinfo/N of a match for its "lock:" lines) for flocks on
// `id`. Bounded: at most 65536 processes and about 200 ms; it costs one
// statx per descriptor on the machine (docs/design.md, "Holder records").
// Empty on Windows.
DescriptionScan find_description_holders(const FileId& id);

// The calling process as its records name it. Cached (per pid, so a fork()ed
// child gets its own); nullopt when /proc cannot tell the start time.
struct SelfIdentity {
  std::int64_t pid = 0;
  std::uint64_t start_time = 0;
  std::string boot_id;  // /proc/sys/kernel/random/boot_id; empty if unknown
  std::string host;
  std::string program;
};
std::optional<SelfIdentity> self_identity();
// Returns this boot's id (cached); empty if unknown.
const std::string& boot_id();

// A record created and mapped by create_record: `size` bytes, shared with the
// file (stores are seen by readers), the descriptor already closed.
struct MappedRecord {
  char* base = nullptr;
  std::size_t size = 0;
  FileId id;  // the record file's identity, checked before removing it
};
// Creates the record file `name` (never an existing one: O_EXCL, no symlink
// followed; mode 0644 at most, owned by us) in the records directory of
// `lock_file`, creating that directory if missing (0755, plus group/other
// write and the sticky bit where the lock's directory has them, whatever the
// umask), writes `bytes` and maps it. Writes nothing (kPermissionDenied) into
// a records directory that is a symlink, not a directory, or owned by
// another user than us and root without the sticky bit (there its owner or
// others could replace our record at will). Removes, at most once a second per
// process, records in that directory left by dead processes of this boot.
// kPermissionDenied for a read-only directory or filesystem (then there is
// simply no record).
absl::StatusOr<MappedRecord> create_record(
    const std::filesystem::path& lock_file, std::string_view name,
    std::string_view bytes);
// Unmaps a record (only: after fork() the file belongs to the parent).
void unmap_record(const MappedRecord& record) noexcept;
// Unmaps and deletes a record, if the file named `name` is still the one
// created (same identity, owned by us). The records directory stays. Errors
// are ignored: a leftover record is harmless (readers
// trust only the kernel) and is cleaned up later.
void remove_record(const std::filesystem::path& lock_file,
                   std::string_view name, const MappedRecord& record) noexcept;
// A record file's bytes and who could have written them.
struct RecordFile {
  std::string bytes;
  std::uint32_t owner_uid = 0;  // st_uid of the file read
  std::uint32_t mode = 0;       // st_mode permission bits (incl. the ACL mask)
};
// Reads the record file `name` of `lock_file`: a regular file of exactly
// `size` bytes, read twice until two reads agree (a writer may be updating
// it). nullopt if missing, not a regular file, of another size, or unreadable.
// Whether to believe it is the caller's decision (owner_uid, mode).
std::optional<RecordFile> read_record(const std::filesystem::path& lock_file,
                                      std::string_view name, std::size_t size);

// Looks at `dir`/`name` without opening or creating it: kNotFound if `dir`
// does not exist, kInvalidArgument if it is not a directory or the lock file
// is not a regular file; nullopt if the lock file does not exist. Returns the
// canonical directory too.
struct ProbedLockFile {
  std::filesystem::path directory;  // canonical
  std::optional<FileId> id;         // nullopt: no lock file
};
absl::StatusOr<ProbedLockFile> probe_lock_file(const std::filesystem::path& dir,
                                               std::string_view name);

// Sets the signal used to interrupt a thread blocked in the kernel lock call
// (see tierlock/config.h); 0 disables signals (waits then poll). Windows has
// no signals: 0 is accepted, any other value is kUnimplemented, and
// interrupt_signal() is 0 (waits always poll, see InterruptibleWait).
absl::Status set_interrupt_signal(int signo);
int interrupt_signal();

// InterruptibleWait
//
// One blocking kernel lock call that another thread can end early, and that
// ends by itself at a deadline. Constructed, used and destroyed by the waiting
// thread; interrupt() may be called from any thread while the owner is inside
// lock() (the caller serialises that with the owner's lifetime).
//
// On POSIX interrupt() sends the interrupt signal (installed without
// SA_RESTART, so flock returns EINTR) straight to the waiting thread, then
// arms the thread's timer (timer_create, SIGEV_THREAD_ID, one per thread,
// reused) to repeat it every 200 us until the wait is over, which closes the
// race where a signal lands just before the thread enters flock. A deadline
// is registered with one process-wide deadline thread, which calls
// interrupt() when it passes (no timer syscalls on the way out of a wait
// that was granted in time). The destructor disarms it and restores the signal
// mask; it must run on the waiting thread after interrupt() can no longer be
// called. Without a usable signal it polls LOCK_NB with a backoff capped at
// 1 ms.
//
// On Windows the wait polls LockFileEx(LOCKFILE_FAIL_IMMEDIATELY) with the
// same backoff (50 us doubling to 1 ms), sleeping on an event that
// interrupt() sets, so an interrupt ends it at once and each try either
// takes the lock or leaves nothing held (there is no grant to race with).
// Why not an overlapped LockFileEx + CancelIoEx: docs/design.md, "Windows".
class InterruptibleWait {
 public:
  using Clock = std::chrono::steady_clock;
  explicit InterruptibleWait(std::optional<Clock::time_point> deadline);
  ~InterruptibleWait();
  InterruptibleWait(const InterruptibleWait&) = delete;
  InterruptibleWait& operator=(const InterruptibleWait&) = delete;

  enum class Result { kLocked, kInterrupted, kDeadline };
  // Blocks until the kernel lock is taken, interrupt() is called, or the
  // deadline passes. Errors other than EINTR are returned as a Status.
  absl::StatusOr<Result> lock(NativeHandle handle, Mode mode,
                              const std::filesystem::path& lock_file);
  // Makes lock() return kInterrupted promptly (within the 200 us re-send
  // period after it enters the kernel).
  void interrupt();

 private:
  bool deadline_passed() const;
  const std::optional<Clock::time_point> deadline_;
  std::atomic<bool> interrupted_{false};
#if defined(_WIN32)
  void* event_ = nullptr;  // manual-reset event set by interrupt()
#else
  int signo_ = 0;          // 0: polling
  void* timer_ = nullptr;  // timer_t* of this thread's timer; null: polling
  long tid_ = 0;           // the waiting thread, for the first signal
  // Set by interrupt() (from another thread, or the deadline thread) while
  // the owner waits: disarm on destruction.
  std::atomic<bool> armed_{false};
  std::uint64_t deadline_id_ = 0;  // registered with the deadline thread
  bool restore_mask_ = false;      // the signal was blocked before the wait
  std::mutex poll_mu_;             // polling mode only
  std::condition_variable poll_cv_;
#endif
};

// Registers process-wide fork handlers (pthread_atfork on POSIX). Each is a
// plain function; `child` runs in the child while it is single-threaded.
// Windows has no fork(): nothing is registered and the handlers never run.
void register_fork_handlers(void (*prepare)(), void (*parent)(),
                            void (*child)());

// Returns a Status for errno-style error `err` from `op` on `path`, with the
// message "op 'path': reason" and tierlock's code for that errno (see
// dir_lock.h): ENOENT -> kNotFound, EACCES/EPERM/EROFS -> kPermissionDenied,
// EMFILE/ENFILE/ENOMEM -> kResourceExhausted, ENOLCK -> kUnavailable,
// EOPNOTSUPP -> kUnimplemented, wrong kind of file -> kInvalidArgument.
absl::Status errno_status(int err, std::string_view op,
                          const std::filesystem::path& path);

}  // namespace tierlock::internal::platform

#endif  // TIERLOCK_SRC_PLATFORM_PLATFORM_H_

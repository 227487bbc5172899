// tierlock/holder.h
//
// Defines who holds a directory lock, as another process can see it:
//   Holder       - one process holding the lock: pid, mode, and what else is
//   known. LockState    - a lock file and its holders (none: free).
//   inspect_lock - looks at a directory's lock without creating or taking
//   anything.
// DirLock::holders() (dir_lock.h) answers the same for an open handle.
#ifndef TIERLOCK_HOLDER_H_
#define TIERLOCK_HOLDER_H_

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tierlock/mode.h"

namespace tierlock {

// Holder
//
// One process that holds a lock. The kernel's lock table is the truth: a
// Holder is reported only for a process the kernel says holds the lock now
// (or, when the process that took it has exited, for a process that still
// holds its open file description: see `inherited`). tierlock processes also
// leave a holder record (see docs/design.md, "Holder records") that names
// them; it is used only if trustworthy: a regular file owned by the uid the
// process runs as, writable by no one else, naming that process (pid, start
// time, boot) and this lock file. Other records are ignored, so another user
// cannot make a Holder say anything but what /proc says. Other flock users
// (flock(1), Python's filelock) are named from /proc. A field that is not
// known is empty, never guessed.
//
// Text fields (host, program, tier_name) are the exact bytes the process or
// its record gave, which anyone can choose (control characters, bidi
// overrides, invalid UTF-8 included): pass them through escape_text
// (tierlock/text.h) before printing them; JSON can carry them exactly.
struct Holder {
  // The holder's process id. Empty when it cannot be known: the kernel shows
  // pid 0 (the holder lives in another pid namespace, or, seen from inside a
  // pid namespace on older kernels, the process that took the lock has
  // exited; current kernels omit such locks from /proc/locks, and then no
  // Holder is reported at all) and no
  // process holding the lock's open file description could be found; or
  // `taker_pid` has exited and the process that inherited its description is
  // not visible to this user (another user's process: only root may look at
  // their descriptors).
  std::optional<std::int64_t> pid;
  Mode mode = Mode::kExclusive;  // from the kernel
  // When the process started, in clock ticks after boot (/proc/PID/stat field
  // 22); what tells a reused pid apart.
  std::optional<std::uint64_t> start_time;
  // The host name, from the holder's record. Exact bytes.
  std::optional<std::string> host;
  // The command line, arguments joined by spaces, from the record or
  // /proc/PID/cmdline. Exact bytes (only the NUL separators become spaces).
  std::optional<std::string> program;
  // When the holder's process took the kernel lock, from its record.
  std::optional<std::chrono::system_clock::time_point> since;
  // The tier of the acquire that took the kernel lock, from its record.
  // tier_name: exact bytes.
  std::optional<int> tier_level;
  std::optional<std::string> tier_name;
  // True if a trustworthy tierlock holder record was found and used.
  bool recorded = false;
  // True if this process did not take the lock itself but holds the open
  // file description of the process that did, which has since exited (or
  // closed its descriptor): as the command of `tierlock run` or flock(1)
  // does after its wrapper is SIGKILLed. Found by scanning
  // /proc/PID/fdinfo (bounded; see docs/design.md). Several processes may
  // share one description (a shell and its child): each is a Holder, the
  // oldest first.
  bool inherited = false;
  // The pid the kernel names for the lock when that process no longer holds
  // it (set with `inherited`, or with an empty `pid`): the process that took
  // it. Empty if the kernel shows no pid for it (0: another pid namespace).
  std::optional<std::int64_t> taker_pid;
  // Leases only (a lease's holder as the service reports it; never set for a
  // directory lock): the holder's owner id (LeaseRequest::owner_id) and the
  // grant's fencing token, where the backend stores them.
  std::optional<std::string> owner_id;
  std::optional<std::uint64_t> token;
};

// LockState
//
// What inspect_lock found.
struct LockState {
  // `dir`/lock_file_name, with `dir` canonicalised.
  std::filesystem::path lock_file;
  // False if the lock file does not exist (then nobody holds it).
  bool lock_file_exists = false;
  // Who holds it now; empty: free. Exclusive holders come first (one open
  // file description at most, which several processes may share).
  std::vector<Holder> holders;
  // Why a user other than the caller and root could delete or replace the
  // lock file (DirLock::unsafe_reason); empty if nobody else can.
  std::string unsafe_reason;
};

// Looks at the lock of `dir` (the lock file `lock_file_name` in it) and
// returns who holds it. Creates nothing, takes and breaks nothing: the lock
// file is only looked at (never opened), the kernel's lock table is read
// (/proc/locks, which can take milliseconds), and holder records are read
// defensively (a corrupt or hostile record is ignored). Blocks only on those
// reads. Thread-safe.
//
// Errors: kNotFound (no such directory), kInvalidArgument (not a directory,
// a bad lock file name, or the lock file is not a regular file),
// kPermissionDenied, kUnavailable (the kernel's lock table cannot be read:
// whether the lock is held is unknown).
absl::StatusOr<LockState> inspect_lock(
    const std::filesystem::path& dir,
    std::string_view lock_file_name = ".lock");

}  // namespace tierlock

#endif  // TIERLOCK_HOLDER_H_

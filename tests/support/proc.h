// tests/support/proc.h
//
// Readers of /proc, one copy for the tests (support/proc_locks.h, threads.h,
// subprocess.cc) and the benchmarks (bench/); no GoogleTest, no exceptions:
//   read_proc        - the whole of a /proc file, with plain read(2).
//   ProcLock         - one line of /proc/locks: a granted lock or a blocked
//                      waiter ("->"); read_proc_locks parses the table.
//   has_flock_waiter - /proc/locks shows a process blocked in flock(2) on an
//                      inode.
//   ThreadState      - one thread of this process: id, name, the syscall it is
//                      blocked in, wchan; read_threads reads them all.
//   thread_syscall   - the syscall one thread of this process is blocked in.
//   process_state / thread_state - the scheduler state letter ('S', 'Z', ...).
#ifndef TIERLOCK_TESTS_SUPPORT_PROC_H_
#define TIERLOCK_TESTS_SUPPORT_PROC_H_

#include <sys/syscall.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tierlock::testing {

// Returns the whole of `path` ("" if it cannot be read). read(2), not a
// stream: libstdc++'s filebuf throws when a read fails, as one of
// /proc/<pid>/... does (ESRCH) if the process is reaped meanwhile.
std::string read_proc(const std::string& path);

struct ProcLock {
  bool waiter = false;  // a "->" line: blocked, waiting for the lock
  std::string kind;     // FLOCK, POSIX, OFDLCK, LEASE, ...
  std::string access;   // READ (shared) or WRITE (exclusive)
  pid_t pid = 0;
  unsigned dev_major = 0;
  unsigned dev_minor = 0;
  std::uint64_t inode = 0;
  std::string line;  // the raw line, for messages

  bool is_flock() const { return kind == "FLOCK"; }
  bool exclusive() const { return access == "WRITE"; }
};

// Returns every entry of /proc/locks (empty if it cannot be read). One
// reading: a busy system can show an entry twice or skip one.
std::vector<ProcLock> read_proc_locks();

// True when /proc/locks shows a blocked flock(2) waiter of process `pid` on
// inode `inode` (flock waiters are listed by process id).
bool has_flock_waiter(pid_t pid, std::uint64_t inode);

struct ThreadState {
  pid_t tid = 0;
  std::string name;          // /proc/self/task/TID/comm
  long syscall = -2;         // the syscall it is blocked in; -1 blocked outside
                             // one; -2 running or unknown
  std::string syscall_line;  // raw /proc/self/task/TID/syscall
  std::string wchan;         // kernel function it sleeps in ("0" if none)

  // True when the thread is blocked in flock(2): by syscall number where the
  // kernel reports it, else by the wait channel's name.
  bool in_flock() const {
#ifdef SYS_flock
    if (syscall == SYS_flock) return true;
#endif
    return syscall < 0 &&
           (wchan.find("flock") != std::string::npos ||
            wchan.find("locks_lock_inode_wait") != std::string::npos);
  }
};

// Returns every thread of this process (empty if /proc is unavailable).
std::vector<ThreadState> read_threads();

// The syscall number thread `tid` of this process is blocked in, as
// ThreadState::syscall (-1 blocked outside one, -2 running or unknown).
long thread_syscall(pid_t tid);

// The scheduler state letter of process `pid` (/proc/<pid>/stat) or of its
// thread `tid` (/proc/<pid>/task/<tid>/stat, readable without ptrace
// rights): '\0' if the file cannot be read, '?' if it does not parse.
char process_state(pid_t pid);
char thread_state(pid_t pid, pid_t tid);

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_PROC_H_

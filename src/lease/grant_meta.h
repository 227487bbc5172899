// src/lease/grant_meta.h
//
// What a lease backend stores about the process behind each grant, for
// LeaseBackend::holder_of (internal):
//   GrantMeta        - host name, pid, command line (bounded).
//   this_grant_meta  - this process's, read once.
//   kMaxGrantProgram - the bound on the stored command line.
//   unix_ms / from_unix_ms - wall-clock `since` as stored (ms since epoch).
#ifndef TIERLOCK_SRC_LEASE_GRANT_META_H_
#define TIERLOCK_SRC_LEASE_GRANT_META_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace tierlock::internal {

// A longer command line is cut at this many bytes: the store keeps one
// row or hash per key, not whole argument vectors.
inline constexpr std::size_t kMaxGrantProgram = 512;

struct GrantMeta {
  std::string host;      // gethostname(); exact bytes
  std::int64_t pid = 0;  // getpid() when read
  // /proc/self/cmdline with the NUL separators as spaces, at most
  // kMaxGrantProgram bytes. Exact bytes otherwise.
  std::string program;
};

// Returns this process's metadata. The pid is read on every call (a fork()ed
// child grants under its own pid); host and program once. Thread-safe.
GrantMeta this_grant_meta();

inline std::int64_t unix_ms(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             t.time_since_epoch())
      .count();
}
inline std::chrono::system_clock::time_point from_unix_ms(std::int64_t ms) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::milliseconds(ms)));
}

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_LEASE_GRANT_META_H_

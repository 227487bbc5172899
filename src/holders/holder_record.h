// src/holders/holder_record.h
//
// The on-disk holder record (internal): who holds a lock, written by the
// holder, read by anyone. See docs/design.md, "Holder records".
//   kRecordSize          - every record is exactly this many bytes.
//   HolderRecord         - the decoded fields of one record.
//   encode_holder_record - the static part of a new record (dynamic part
//   empty). RecordView           - plain stores into a mapped record (the
//   writer). parse_holder_record  - decodes untrusted bytes, rejecting anything
//   malformed. record_file_name     - "<pid>-<start_time>-<boot>": one record
//   per process
//                          and boot.
//
// The record is fixed-size binary in native byte order (it never leaves the
// machine that wrote it: readers match the boot id). Static fields (identity,
// host, program) are written once, before the magic, and covered by a
// checksum; dynamic fields (held, mode, since, tier) change on every kernel
// acquire and are framed by a sequence number at both ends (seqlock: odd
// while being written).
#ifndef TIERLOCK_SRC_HOLDERS_HOLDER_RECORD_H_
#define TIERLOCK_SRC_HOLDERS_HOLDER_RECORD_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "tierlock/mode.h"
#include "tierlock/tier.h"

namespace tierlock::internal {

inline constexpr std::size_t kRecordSize = 1024;
inline constexpr std::size_t kMaxHost = 255;
inline constexpr std::size_t kMaxProgram = 511;
inline constexpr std::size_t kMaxTierName = 64;
inline constexpr std::size_t kBootIdSize = 36;  // "xxxxxxxx-xxxx-..." (uuid)

struct HolderRecord {
  // Static part.
  std::int64_t pid = 0;
  std::uint64_t start_time = 0;  // clock ticks after boot (/proc/PID/stat 22)
  std::uint64_t lock_dev = 0;    // the lock file's identity
  std::uint64_t lock_ino = 0;
  std::string boot_id;
  std::string host;
  std::string program;
  // Dynamic part: meaningful only if `dynamic_valid` (a consistent snapshot).
  bool dynamic_valid = false;
  bool held = false;
  std::int64_t since_ns = 0;  // CLOCK_REALTIME of the kernel acquire
  Mode mode = Mode::kExclusive;
  std::optional<int> tier_level;
  std::string tier_name;
};

// Returns a new record's bytes (kRecordSize) with the static fields of
// `static_fields` (host and program as exact bytes; over-long ones are
// truncated, possibly inside a UTF-8 sequence), no dynamic
// state ("not held"), and the magic set. Used before the record is
// published; the writer then updates the dynamic part in place.
std::string encode_holder_record(const HolderRecord& static_fields);

// Decodes `bytes`, a record read from a file that anyone may have written.
// Never reads outside `bytes`. Errors (kInvalidArgument, with the reason):
// wrong size, bad magic or version, lengths out of range, checksum mismatch,
// control characters in the boot id. Host, program and tier name are
// returned as the exact bytes stored (any bytes: escape them to print).
// A dynamic part caught mid-update or malformed is not an error: the result
// has dynamic_valid false. Whether to believe an accepted record is not the
// parser's business: see trustworthy() in src/holders/holder.cc.
absl::StatusOr<HolderRecord> parse_holder_record(std::string_view bytes);

// Returns the record file name for a process: "<pid>-<start>-<boot16>",
// where boot16 is the first 16 hex digits of the boot id.
std::string record_file_name(std::int64_t pid, std::uint64_t start_time,
                             std::string_view boot_id);

// RecordView
//
// The writer's handle onto its own mapped record (kRecordSize bytes). Not
// thread-safe: the owner serialises calls (LockEntry's mutex). Plain stores,
// no syscall (platform::coarse_realtime_ns: CLOCK_REALTIME_COARSE through
// the vDSO on Linux).
class RecordView {
 public:
  explicit RecordView(char* base) : base_(base) {}
  // Marks the record held in `mode` since now, with `tier` (or none).
  void set_held(Mode mode, const std::optional<Tier>& tier);
  // Marks the record not held.
  void set_released();

 private:
  void begin();
  void end();
  char* base_;
  std::uint32_t seq_ = 0;
  const char* tier_name_ = nullptr;  // what the record's tier name holds now
  std::size_t tier_name_size_ = 0;
};

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_HOLDERS_HOLDER_RECORD_H_

// src/holders/holder_writer.h
//
// The writing side of holder records (internal):
//   HolderRecordFile - one LockEntry's record: created on the first kernel
//                      acquire, updated with plain stores on every later one,
//                      removed when the entry dies.
//   holders_of       - the reading side: the kernel's holders of a lock file,
//                      named from their records or /proc.
#ifndef TIERLOCK_SRC_HOLDERS_HOLDER_WRITER_H_
#define TIERLOCK_SRC_HOLDERS_HOLDER_WRITER_H_

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "holders/holder_record.h"
#include "platform/platform.h"
#include "tierlock/holder.h"
#include "tierlock/mode.h"
#include "tierlock/tier.h"

namespace tierlock::internal {

// HolderRecordFile
//
// Not thread-safe: its LockEntry calls it under the entry mutex. The first
// acquired() makes the syscalls that create the record (or finds that it
// cannot: a read-only directory, no /proc; then it never tries again);
// later calls only store to the mapped record.
class HolderRecordFile {
 public:
  HolderRecordFile() = default;
  HolderRecordFile(const HolderRecordFile&) = delete;
  HolderRecordFile& operator=(const HolderRecordFile&) = delete;
  ~HolderRecordFile();  // unmaps only; close() removes the file

  // The kernel lock on `lock_file` (identity `id`) was just taken in `mode`.
  void acquired(const std::filesystem::path& lock_file,
                const platform::FileId& id, Mode mode,
                const std::optional<Tier>& tier) {
    if (view_.has_value()) [[likely]] {
      view_->set_held(mode, tier);
      return;
    }
    if (state_ == State::kNone) create(lock_file, id, mode, tier);
  }
  // The kernel lock was released.
  void released() {
    if (view_.has_value()) view_->set_released();
  }
  // Ends this entry's use of the record: marks it not held and keeps it
  // (mapped, bounded, removed at exit) for the next entry of the same lock
  // file in this process (`remove`), or only unmaps it (after fork() in a
  // child: the file is the parent's).
  void close(const std::filesystem::path& lock_file, const platform::FileId& id,
             bool remove) noexcept;

 private:
  enum class State { kNone, kActive, kUnavailable };
  void create(const std::filesystem::path& lock_file,
              const platform::FileId& id, Mode mode,
              const std::optional<Tier>& tier);

  State state_ = State::kNone;
  std::string name_;
  platform::MappedRecord mapped_;
  std::optional<RecordView> view_;
};

// Returns the holders of the lock file `lock_file` with identity `id`: the
// kernel's lock table decides who holds it; records and /proc name them.
// kUnavailable if the lock table cannot be read.
absl::StatusOr<std::vector<Holder>> holders_of(
    const std::filesystem::path& lock_file, const platform::FileId& id);

// Returns the holders that tierlock records alone name, without reading the
// kernel's lock table (whose read can wait milliseconds for an RCU grace
// period when nothing read it recently): records of live processes of this
// boot (same pid and start time) that say they hold `id` now. A hint, not
// proof: a holder that is not tierlock (flock(1), Python) has no record, and
// a record may lag a release by a few stores. Empty when none.
std::vector<Holder> recorded_holders(const std::filesystem::path& lock_file,
                                     const platform::FileId& id);

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_HOLDERS_HOLDER_WRITER_H_

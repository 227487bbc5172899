// Holder records: the writer's lifecycle, and reading who holds a lock.
#include <algorithm>
#include <utility>

#include "holder_writer.h"
#include "lock_entry.h"
#include "tierlock/dir_lock.h"
#include "tierlock/holder.h"

namespace tierlock {
namespace internal {

HolderRecordFile::~HolderRecordFile() {
  if (state_ == State::kActive) platform::unmap_record(mapped_);
}

void HolderRecordFile::create(const std::filesystem::path& lock_file,
                              const platform::FileId& id, Mode mode,
                              const std::optional<Tier>& tier) {
  state_ = State::kUnavailable;  // unless everything below works
  std::optional<platform::SelfIdentity> self = platform::self_identity();
  if (!self.has_value() || self->boot_id.empty()) return;
  HolderRecord r;
  r.pid = self->pid;
  r.start_time = self->start_time;
  r.lock_dev = id.dev;
  r.lock_ino = id.ino;
  r.boot_id = self->boot_id;
  r.host = self->host;
  r.program = self->program;
  name_ = record_file_name(r.pid, r.start_time, r.boot_id);
  absl::StatusOr<platform::MappedRecord> mapped =
      platform::create_record(lock_file, name_, encode_holder_record(r));
  if (!mapped.ok()) return;  // e.g. a read-only directory: no record
  mapped_ = *mapped;
  state_ = State::kActive;
  view_.emplace(mapped_.base);
  view_->set_held(mode, tier);
}

void HolderRecordFile::close(const std::filesystem::path& lock_file,
                             bool remove) noexcept {
  if (state_ != State::kActive) return;
  view_.reset();
  if (remove) {
    platform::remove_record(lock_file, name_, mapped_);
  } else {
    platform::unmap_record(mapped_);
  }
  state_ = State::kNone;
}

absl::StatusOr<std::vector<Holder>> holders_of(
    const std::filesystem::path& lock_file, const platform::FileId& id) {
  absl::StatusOr<std::vector<platform::KernelHolder>> kernel =
      platform::read_kernel_holders(id);
  if (!kernel.ok()) return kernel.status();
  // One Holder per process (a process may hold the lock through several open
  // file descriptions, and /proc/locks may repeat a line while it changes).
  std::vector<Holder> out;
  for (const platform::KernelHolder& k : *kernel) {
    auto same = std::find_if(out.begin(), out.end(), [&](const Holder& h) {
      return h.pid.value_or(0) == k.pid && k.pid > 0;
    });
    if (same != out.end()) {
      if (k.mode == Mode::kExclusive) same->mode = Mode::kExclusive;
      continue;
    }
    Holder h;
    h.mode = k.mode;
    if (k.pid > 0) h.pid = k.pid;  // 0: in another pid namespace
    out.push_back(std::move(h));
  }
  const std::string& boot = platform::boot_id();
  for (Holder& h : out) {
    if (!h.pid.has_value()) continue;
    platform::ProcessInfo info = platform::process_info(*h.pid);
    h.start_time = info.start_time;
    if (!info.program.empty()) h.program = info.program;
    // The record is found by the name the live process would have given it,
    // so a record of an earlier process with the same pid is never read.
    if (!info.start_time.has_value() || boot.empty()) continue;
    std::optional<std::string> bytes = platform::read_record(
        lock_file, record_file_name(*h.pid, *info.start_time, boot),
        kRecordSize);
    if (!bytes.has_value()) continue;
    absl::StatusOr<HolderRecord> r = parse_holder_record(*bytes);
    // It must describe this very process and lock file, or it is ignored.
    if (!r.ok() || r->pid != *h.pid || r->start_time != *info.start_time ||
        r->boot_id != boot || r->lock_dev != id.dev || r->lock_ino != id.ino) {
      continue;
    }
    h.recorded = true;
    if (!r->host.empty()) h.host = r->host;
    if (!r->program.empty()) h.program = r->program;
    // The dynamic part only if consistent, held, and in the kernel's mode
    // (otherwise it describes an earlier hold, or one being taken).
    if (r->dynamic_valid && r->held && r->mode == h.mode) {
      h.since = std::chrono::system_clock::time_point(
          std::chrono::duration_cast<std::chrono::system_clock::duration>(
              std::chrono::nanoseconds(r->since_ns)));
      if (r->tier_level.has_value()) {
        h.tier_level = r->tier_level;
        h.tier_name = r->tier_name;
      }
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const Holder& a, const Holder& b) {
    return a.mode == Mode::kExclusive && b.mode != Mode::kExclusive;
  });
  return out;
}

}  // namespace internal

absl::StatusOr<LockState> inspect_lock(const std::filesystem::path& dir,
                                       std::string_view lock_file_name) {
  absl::StatusOr<internal::platform::ProbedLockFile> probed =
      internal::platform::probe_lock_file(dir, lock_file_name);
  if (!probed.ok()) return probed.status();
  LockState state;
  state.lock_file = probed->directory / lock_file_name;
  state.lock_file_exists = probed->id.has_value();
  if (!probed->id.has_value()) return state;
  absl::StatusOr<std::vector<Holder>> holders =
      internal::holders_of(state.lock_file, *probed->id);
  if (!holders.ok()) return holders.status();
  state.holders = *std::move(holders);
  return state;
}

absl::StatusOr<std::vector<Holder>> DirLock::holders() const {
  return internal::holders_of(entry_->file().path(), entry_->id());
}

}  // namespace tierlock

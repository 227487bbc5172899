// Holder records: the writer's lifecycle, and reading who holds a lock.
#include "tierlock/holder.h"

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "base/fork_generation.h"
#include "holders/holder_writer.h"

namespace tierlock {
namespace internal {
namespace {

// Records of entries that died, kept mapped (marked "not held") so that the
// next entry for the same lock file in this process adopts its record with
// no syscall: opening, locking and dropping a handle in a loop would
// otherwise create and delete a file (and a directory) every time, ~20x the
// cost of the lock itself on ext4. Bounded; the oldest is removed when full,
// and all of them at exit. A record kept here is harmless: readers use a
// record only for a process the kernel lists as a holder, and its dynamic
// part only while it says "held".
class IdleRecords {
 public:
  struct Idle {
    std::filesystem::path lock_file;
    platform::FileId id;
    std::string name;
    platform::MappedRecord mapped;
    std::uint64_t generation;
  };
  static IdleRecords& get() {
    static IdleRecords* records = new IdleRecords;  // see ~Cleanup below
    return *records;
  }
  std::optional<Idle> take(const std::filesystem::path& lock_file,
                           const platform::FileId& id) {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
      if (it->generation != fork_generation()) continue;
      if (it->id == id && it->lock_file == lock_file) {
        Idle found = std::move(*it);
        idle_.erase(it);
        return found;
      }
    }
    return std::nullopt;
  }
  void put(Idle idle) {
    std::vector<Idle> evicted;
    {
      std::lock_guard<std::mutex> lk(mu_);
      // Records inherited over fork() are the parent's: unmap only.
      for (auto it = idle_.begin(); it != idle_.end();) {
        if (it->generation != fork_generation()) {
          platform::unmap_record(it->mapped);
          it = idle_.erase(it);
        } else {
          ++it;
        }
      }
      idle_.push_back(std::move(idle));
      while (idle_.size() > kMaxIdle) {
        evicted.push_back(std::move(idle_.front()));
        idle_.erase(idle_.begin());
      }
    }
    for (const Idle& e : evicted) {
      platform::remove_record(e.lock_file, e.name, e.mapped);
    }
  }
  // Removes every idle record (at exit).
  void clear() noexcept {
    std::vector<Idle> all;
    {
      std::lock_guard<std::mutex> lk(mu_);
      all.swap(idle_);
    }
    for (const Idle& e : all) {
      if (e.generation == fork_generation()) {
        platform::remove_record(e.lock_file, e.name, e.mapped);
      }
    }
  }

 private:
  static constexpr std::size_t kMaxIdle = 8;
  std::mutex mu_;
  std::vector<Idle> idle_;
};

// Removes the idle records when the process exits normally (a process that
// dies otherwise leaves them to the next writer's clean-up of dead
// processes' records).
struct IdleRecordsCleanup {
  ~IdleRecordsCleanup() { IdleRecords::get().clear(); }
};
IdleRecordsCleanup g_idle_records_cleanup;

}  // namespace

HolderRecordFile::~HolderRecordFile() {
  if (state_ == State::kActive) platform::unmap_record(mapped_);
}

void HolderRecordFile::create(const std::filesystem::path& lock_file,
                              const platform::FileId& id, Mode mode,
                              const std::optional<Tier>& tier) {
  if (std::optional<IdleRecords::Idle> idle =
          IdleRecords::get().take(lock_file, id)) {
    name_ = std::move(idle->name);
    mapped_ = idle->mapped;
    state_ = State::kActive;
    view_.emplace(mapped_.base);
    view_->set_held(mode, tier);
    return;
  }
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
                             const platform::FileId& id, bool remove) noexcept {
  if (state_ != State::kActive) return;
  state_ = State::kNone;
  if (!remove) {
    view_.reset();  // no store: after fork() the mapping is the parent's
    platform::unmap_record(mapped_);
    return;
  }
  view_->set_released();
  view_.reset();
  try {
    IdleRecords::get().put(IdleRecords::Idle{lock_file, id, std::move(name_),
                                             mapped_, fork_generation()});
  } catch (...) {
    // Out of memory: remove the record instead of keeping it.
    platform::remove_record(lock_file, name_, mapped_);
  }
}

namespace {

// Fills what a record says of a hold in progress: since when, and the tier.
void take_held_part(const HolderRecord& r, Holder& h) {
  h.since = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds(r.since_ns)));
  if (r.tier_level.has_value()) {
    h.tier_level = r.tier_level;
    h.tier_name = r.tier_name;
  }
}

// Exclusive holders first (there is at most one), then shared ones.
void sort_exclusive_first(std::vector<Holder>& holders) {
  std::stable_sort(
      holders.begin(), holders.end(), [](const Holder& a, const Holder& b) {
        return a.mode == Mode::kExclusive && b.mode != Mode::kExclusive;
      });
}

}  // namespace

namespace {

// Whether a record file can be believed to come from the process it names:
// owned by the uid that process creates files as (its filesystem uid), and
// writable by nobody else (group/other write bits, which include a POSIX ACL
// mask). A forger can only write records it owns, so it can only speak for
// its own processes; moving someone's genuine record elsewhere only repeats
// what that process wrote about itself.
bool trustworthy(const platform::RecordFile& file,
                 const platform::ProcessInfo& process) {
  return process.fs_uid.has_value() && file.owner_uid == *process.fs_uid &&
         (file.mode & 022) == 0;
}

// Reads the trustworthy record of the live process `pid` (whose /proc view
// is `info`) for the lock file `id`; nullopt if there is none.
std::optional<HolderRecord> read_trusted_record(
    const std::filesystem::path& lock_file, const platform::FileId& id,
    std::int64_t pid, const platform::ProcessInfo& info,
    const std::string& boot) {
  // The record is found by the name the live process would have given it,
  // so a record of an earlier process with the same pid is never read.
  if (!info.start_time.has_value() || boot.empty()) return std::nullopt;
  std::optional<platform::RecordFile> file = platform::read_record(
      lock_file, record_file_name(pid, *info.start_time, boot), kRecordSize);
  if (!file.has_value() || !trustworthy(*file, info)) return std::nullopt;
  absl::StatusOr<HolderRecord> r = parse_holder_record(file->bytes);
  // It must describe this very process and lock file, or it is ignored.
  if (!r.ok() || r->pid != pid || r->start_time != *info.start_time ||
      r->boot_id != boot || r->lock_dev != id.dev || r->lock_ino != id.ino) {
    return std::nullopt;
  }
  return *std::move(r);
}

// Adds a holder for `pid` (nullopt: unknown) in `mode`, merged with an
// existing one of the same process.
Holder& add_holder(std::vector<Holder>& out, std::optional<std::int64_t> pid,
                   Mode mode) {
  if (pid.has_value()) {
    auto same = std::find_if(out.begin(), out.end(),
                             [&](const Holder& h) { return h.pid == pid; });
    if (same != out.end()) {
      if (mode == Mode::kExclusive) same->mode = Mode::kExclusive;
      return *same;
    }
  }
  Holder h;
  h.mode = mode;
  h.pid = pid;
  out.push_back(std::move(h));
  return out.back();
}

}  // namespace

absl::StatusOr<std::vector<Holder>> holders_of(
    const std::filesystem::path& lock_file, const platform::FileId& id) {
  absl::StatusOr<std::vector<platform::KernelHolder>> kernel =
      platform::read_kernel_holders(id);
  if (!kernel.ok()) return kernel.status();
  // One Holder per process (a process may hold the lock through several open
  // file descriptions, and /proc/locks may repeat a line while it changes).
  //
  // The kernel names the process that took the lock (its pid stays in the
  // lock after it exits; /proc/locks shows it dead, or, inside a pid
  // namespace, 0 on older kernels and no line at all on current ones, which
  // is not handled here). If that process is gone or no longer has the file
  // open, the
  // holders are the processes that share its open file description: found
  // in /proc/PID/fdinfo, whose "lock:" lines carry the same pid.
  std::vector<Holder> out;
  std::optional<platform::DescriptionScan> scan;  // at most one, if needed
  std::vector<std::pair<std::int64_t, Mode>> resolved;
  for (const platform::KernelHolder& k : *kernel) {
    platform::OpenState taker = platform::OpenState::kGone;
    if (k.pid > 0) {
      taker = platform::process_has_open(k.pid, id);
      // kUnknown: another user's process we may not look into; believe
      // the kernel, as before.
      if (taker == platform::OpenState::kOpen ||
          taker == platform::OpenState::kUnknown) {
        add_holder(out, k.pid, k.mode);
        continue;
      }
    }
    const std::pair<std::int64_t, Mode> key(k.pid, k.mode);
    if (std::find(resolved.begin(), resolved.end(), key) != resolved.end()) {
      continue;  // the same description listed twice, already found
    }
    if (!scan.has_value()) scan = platform::find_description_holders(id);
    bool found = false;
    for (const platform::DescriptionHolder& d : scan->holders) {
      if (d.kernel_pid != k.pid || d.mode != k.mode) continue;
      Holder& h = add_holder(out, d.pid, k.mode);
      h.inherited = true;
      if (k.pid > 0) h.taker_pid = k.pid;
      found = true;
    }
    if (found) {
      resolved.push_back(key);
    } else if (taker == platform::OpenState::kNotOpen) {
      // Alive but without the file open, and no one found sharing its
      // description (e.g. it holds it only through a mapping): name it,
      // as the kernel does.
      add_holder(out, k.pid, k.mode);
    } else {
      Holder& h = add_holder(out, std::nullopt, k.mode);
      if (k.pid > 0) h.taker_pid = k.pid;  // exited; holder not visible
    }
  }
  const std::string& boot = platform::boot_id();
  for (Holder& h : out) {
    if (!h.pid.has_value()) continue;
    platform::ProcessInfo info = platform::process_info(*h.pid);
    h.start_time = info.start_time;
    if (!info.program.empty()) h.program = info.program;
    std::optional<HolderRecord> r =
        read_trusted_record(lock_file, id, *h.pid, info, boot);
    if (!r.has_value()) continue;
    h.recorded = true;
    if (!r->host.empty()) h.host = r->host;
    if (!r->program.empty()) h.program = r->program;
    // The dynamic part only if consistent, held, and in the kernel's mode
    // (otherwise it describes an earlier hold, or one being taken).
    if (r->dynamic_valid && r->held && r->mode == h.mode) {
      take_held_part(*r, h);
    }
  }
  sort_exclusive_first(out);
  return out;
}

std::vector<Holder> recorded_holders(const std::filesystem::path& lock_file,
                                     const platform::FileId& id) {
  std::vector<Holder> out;
  const std::string& boot = platform::boot_id();
  if (boot.empty()) return out;
  std::filesystem::path dir = lock_file;
  dir += ".holders";
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  // Bounded: a records directory holds one file per process that used the
  // lock recently; more than this is not worth reading on a timeout path.
  constexpr int kMaxRecords = 256;
  int seen = 0;
  for (;
       !ec && it != std::filesystem::directory_iterator() && seen < kMaxRecords;
       it.increment(ec), ++seen) {
    const std::string name = it->path().filename().string();
    std::vector<absl::string_view> parts = absl::StrSplit(name, '-');
    std::int64_t pid = 0;
    std::uint64_t start = 0;
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &pid) ||
        !absl::SimpleAtoi(parts[1], &start) || pid <= 0 ||
        record_file_name(pid, start, boot) != name) {
      continue;  // not a record of this boot
    }
    // The process must be the one that wrote it: alive, same start time,
    // and the record's owner.
    platform::ProcessInfo info = platform::process_info(pid);
    if (info.start_time != start) continue;
    std::optional<HolderRecord> r =
        read_trusted_record(lock_file, id, pid, info, boot);
    if (!r.has_value() || !r->dynamic_valid || !r->held) continue;
    Holder h;
    h.pid = pid;
    h.mode = r->mode;
    h.start_time = start;
    h.recorded = true;
    if (!r->host.empty()) h.host = r->host;
    h.program = !r->program.empty() ? r->program : info.program;
    take_held_part(*r, h);
    out.push_back(std::move(h));
  }
  sort_exclusive_first(out);
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
  state.unsafe_reason =
      internal::platform::unsafe_reason_of(probed->directory, state.lock_file);
  return state;
}

}  // namespace tierlock

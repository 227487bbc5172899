// The holder record's byte layout, its encoder, its in-place writer and its
// defensive parser.
#include "holders/holder_record.h"

#include <atomic>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "platform/platform.h"

namespace tierlock::internal {
namespace {

// Byte offsets. Static part: [0, 96) plus the host and program areas.
constexpr char kMagic[8] = {'T', 'L', 'H', 'O', 'L', 'D', 'R', '\0'};
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kOffMagic = 0;
constexpr std::size_t kOffVersion = 8;    // u32
constexpr std::size_t kOffSize = 12;      // u32
constexpr std::size_t kOffPid = 16;       // i64
constexpr std::size_t kOffStart = 24;     // u64
constexpr std::size_t kOffDev = 32;       // u64
constexpr std::size_t kOffIno = 40;       // u64
constexpr std::size_t kOffBoot = 48;      // char[36]
constexpr std::size_t kOffHostLen = 84;   // u16
constexpr std::size_t kOffProgLen = 86;   // u16
constexpr std::size_t kOffChecksum = 88;  // u64, over the static part
// Dynamic part, framed by seq_begin / seq_end.
constexpr std::size_t kOffSeqBegin = 96;    // u32
constexpr std::size_t kOffHeld = 100;       // u32 0/1
constexpr std::size_t kOffSince = 104;      // i64 ns since the epoch
constexpr std::size_t kOffMode = 112;       // u32 0 exclusive, 1 shared
constexpr std::size_t kOffTierSet = 116;    // u32 0/1
constexpr std::size_t kOffTierLevel = 120;  // i32
constexpr std::size_t kOffTierLen = 124;    // u32
constexpr std::size_t kOffTierName = 128;   // char[64]
constexpr std::size_t kOffSeqEnd = 192;     // u32
constexpr std::size_t kOffHost = 256;       // char[256]
constexpr std::size_t kOffProgram = 512;    // char[512]
static_assert(kOffTierName + kMaxTierName <= kOffSeqEnd);
static_assert(kOffHost + kMaxHost < kOffProgram);
static_assert(kOffProgram + kMaxProgram < kRecordSize);

template <typename T>
T load(std::string_view b, std::size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}
template <typename T>
void store(char* b, std::size_t off, T v) {
  std::memcpy(b + off, &v, sizeof v);
}

// FNV-1a, 64 bits: detects a partly written or edited record; not a defence
// against a forger (who can write a valid record anyway: the kernel's lock
// table decides who holds the lock, and a record is believed only if the
// process it names owns it).
std::uint64_t fnv1a(std::uint64_t h, std::string_view s) {
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::uint64_t static_checksum(std::string_view b, std::size_t host_len,
                              std::size_t prog_len) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  h = fnv1a(h, b.substr(kOffVersion, kOffChecksum - kOffVersion));
  h = fnv1a(h, b.substr(kOffHost, host_len));
  h = fnv1a(h, b.substr(kOffProgram, prog_len));
  return h;
}

bool printable(std::string_view s) {
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

absl::Status bad(std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "holder record: ", absl::string_view(why.data(), why.size())));
}

}  // namespace

std::string encode_holder_record(const HolderRecord& r) {
  std::string out(kRecordSize, '\0');
  char* b = out.data();
  store<std::uint32_t>(b, kOffVersion, kVersion);
  store<std::uint32_t>(b, kOffSize, static_cast<std::uint32_t>(kRecordSize));
  store<std::int64_t>(b, kOffPid, r.pid);
  store<std::uint64_t>(b, kOffStart, r.start_time);
  store<std::uint64_t>(b, kOffDev, r.lock_dev);
  store<std::uint64_t>(b, kOffIno, r.lock_ino);
  // A fixed-size, zero-padded field: no terminator by design.
  std::memcpy(b + kOffBoot,  // NOLINT(bugprone-not-null-terminated-result)
              r.boot_id.data(), std::min(r.boot_id.size(), kBootIdSize));
  // Text is stored as its exact bytes (length-delimited, so any byte is
  // fine): readers escape it for display, and JSON output stays exact.
  auto put_text = [b](std::size_t off, std::string_view s, std::size_t max) {
    s = s.substr(0, max);
    std::memcpy(b + off, s.data(), s.size());
    return s.size();
  };
  const std::size_t host_len = put_text(kOffHost, r.host, kMaxHost);
  const std::size_t prog_len = put_text(kOffProgram, r.program, kMaxProgram);
  store<std::uint16_t>(b, kOffHostLen, static_cast<std::uint16_t>(host_len));
  store<std::uint16_t>(b, kOffProgLen, static_cast<std::uint16_t>(prog_len));
  store<std::uint64_t>(b, kOffChecksum,
                       static_checksum(out, host_len, prog_len));
  std::memcpy(b + kOffMagic, kMagic, sizeof kMagic);
  return out;
}

absl::StatusOr<HolderRecord> parse_holder_record(std::string_view b) {
  if (b.size() != kRecordSize) {
    return bad(absl::StrCat("size ", b.size(), ", expected ", kRecordSize));
  }
  if (std::memcmp(b.data() + kOffMagic, kMagic, sizeof kMagic) != 0) {
    return bad("bad magic (not a holder record, or not finished)");
  }
  if (load<std::uint32_t>(b, kOffVersion) != kVersion) {
    return bad("unsupported version");
  }
  if (load<std::uint32_t>(b, kOffSize) != kRecordSize) {
    return bad("size field does not match");
  }
  const std::size_t host_len = load<std::uint16_t>(b, kOffHostLen);
  const std::size_t prog_len = load<std::uint16_t>(b, kOffProgLen);
  if (host_len > kMaxHost || prog_len > kMaxProgram) {
    return bad("text length out of range");
  }
  if (load<std::uint64_t>(b, kOffChecksum) !=
      static_checksum(b, host_len, prog_len)) {
    return bad("checksum mismatch");
  }
  HolderRecord r;
  r.pid = load<std::int64_t>(b, kOffPid);
  r.start_time = load<std::uint64_t>(b, kOffStart);
  r.lock_dev = load<std::uint64_t>(b, kOffDev);
  r.lock_ino = load<std::uint64_t>(b, kOffIno);
  if (r.pid <= 0) return bad("pid out of range");
  std::string_view boot = b.substr(kOffBoot, kBootIdSize);
  boot = boot.substr(0, std::min(boot.size(), boot.find('\0')));
  r.boot_id = std::string(boot);
  std::string_view host = b.substr(kOffHost, host_len);
  std::string_view program = b.substr(kOffProgram, prog_len);
  // The boot id is matched against ours; host and program are exact bytes
  // (length-delimited) that the process wrote about itself.
  if (!printable(boot)) return bad("control characters in the boot id");
  r.host = std::string(host);
  r.program = std::string(program);

  const auto seq = load<std::uint32_t>(b, kOffSeqBegin);
  const auto held = load<std::uint32_t>(b, kOffHeld);
  const auto mode = load<std::uint32_t>(b, kOffMode);
  const auto tier_set = load<std::uint32_t>(b, kOffTierSet);
  const std::size_t tier_len = load<std::uint32_t>(b, kOffTierLen);
  const auto since = load<std::int64_t>(b, kOffSince);
  std::string_view tier_name =
      b.substr(kOffTierName, std::min(tier_len, kMaxTierName));
  r.dynamic_valid = seq % 2 == 0 && seq == load<std::uint32_t>(b, kOffSeqEnd) &&
                    held <= 1 && mode <= 1 && tier_set <= 1 &&
                    tier_len <= kMaxTierName && since >= 0;
  if (r.dynamic_valid) {
    r.held = held == 1;
    r.since_ns = since;
    r.mode = mode == 0 ? Mode::kExclusive : Mode::kShared;
    if (tier_set == 1) {
      r.tier_level = load<std::int32_t>(b, kOffTierLevel);
      r.tier_name = std::string(tier_name);
    }
  }
  return r;
}

std::string record_file_name(std::int64_t pid, std::uint64_t start_time,
                             std::string_view boot_id) {
  std::string boot;
  for (char c : boot_id) {
    if (boot.size() == 16) break;
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) boot.push_back(c);
  }
  return absl::StrCat(pid, "-", start_time, "-", boot);
}

// The writer. Readers copy the record with pread (another process, or
// DirLock::holders in this one), so these are stores to memory that no C++
// thread reads concurrently; the fences order them for a reader on another
// CPU, which accepts the dynamic part only if both sequence numbers match
// and are even.
void RecordView::begin() {
  ++seq_;
  store<std::uint32_t>(base_, kOffSeqBegin, seq_);
  std::atomic_thread_fence(std::memory_order_release);
}

void RecordView::end() {
  std::atomic_thread_fence(std::memory_order_release);
  ++seq_;
  store<std::uint32_t>(base_, kOffSeqBegin, seq_);
  std::atomic_thread_fence(std::memory_order_release);
  store<std::uint32_t>(base_, kOffSeqEnd, seq_);
}

void RecordView::set_held(Mode mode, const std::optional<Tier>& tier) {
  // Coarse: a vDSO read of the last tick, ~ns; "since" is shown in seconds.
  const std::int64_t now_ns = platform::coarse_realtime_ns();
  begin();
  store<std::uint32_t>(base_, kOffHeld, 1);
  store<std::int64_t>(base_, kOffSince, now_ns);
  store<std::uint32_t>(base_, kOffMode, mode == Mode::kExclusive ? 0 : 1);
  store<std::uint32_t>(base_, kOffTierSet, tier.has_value() ? 1 : 0);
  if (tier.has_value()) {
    store<std::int32_t>(base_, kOffTierLevel, tier->level);
    // Tier names are interned: a pointer compare usually skips the copy.
    if (tier->name.data() != tier_name_ ||
        tier->name.size() != tier_name_size_) {
      const std::size_t n = std::min(tier->name.size(), kMaxTierName);
      std::memcpy(base_ + kOffTierName, tier->name.data(), n);
      store<std::uint32_t>(base_, kOffTierLen, static_cast<std::uint32_t>(n));
      tier_name_ = tier->name.data();
      tier_name_size_ = tier->name.size();
    }
  }
  end();
}

void RecordView::set_released() {
  begin();
  store<std::uint32_t>(base_, kOffHeld, 0);
  end();
}

}  // namespace tierlock::internal

// tests/fuzz/holder_record_fuzz.cc
//
// libFuzzer target for the holder-record parser (src/holders/holder_record.h),
// which reads files anyone may write. Checks, for any bytes:
//   - parse_holder_record never crashes, never reads outside the input
//     (ASan), and whatever it accepts has bounded text (exact bytes: any
//     byte may appear; readers escape it to print);
//   - an accepted record re-encodes to bytes that parse to the same static
//     fields;
//   - a record built from the input (any pid, host, program) encodes to bytes
//     the parser accepts, with the fields the encoder documents.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "holders/holder_record.h"

namespace {

using tierlock::internal::encode_holder_record;
using tierlock::internal::HolderRecord;
using tierlock::internal::kRecordSize;
using tierlock::internal::parse_holder_record;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "holder_record_fuzz: %s\n", what);
    std::abort();
  }
}

bool printable(std::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return false;
  }
  return true;
}

bool same_static(const HolderRecord& a, const HolderRecord& b) {
  return a.pid == b.pid && a.start_time == b.start_time &&
         a.lock_dev == b.lock_dev && a.lock_ino == b.lock_ino &&
         a.boot_id == b.boot_id && a.host == b.host && a.program == b.program;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  // 1. Untrusted bytes.
  absl::StatusOr<HolderRecord> parsed = parse_holder_record(bytes);
  if (parsed.ok()) {
    check(size == kRecordSize, "accepted a record of the wrong size");
    check(printable(parsed->boot_id),
          "accepted control characters in the boot id");
    check(parsed->host.size() < kRecordSize &&
              parsed->program.size() < kRecordSize,
          "text longer than the record");
    absl::StatusOr<HolderRecord> again =
        parse_holder_record(encode_holder_record(*parsed));
    check(again.ok(), "a re-encoded accepted record is rejected");
    check(same_static(*parsed, *again), "re-encoding changed static fields");
  }

  // 2. A record built from the input must round-trip.
  if (size >= 16) {
    HolderRecord r;
    std::memcpy(&r.pid, data, sizeof r.pid);
    std::memcpy(&r.start_time, data + 8, sizeof r.start_time);
    if (r.pid <= 0) r.pid = 1;  // the encoder's callers never write others
    const std::string_view rest = bytes.substr(16);
    const std::size_t half = rest.size() / 2;
    r.host = std::string(rest.substr(0, half));
    r.program = std::string(rest.substr(half));
    r.boot_id = "0123456789abcdef0123456789abcdef";
    const std::string encoded = encode_holder_record(r);
    check(encoded.size() == kRecordSize, "encoded record has the wrong size");
    absl::StatusOr<HolderRecord> back = parse_holder_record(encoded);
    check(back.ok(), "the parser rejects what the encoder wrote");
    check(back->pid == r.pid && back->start_time == r.start_time,
          "pid / start time changed");
    check(back->host == r.host.substr(0, tierlock::internal::kMaxHost) &&
              back->program ==
                  r.program.substr(0, tierlock::internal::kMaxProgram),
          "host / program not kept exactly (truncated to their maximum)");
    check(!back->dynamic_valid || !back->held,
          "a new record claims to be held");
  }
  return 0;
}

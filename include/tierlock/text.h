// tierlock/text.h
//
// Makes untrusted text safe to print, and durations readable:
//   escape_text     - a visible, terminal-safe form of any bytes (paths,
//                     command lines, host and tier names, keys).
//   format_duration - a duration as people write it: "313 ms", "2.35 s".
// Every human-readable message of tierlock (the library's reports and error
// messages, the `tierlock` command's output) passes untrusted fields through
// escape_text, so a hostile file name or command line cannot move the cursor,
// recolour the terminal or reorder the text around it.
#ifndef TIERLOCK_TEXT_H_
#define TIERLOCK_TEXT_H_

#include <chrono>
#include <string>
#include <string_view>

namespace tierlock {

// Returns `text` with everything that a terminal would act on, or that would
// make the text read differently from its bytes, written as a visible escape:
//   - C0 controls (U+0000-U+001F, newline and tab included) and DEL: "\x1b";
//   - C1 controls (U+0080-U+009F, e.g. "\xc2\x9b", the one-byte CSI): "\u009b";
//   - bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E,
//     U+2066-U+2069) and the line and paragraph separators U+2028, U+2029:
//     "\u202e";
//   - bytes that are not valid UTF-8 (a stray continuation byte, a truncated
//     or overlong sequence, a surrogate, anything above U+10FFFF): one "\xNN"
//     per byte;
//   - the backslash itself: "\\", so the result reads back unambiguously.
// Everything else (printable ASCII, valid UTF-8 text in any script) is kept
// as it is. Thread-safe, never fails, allocates once.
//
// For display only: machine-readable output (JSON) keeps the exact bytes.
//
// Example:
//   escape_text("a\x1b[31mb")      == "a\\x1b[31mb"
//   escape_text("x\u202ey")        == "x\\u202ey"
//   escape_text("caf\xc3\xa9")     == "caf\xc3\xa9"  (unchanged)
std::string escape_text(std::string_view text);

// Returns `d` rounded for people, as every tierlock message writes waits and
// timeouts: "0.4 ms" (under 10 ms), "313 ms" (under 1 s), "2.35 s" (under
// 10 s), "12.3 s" (under a minute), "2 min 5 s", "1 h 30 min". Negative
// durations are written as zero. Thread-safe, never fails.
std::string format_duration(std::chrono::nanoseconds d);

}  // namespace tierlock

#endif  // TIERLOCK_TEXT_H_

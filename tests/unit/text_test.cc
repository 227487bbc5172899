// Tests of escape_text (tierlock/text.h): what a terminal would act on is
// shown escaped, valid text is kept, and the result is itself harmless.
#include "tierlock/text.h"

#include <chrono>
#include <string>

#include "gtest/gtest.h"

namespace tierlock {
namespace {

// True if `s` has no byte a terminal acts on: no C0, DEL, or C1 lead pair,
// no bidi override in UTF-8.
bool harmless(const std::string& s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return false;
    if (c == 0xc2 && i + 1 < s.size() &&
        static_cast<unsigned char>(s[i + 1]) < 0xa0) {
      return false;
    }
    if (s.compare(i, 3, "\xe2\x80\xae") == 0) return false;
  }
  return true;
}

TEST(EscapeTextTest, KeepsPrintableAsciiAndValidUtf8) {
  EXPECT_EQ(escape_text("plain /ws/build-1 ok"), "plain /ws/build-1 ok");
  EXPECT_EQ(
      escape_text("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x94\x92"),
      "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x94\x92");
  EXPECT_EQ(escape_text(""), "");
}

TEST(EscapeTextTest, EscapesC0ControlsAndDel) {
  EXPECT_EQ(escape_text("a\x1b[31mb"), "a\\x1b[31mb");
  EXPECT_EQ(escape_text("l1\nl2\tx\r"), "l1\\x0al2\\x09x\\x0d");
  EXPECT_EQ(escape_text(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(escape_text("\x7f"), "\\x7f");
}

TEST(EscapeTextTest, EscapesC1Controls) {
  EXPECT_EQ(escape_text("x\xc2\x9b"
                        "31m"),
            "x\\u009b31m");
  EXPECT_EQ(escape_text("\xc2\x80\xc2\x9f"), "\\u0080\\u009f");
  EXPECT_EQ(escape_text("\xc2\xa0"), "\xc2\xa0");  // NBSP is text
}

TEST(EscapeTextTest, EscapesBidiControlsAndLineSeparators) {
  EXPECT_EQ(escape_text("x\xe2\x80\xaey"), "x\\u202ey");  // RLO
  EXPECT_EQ(escape_text("\xe2\x80\xaa\xe2\x80\xad"), "\\u202a\\u202d");
  EXPECT_EQ(escape_text("\xe2\x81\xa6\xe2\x81\xa9"), "\\u2066\\u2069");
  EXPECT_EQ(escape_text("\xe2\x80\x8e\xe2\x80\x8f\xd8\x9c"),
            "\\u200e\\u200f\\u061c");
  EXPECT_EQ(escape_text("\xe2\x80\xa8\xe2\x80\xa9"), "\\u2028\\u2029");
  EXPECT_EQ(escape_text("\xe2\x80\x94"), "\xe2\x80\x94");  // em dash is text
}

TEST(EscapeTextTest, EscapesInvalidUtf8BytePerByte) {
  EXPECT_EQ(escape_text("a\xff"
                        "b"),
            "a\\xffb");
  EXPECT_EQ(escape_text("\x80"), "\\x80");           // stray continuation
  EXPECT_EQ(escape_text("\xc3"), "\\xc3");           // truncated
  EXPECT_EQ(escape_text("\xe2\x80"), "\\xe2\\x80");  // truncated
  EXPECT_EQ(escape_text("\xc0\xaf"), "\\xc0\\xaf");  // overlong '/'
  EXPECT_EQ(escape_text("\xe0\x80\xaf"), "\\xe0\\x80\\xaf");  // overlong
  EXPECT_EQ(escape_text("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // surrogate
  EXPECT_EQ(escape_text("\xf4\x90\x80\x80"),
            "\\xf4\\x90\\x80\\x80");                 // > U+10FFFF
  EXPECT_EQ(escape_text("\xc2\x1b"), "\\xc2\\x1b");  // lead byte, then ESC
}

TEST(EscapeTextTest, EscapesBackslashSoTheResultIsUnambiguous) {
  EXPECT_EQ(escape_text("a\\x1b"), "a\\\\x1b");
  EXPECT_NE(escape_text("\\x1b"), escape_text("\x1b"));
}

TEST(EscapeTextTest, ResultOfEveryByteIsHarmless) {
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; b += 3) {
      const std::string in = {static_cast<char>(a), static_cast<char>(b),
                              '\xae'};
      const std::string out = escape_text(in);
      EXPECT_TRUE(harmless(out)) << a << " " << b;
    }
  }
}

}  // namespace
TEST(FormatDurationTest, RoundsForPeople) {
  using namespace std::chrono_literals;
  EXPECT_EQ(tierlock::format_duration(0ns), "0.0 ms");
  EXPECT_EQ(tierlock::format_duration(-5ms), "0.0 ms");
  EXPECT_EQ(tierlock::format_duration(432us), "0.4 ms");
  EXPECT_EQ(tierlock::format_duration(313'325'890ns), "313 ms");
  EXPECT_EQ(tierlock::format_duration(2'345ms), "2.35 s");  // not 2.345s
  EXPECT_EQ(tierlock::format_duration(12'340ms), "12.3 s");
  EXPECT_EQ(tierlock::format_duration(125s), "2 min 5 s");
  EXPECT_EQ(tierlock::format_duration(120s), "2 min");
  EXPECT_EQ(tierlock::format_duration(90min), "1 h 30 min");
  EXPECT_EQ(tierlock::format_duration(std::chrono::hours(48)), "48 h");
}

}  // namespace tierlock

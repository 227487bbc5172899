// tests/lease/lease_redact_test.cc
//
// redact_url (tierlock/lease.h): the password of every Redis and PostgreSQL
// URL and libpq connection string is hidden, and nothing else.
#include <string>

#include "gtest/gtest.h"
#include "tierlock/lease.h"

namespace tierlock::testing {
namespace {

struct Case {
  const char* in;
  const char* out;
};

TEST(RedactUrlTest, HidesUrlPasswordsAndKeepsTheRest) {
  for (const Case& c : std::initializer_list<Case>{
           {"redis://user:pw@host", "redis://user:***@host"},
           {"redis://:pw@127.0.0.1:6379/2", "redis://:***@127.0.0.1:6379/2"},
           {"redis://host:6379", "redis://host:6379"},
           {"redis://user@host", "redis://user@host"},
           {"redis://u:p@ss:w@host", "redis://u:***@host"},
           {"redis://u:p%40ss@host/0", "redis://u:***@host/0"},
           {"postgresql://ci:s3cret@db.example:5432/leases?sslmode=require",
            "postgresql://ci:***@db.example:5432/leases?sslmode=require"},
           {"postgres+advisory://ci:s3cret@db/x",
            "postgres+advisory://ci:***@db/x"},
           {"postgresql://db/x?user=ci&password=s3cret&sslmode=require",
            "postgresql://db/x?user=ci&password=***&sslmode=require"},
           {"postgresql://ci@db/x", "postgresql://ci@db/x"},
           {"sqlite:/var/lib/leases.db", "sqlite:/var/lib/leases.db"},
       }) {
    EXPECT_EQ(redact_url(c.in), c.out) << c.in;
  }
}

TEST(RedactUrlTest, HidesKeywordPasswordsInConnectionStrings) {
  for (const Case& c : std::initializer_list<Case>{
           {"host=db user=ci password=s3cret dbname=x",
            "host=db user=ci password=*** dbname=x"},
           {"host=db password = 's3 cr\\'et' port=5",
            "host=db password = *** port=5"},
           {"password='unterminated s3cret", "password=***"},
           {"host=db PASSWORD=s3cret", "host=db PASSWORD=***"},
           {"host=db sslpassword=k3y", "host=db sslpassword=***"},
           // A mistyped password with a space: libpq quotes the second word.
           {"host=db password=se cret port=5", "host=db password=*** port=5"},
           {"host=db user=ci", "host=db user=ci"},
           {"password authentication failed for user \"ci\"",
            "password authentication failed for user \"ci\""},
       }) {
    EXPECT_EQ(redact_url(c.in), c.out) << c.in;
  }
}

TEST(RedactUrlTest, HidesUrlsQuotedInsideAMessage) {
  EXPECT_EQ(
      redact_url(
          "end of string reached in URI: \"postgresql://u:s3cret@[::1/db\""),
      "end of string reached in URI: \"postgresql://u:***@[::1/db\"");
  EXPECT_EQ(redact_url("a redis://a:b@h and redis://c:d@i"),
            "a redis://a:***@h and redis://c:***@i");
}

}  // namespace
}  // namespace tierlock::testing

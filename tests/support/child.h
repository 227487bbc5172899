// tests/support/child.h
//
// Checks that must run in another process (after fork, as another user, with
// lowered limits), reported back to the parent test:
//   ChildOutcome      - what the child reported.
//   run_in_child      - forks, runs a body that returns "" or a failure
//   message. kChildSkip        - prefix of a body's message that asks the test
//   to skip. drop_privileges   - setgroups/setgid/setuid to an unprivileged
//   user.
#ifndef TIERLOCK_TESTS_SUPPORT_CHILD_H_
#define TIERLOCK_TESTS_SUPPORT_CHILD_H_

#include <sys/types.h>

#include <functional>
#include <string>

#include "support/subprocess.h"

namespace tierlock::testing {

inline constexpr char kChildSkip[] = "SKIP: ";

// The "nobody" user and group, which CI's root can switch to.
inline constexpr uid_t kNobodyUid = 65534;
inline constexpr gid_t kNobodyGid = 65534;

struct ChildOutcome {
  ExitStatus status;
  std::string message;  // what the body returned (or why the child failed)
  bool ok() const { return status.code == 0 && message.empty(); }
  bool skipped() const { return status.code == 77; }
};

// Forks; the child runs `body` and exits. `body` returns "" on success, a
// failure description otherwise, or kChildSkip + reason when the check cannot
// run here. The child must not use gtest assertions. Fork only while no other
// thread of the test is running.
ChildOutcome run_in_child(const std::function<std::string()>& body,
                          std::chrono::milliseconds timeout = kTimeout);

// Switches the calling process to `uid`/`gid` with no supplementary groups.
// Returns "" on success, or kChildSkip + reason if not permitted.
std::string drop_privileges(uid_t uid = kNobodyUid, gid_t gid = kNobodyGid);

}  // namespace tierlock::testing

#endif  // TIERLOCK_TESTS_SUPPORT_CHILD_H_

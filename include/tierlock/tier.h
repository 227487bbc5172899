// tierlock/tier.h
//
// Defines lock tiers, the declared order in which a task may take locks, and
// how violations of that order are checked and reported:
//   Tier                      - a level (the order) and a name (for reports).
//   TierCheckMode             - ignore, report, fail or abort on a violation.
//   set_tier_check_mode       - the process-wide mode.
//   HeldLock                  - one lock a task holds (or is taking), and
//                               where it was taken.
//   TierViolation             - the report: both locks, both call sites, the
//                               held stack.
//   set_tier_violation_handler - where reports go (default: stderr).
//
// The rules. A task (a LockContext, see lock_context.h: by default one per
// thread) may take a tiered lock only if its level is strictly greater than
// the level of every tiered lock it holds, including those its parent process
// holds (TIERLOCK_HELD, set by `tierlock run`). acquire_all (dir_lock.h) takes
// several locks of one level at once, in canonical path order. Untiered locks
// are not checked against tiers. tierlock also learns the order in which
// locks (tiered or not) are nested and reports a cycle: A taken while holding
// B, after B was seen taken while holding A.
//
// A refused acquire (kFail) carries ErrorKind::kTierViolation, re-entry
// ErrorKind::kSelfDeadlock (error.h).
//
// Every check is in every build of the library; only the starting mode
// differs. In order of precedence: set_tier_check_mode; the environment
// variable TIERLOCK_CHECKS=abort|fail|report|off, read once when the library
// is loaded; kAbort if any translation unit of the program that includes this
// header is compiled without NDEBUG (a Debug build of the application, even
// against a Release library; define TIERLOCK_NO_DEBUG_DEFAULT to opt out);
// kAbort if the library itself was built with TIERLOCK_DEBUG_CHECKS; else
// kIgnore.
// Every check happens before the acquire blocks, so a would-be deadlock is
// reported instead of hanging. Only an acquire that can wait is checked: a
// try (try_acquire, a timeout <= 0, try_lock, try_lock_shared) cannot
// deadlock, so it is never reported, refused or learned from, even in tier
// inversion (a held try still gets edges to what is taken under it). Taking
// a lock the task already holds, from any thread, is not a violation but an
// error returned in every mode: kFailedPrecondition, "already holds it".
// While a LockContext::Scope runs on a thread, the thread's own holds (and
// outer Scopes') count for the learned order. docs/design.md, "The rules, in
// one place", has the table.
//
// Cost: with the mode kIgnore an acquire pays one relaxed atomic load and a
// branch. With checks on, an in-order acquire records the hold in its
// context (a short spin lock, no allocation for the first few holds) and one
// thread-local lookup of the nesting; only a nesting never seen before takes
// a global lock.
#ifndef TIERLOCK_TIER_H_
#define TIERLOCK_TIER_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tierlock/mode.h"
#include "tierlock/source_location.h"

namespace tierlock {

// Tier
//
// A lock's place in the declared lock order. A task may only take a lock
// whose level is strictly greater than that of every tiered lock it holds
// (the rules at the top of this file). Untiered locks are not order-checked
// against tiers.
//
// DirLock::open copies the name, so a Tier built from a temporary string is
// fine to pass; the copy lives until the process exits (tier names are few).
//
// Example:
//   inline constexpr tierlock::Tier kWorkspace{10, "workspace"};
//   inline constexpr tierlock::Tier kPackage{20, "package"};
//   auto ws = tierlock::DirLock::open("/ws", {.tier = kWorkspace});
struct Tier {
  int level = 0;
  std::string_view name;

  friend bool operator==(const Tier& a, const Tier& b) {
    return a.level == b.level && a.name == b.name;
  }
};

// TierCheckMode
//
// What an acquire that breaks the order does. In every mode but kIgnore the
// handler (set_tier_violation_handler) receives the report first.
enum class TierCheckMode {
  kIgnore,  // check nothing, record nothing
  kReport,  // report, then acquire as if nothing happened
  kFail,    // report, then fail the acquire with kFailedPrecondition, taking
            // nothing
  kAbort,   // report, then std::abort()
};

// Sets the process-wide check mode; applies to acquires that start after the
// call, and overrides TIERLOCK_CHECKS and every default (see the top of this
// file). Holds taken while the mode was kIgnore are not known to later
// checks. Thread-safe.
void set_tier_check_mode(TierCheckMode mode);
// Returns the current mode. Thread-safe.
TierCheckMode tier_check_mode();
// Returns true if the library was built with TIERLOCK_DEBUG_CHECKS: then its
// own default mode is kAbort. (The learned order is in every build.)
bool tier_debug_checks();

// Makes kAbort the starting mode unless TIERLOCK_CHECKS chose one; returns
// true. This header calls it once per program, before main, when any
// translation unit of the program is compiled without NDEBUG (the inline
// variable below): the consumer's own build decides, like assert, not how
// the installed library was built. Calling it directly has the same effect.
bool request_tier_debug_default() noexcept;
#if !defined(NDEBUG) && !defined(TIERLOCK_NO_DEBUG_DEFAULT)
inline const bool kTierDebugDefaultRequested = request_tier_debug_default();
#endif

// HeldLock
//
// One lock in a report or a held stack: a hold, or the acquire being checked.
struct HeldLock {
  std::filesystem::path lock_file;
  std::optional<Tier> tier;  // nullopt: untiered
  Mode mode = Mode::kExclusive;
  SourceLocation where;  // the acquire's call site (empty if inherited)
  std::string task;      // the LockContext's name (see lock_context.h)
  std::int64_t inherited_from_pid = 0;  // non-zero: held by that parent process
};

// TierViolation
//
// A lock-order violation, as passed to the handler. to_string() renders the
// whole report as one readable block; it, and the kFailedPrecondition
// message, show paths, tier, task and function names through escape_text
// (text.h). The fields themselves keep the exact bytes.
struct TierViolation {
  enum class Kind {
    kTierOrder,     // taking a lower tier than one held
    kSameTier,      // taking a second lock of a tier held (outside acquire_all)
    kLearnedCycle,  // nesting that reverses an order seen before (debug checks)
  };
  // One nesting seen before: `inner` was taken while `outer` was held.
  struct Nesting {
    HeldLock outer;
    HeldLock inner;
  };
  Kind kind = Kind::kTierOrder;
  std::string task;            // who is acquiring (never a try: see above)
  HeldLock acquiring;          // the lock being taken, at its call site
  HeldLock conflicting;        // the held lock it conflicts with
  std::vector<HeldLock> held;  // everything the task holds, oldest first
  std::vector<Nesting>
      earlier;  // kLearnedCycle: the chain acquiring ~> conflicting seen before

  std::string to_string() const;
};

// Sets the one handler that receives every violation report (replacing the
// previous one); an empty function restores the default, which writes
// to_string() to stderr. The handler runs on the acquiring thread, before
// the acquire fails, aborts or goes on; it must not take tierlock locks.
// Thread-safe.
void set_tier_violation_handler(
    std::function<void(const TierViolation&)> handler);

}  // namespace tierlock

#endif  // TIERLOCK_TIER_H_

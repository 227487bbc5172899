// Lock-order reports: see tier_report.h.
#include "tier/tier_report.h"

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/error_kind.h"
#include "base/mutex.h"
#include "base/string_util.h"
#include "platform/platform.h"
#include "tier/tier_names.h"
#include "tierlock/lock_context.h"
#include "tierlock/text.h"

namespace tierlock {
namespace internal {
namespace {

Mutex& handler_mu() {
  static auto* mu = new Mutex();
  return *mu;
}
std::function<void(const TierViolation&)>& handler_slot() {
  static auto* h = new std::function<void(const TierViolation&)>();
  return *h;
}

}  // namespace

HeldLock held_lock(const AcquireSite& site, std::string task) {
  HeldLock h;
  h.lock_file = site.lock.display();
  h.tier = site.tier;
  h.mode = site.mode;
  h.where = site.where;
  h.task = std::move(task);
  return h;
}

HeldLock held_lock(const OrderGraph::Site& site) {
  HeldLock h;
  h.lock_file = site.lock_file;
  h.tier = site.tier;
  h.mode = site.mode;
  h.where = site.where;
  h.task = site.task;
  return h;
}

HeldLock held_lock(const InheritedHold& inherited) {
  HeldLock h;
  h.lock_file = inherited.lock_file;
  h.tier = Tier{inherited.level, intern_tier_name(inherited.name)};
  h.mode = inherited.mode;
  h.inherited_from_pid = inherited.pid;
  return h;
}

namespace {

// Reports show paths, tier, task and function names through escape_text: a
// hostile name must not drive the terminal that reads the report.
std::string describe(const HeldLock& h) {
  std::string s =
      absl::StrCat("'", escape_text(platform::path_text(h.lock_file)), "'");
  if (h.tier) {
    absl::StrAppend(&s, " [tier ", h.tier->level);
    if (!h.tier->name.empty()) {
      absl::StrAppend(&s, " '", escape_text(h.tier->name), "'");
    }
    absl::StrAppend(&s, ", ", to_absl(mode_name(h.mode)), "]");
  } else {
    absl::StrAppend(&s, " [untiered, ", to_absl(mode_name(h.mode)), "]");
  }
  return s;
}

std::string where(const HeldLock& h) {
  if (h.inherited_from_pid != 0) {
    return absl::StrCat("held by the parent process, pid ",
                        h.inherited_from_pid, " (from ", to_absl(kHeldEnvVar),
                        ")");
  }
  std::string fn = h.where.function_name();
  return absl::StrCat(
      escape_text(h.where.file_name()), ":", h.where.line(), " in ",
      fn.empty() ? "?" : escape_text(fn),
      h.task.empty() ? "" : absl::StrCat(" by '", escape_text(h.task), "'"));
}

std::string tier_text(const HeldLock& h) {
  if (!h.tier) return "untiered";
  return h.tier->name.empty() ? absl::StrCat("tier ", h.tier->level)
                              : absl::StrCat("tier ", h.tier->level, " '",
                                             escape_text(h.tier->name), "'");
}

std::string summary(const TierViolation& v) {
  switch (v.kind) {
    case TierViolation::Kind::kTierOrder:
      return absl::StrCat("lock order violation: taking ",
                          describe(v.acquiring), " while holding ",
                          describe(v.conflicting),
                          ": tiers must be taken in strictly increasing order");
    case TierViolation::Kind::kSameTier:
      return absl::StrCat("lock order violation: taking ",
                          describe(v.acquiring), " while holding ",
                          describe(v.conflicting),
                          " of the same tier: take both with acquire_all");
    case TierViolation::Kind::kLearnedCycle:
      return absl::StrCat(
          "lock order violation: taking ", describe(v.acquiring),
          " while holding ", describe(v.conflicting),
          " reverses the order in which they were nested before");
  }
  return "lock order violation";
}

void deliver(const TierViolation& v) {
  std::function<void(const TierViolation&)> handler;
  {
    UniqueLock lock(handler_mu());
    handler = handler_slot();
  }
  if (handler) {
    handler(v);
    return;
  }
  std::string text = v.to_string();
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

}  // namespace

absl::Status report_violation(const TierViolation& v, TierCheckMode mode) {
  deliver(v);
  switch (mode) {
    case TierCheckMode::kAbort:
      std::abort();
    case TierCheckMode::kFail:
      return with_kind(absl::FailedPreconditionError(absl::StrCat(
                           summary(v), " (acquire at ", where(v.acquiring),
                           "; held lock taken at ", where(v.conflicting), ")")),
                       ErrorKind::kTierViolation);
    case TierCheckMode::kIgnore:
    case TierCheckMode::kReport:
      break;
  }
  return absl::OkStatus();
}

absl::Status reentry_error(const AcquireSite& site, const AcquireSite& held,
                           const std::string& task) {
  return with_kind(
      absl::FailedPreconditionError(absl::StrCat(
          "acquire '", escape_text(platform::path_text(site.lock.display())),
          "' (", to_absl(mode_name(site.mode)), ") at ",
          where(held_lock(site, {})), ": task '", escape_text(task),
          "' already holds it (", to_absl(mode_name(held.mode)), ", taken at ",
          where(held_lock(held, task)),
          "); waiting for itself would deadlock")),
      ErrorKind::kSelfDeadlock);
}

}  // namespace internal

void set_tier_violation_handler(
    std::function<void(const TierViolation&)> handler) {
  internal::UniqueLock lock(internal::handler_mu());
  internal::handler_slot() = std::move(handler);
}

std::string TierViolation::to_string() const {
  using internal::describe;
  using internal::where;
  std::string s = "======================================================\n";
  absl::StrAppend(&s, "tierlock: ", internal::summary(*this), "\n");
  s += "------------------------------------------------------\n";
  absl::StrAppend(&s, "task '", escape_text(task), "' is taking:\n  ",
                  describe(acquiring), "\n  at ", where(acquiring), "\n");
  absl::StrAppend(&s, "while holding:\n  ", describe(conflicting),
                  "\n  taken at ", where(conflicting), "\n");
  if (kind == Kind::kLearnedCycle && !earlier.empty()) {
    s += "\nbut the opposite order was seen before:\n";
    for (const Nesting& n : earlier) {
      absl::StrAppend(&s, "  ", describe(n.inner), " taken at ", where(n.inner),
                      "\n    while holding ", describe(n.outer), " taken at ",
                      where(n.outer), "\n");
    }
    s += "two tasks taking them in these two orders at once can deadlock.\n";
  }
  absl::StrAppend(&s, "\nlocks held by task '", escape_text(task), "' (",
                  held.size(), ", oldest first):\n");
  for (std::size_t i = 0; i < held.size(); ++i) {
    absl::StrAppend(&s, "  #", i, " ", describe(held[i]), "\n     taken at ",
                    where(held[i]), "\n");
  }
  switch (kind) {
    case Kind::kTierOrder:
      absl::StrAppend(&s, "\nfix: take ", internal::tier_text(acquiring),
                      " before ", internal::tier_text(conflicting),
                      ", or release ", describe(conflicting), " first.\n");
      break;
    case Kind::kSameTier:
      absl::StrAppend(&s,
                      "\nfix: take locks of one tier together with "
                      "tierlock::acquire_all (canonical path order), or "
                      "release ",
                      describe(conflicting), " first.\n");
      break;
    case Kind::kLearnedCycle:
      s += "\nfix: always nest these locks in one order (give them tiers to "
           "have it checked).\n";
      break;
  }
  s += "======================================================\n";
  return s;
}

}  // namespace tierlock

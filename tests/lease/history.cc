// tests/lease/history.cc -- see history.h.
#include "lease/history.h"

#include <signal.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lease/backend_spec.h"
#include "lease/fenced.h"
#include "support/subprocess.h"

#ifndef TIERLOCK_LEASE_HELPER_PATH
#error "TIERLOCK_LEASE_HELPER_PATH must be defined"
#endif

namespace tierlock::testing {
namespace {

using namespace std::chrono_literals;

struct Hold {
  std::uint64_t token = 0;
  std::int64_t start = 0, end = 0, valid_until = 0;
  int wrote = 0, released = 0;
  int worker = 0;
};

}  // namespace

std::string lease_helper_path() { return TIERLOCK_LEASE_HELPER_PATH; }

std::string check_history(const std::string& spec, const std::string& key, int workers,
                          int iterations, const std::filesystem::path& dir, bool fencing) {
  const std::filesystem::path fence = dir / "fence";
  std::filesystem::create_directories(fence);
  std::vector<Process> procs;
  for (int w = 0; w < workers; ++w) {
    procs.push_back(Process::spawn({lease_helper_path(), "worker", spec, key,
                                    std::to_string(iterations), "30000", fence.string(),
                                    (dir / ("log" + std::to_string(w))).string()}));
  }
  std::string problems;
  for (int w = 0; w < workers; ++w) {
    std::optional<std::string> line = procs[static_cast<std::size_t>(w)].read_line(120s);
    ExitStatus st = procs[static_cast<std::size_t>(w)].wait(30s);
    if (!line || *line != "done" || st.code != 0) {
      absl::StrAppend(&problems, "worker ", w, ": ", line.value_or("(no output)"), " ",
                      st.describe(), "\n");
    }
  }
  if (!problems.empty()) return problems;
  std::vector<Hold> holds;
  for (int w = 0; w < workers; ++w) {
    std::ifstream in(dir / ("log" + std::to_string(w)));
    Hold h;
    h.worker = w;
    while (in >> h.token >> h.start >> h.end >> h.valid_until >> h.wrote >> h.released) {
      holds.push_back(h);
    }
  }
  if (holds.size() != static_cast<std::size_t>(workers * iterations)) {
    return absl::StrCat("logged ", holds.size(), " holds, expected ", workers * iterations);
  }
  std::sort(holds.begin(), holds.end(),
            [](const Hold& a, const Hold& b) { return a.start < b.start; });
  // Overlap: a hold that starts before an earlier one ended, while that
  // earlier one was still valid.
  for (std::size_t j = 1; j < holds.size(); ++j) {
    for (std::size_t i = 0; i < j; ++i) {
      const Hold& a = holds[i];
      const Hold& b = holds[j];
      if (b.start < a.end && b.start < a.valid_until) {
        absl::StrAppend(&problems, "overlap: worker ", a.worker, " token ", a.token, " [",
                        a.start, ", ", a.end, "] and worker ", b.worker, " token ", b.token,
                        " from ", b.start, "\n");
      }
    }
    if (fencing && holds[j].token <= holds[j - 1].token) {
      absl::StrAppend(&problems, "token ", holds[j].token, " granted after ",
                      holds[j - 1].token, "\n");
    }
  }
  for (const Hold& h : holds) {
    if (!h.wrote) absl::StrAppend(&problems, "fenced write of token ", h.token, " rejected\n");
    if (!h.released) absl::StrAppend(&problems, "release of token ", h.token, " said lost\n");
  }
  if (fencing) {
    const std::vector<std::uint64_t> writes = fenced_history(fence);
    if (writes.size() != holds.size()) {
      absl::StrAppend(&problems, "fenced resource has ", writes.size(), " writes\n");
    }
  }
  return problems;
}

namespace {

absl::StatusOr<LeaseLock> lock_for(const std::string& spec, std::chrono::milliseconds ttl) {
  absl::StatusOr<std::shared_ptr<LeaseBackend>> b = make_backend_from_spec(spec);
  if (!b.ok()) return b.status();
  LeaseOptions o;
  if ((*b)->capabilities().ttl) o.ttl = ttl;
  return LeaseLock::create(*b, o);
}

}  // namespace

std::string check_sigkill(const std::string& spec, const std::string& key,
                          std::chrono::milliseconds ttl, std::chrono::milliseconds bound) {
  absl::StatusOr<LeaseLock> locks = lock_for(spec, 30s);
  if (!locks.ok()) return locks.status().ToString();
  Process holder = Process::spawn({lease_helper_path(), "hold", spec, key,
                                   std::to_string(ttl.count()), "--auto-renew"});
  std::optional<std::string> held = holder.read_line();
  if (!held || held->rfind("held ", 0) != 0) return "holder: " + held.value_or("(nothing)");
  absl::StatusOr<std::optional<Lease>> busy = locks->try_acquire(key);
  if (!busy.ok() || busy->has_value()) return "the key was not held by the helper";
  ::kill(holder.pid(), SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  holder.wait();
  AcquireOptions o;
  o.timeout = bound + 10s;
  absl::StatusOr<Lease> lease = locks->acquire(key, o);
  const auto took = std::chrono::steady_clock::now() - killed;
  if (!lease.ok()) return lease.status().ToString();
  if (took > bound) {
    return absl::StrCat("free only after ",
                        std::chrono::duration_cast<std::chrono::milliseconds>(took).count(),
                        " ms (bound ", bound.count(), " ms)");
  }
  return "";
}

std::string check_sigstop(const std::string& spec, const std::string& key,
                          std::chrono::milliseconds ttl, const std::filesystem::path& dir,
                          std::string* figures) {
  const std::filesystem::path fence = dir / "fence";
  std::filesystem::create_directories(fence);
  absl::StatusOr<LeaseLock> locks = lock_for(spec, 30s);
  if (!locks.ok()) return locks.status().ToString();
  Process holder = Process::spawn({lease_helper_path(), "hold", spec, key,
                                   std::to_string(ttl.count()), "--auto-renew"});
  std::optional<std::string> held = holder.read_line();
  if (!held || held->rfind("held ", 0) != 0) return "holder: " + held.value_or("(nothing)");
  ::kill(holder.pid(), SIGSTOP);
  const auto stopped = std::chrono::steady_clock::now();
  // The paused holder cannot renew: the key comes free after its TTL.
  AcquireOptions o;
  o.timeout = ttl + 20s;
  absl::StatusOr<Lease> lease = locks->acquire(key, o);
  const auto granted = std::chrono::steady_clock::now();
  if (!lease.ok()) {
    ::kill(holder.pid(), SIGCONT);
    return "taking over from the paused holder: " + lease.status().ToString();
  }
  absl::StatusOr<bool> wrote = fenced_write(fence, *lease->token());
  if (!wrote.ok() || !*wrote) return "the new owner's fenced write failed";
  ::kill(holder.pid(), SIGCONT);
  const auto continued = std::chrono::steady_clock::now();
  // Resumed, the holder learns of the loss from its own clock, without
  // asking the service: its timer fires lost() at once.
  holder.write_line("wait-lost 5000");
  std::optional<std::string> lost_line = holder.read_line();
  std::int64_t lost_ns = 0;
  if (!lost_line || lost_line->rfind("lost=1 at_ns=", 0) != 0 ||
      !absl::SimpleAtoi(lost_line->substr(13, lost_line->find(' ', 13) - 13), &lost_ns)) {
    return "resumed holder: " + lost_line.value_or("(nothing)");
  }
  const auto lost_at = std::chrono::steady_clock::time_point(std::chrono::nanoseconds(lost_ns));
  auto ms = [](std::chrono::nanoseconds d) {
    return std::chrono::duration<double, std::milli>(d).count();
  };
  if (figures != nullptr) {
    *figures = absl::StrFormat(
        "stop->other's grant %.0f ms, SIGCONT->lost() %.1f ms, grant->lost() %.0f ms (the paused holder cannot know: fencing rejects its write)",
        ms(granted - stopped), ms(lost_at - continued), ms(lost_at - granted));
  }
  if (lost_at - continued > 500ms) {
    return absl::StrCat("lost() fired ", ms(lost_at - continued), " ms after SIGCONT");
  }
  holder.write_line("report " + fence.string());
  std::optional<std::string> report = holder.read_line();
  const std::string want = "lost=1 write=rejected extend=false release=false";
  if (!report || *report != want) {
    return absl::StrCat("paused holder reported '", report.value_or("(nothing)"),
                        "', want '", want, "'");
  }
  if (!lease->held()) return "the new owner lost the lease";
  absl::StatusOr<bool> released = lease->release();
  if (!released.ok() || !*released) return "the new owner's lease was deleted by the old one";
  return "";
}

}  // namespace tierlock::testing

// tests/lease/history.cc -- see history.h.
#include "lease/history.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lease/backend_spec.h"
#include "lease/fenced.h"
#include "support/subprocess.h"
#include "support/wait.h"

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

std::string check_history(const std::string& spec, const std::string& key,
                          int workers, int iterations,
                          const std::filesystem::path& dir, bool fencing) {
  const std::filesystem::path fence = dir / "fence";
  std::filesystem::create_directories(fence);
  std::vector<Process> procs;
  for (int w = 0; w < workers; ++w) {
    procs.push_back(
        Process::spawn({lease_helper_path(), "worker", spec, key,
                        std::to_string(iterations), "30000", fence.string(),
                        (dir / ("log" + std::to_string(w))).string()}));
  }
  std::string problems;
  for (int w = 0; w < workers; ++w) {
    std::optional<std::string> line =
        procs[static_cast<std::size_t>(w)].read_line(120s);
    ExitStatus st = procs[static_cast<std::size_t>(w)].wait(30s);
    if (!line || *line != "done" || st.code != 0) {
      absl::StrAppend(&problems, "worker ", w, ": ",
                      line.value_or("(no output)"), " ", st.describe(), "\n");
    }
  }
  if (!problems.empty()) return problems;
  std::vector<Hold> holds;
  for (int w = 0; w < workers; ++w) {
    std::ifstream in(dir / ("log" + std::to_string(w)));
    Hold h;
    h.worker = w;
    while (in >> h.token >> h.start >> h.end >> h.valid_until >> h.wrote >>
           h.released) {
      holds.push_back(h);
    }
  }
  if (holds.size() != static_cast<std::size_t>(workers * iterations)) {
    return absl::StrCat("logged ", holds.size(), " holds, expected ",
                        workers * iterations);
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
        absl::StrAppend(&problems, "overlap: worker ", a.worker, " token ",
                        a.token, " [", a.start, ", ", a.end, "] and worker ",
                        b.worker, " token ", b.token, " from ", b.start, "\n");
      }
    }
    if (fencing && holds[j].token <= holds[j - 1].token) {
      absl::StrAppend(&problems, "token ", holds[j].token, " granted after ",
                      holds[j - 1].token, "\n");
    }
  }
  for (const Hold& h : holds) {
    if (!h.wrote)
      absl::StrAppend(&problems, "fenced write of token ", h.token,
                      " rejected\n");
    if (!h.released)
      absl::StrAppend(&problems, "release of token ", h.token, " said lost\n");
  }
  if (fencing) {
    const std::vector<std::uint64_t> writes = fenced_history(fence);
    if (writes.size() != holds.size()) {
      absl::StrAppend(&problems, "fenced resource has ", writes.size(),
                      " writes\n");
    }
  }
  return problems;
}

namespace {

absl::StatusOr<LeaseLock> lock_for(const std::string& spec,
                                   std::chrono::milliseconds ttl) {
  absl::StatusOr<std::shared_ptr<LeaseBackend>> b =
      make_backend_from_spec(spec);
  if (!b.ok()) return b.status();
  LeaseOptions o;
  if ((*b)->capabilities().ttl) o.ttl = ttl;
  return LeaseLock::create(*b, o);
}

}  // namespace

std::string check_sigkill(const std::string& spec, const std::string& key,
                          std::chrono::milliseconds ttl,
                          std::chrono::milliseconds bound) {
  absl::StatusOr<LeaseLock> locks = lock_for(spec, 30s);
  if (!locks.ok()) return locks.status().ToString();
  Process holder =
      Process::spawn({lease_helper_path(), "hold", spec, key,
                      std::to_string(ttl.count()), "--auto-renew"});
  std::optional<std::string> held = holder.read_line();
  if (!held || held->rfind("held ", 0) != 0)
    return "holder: " + held.value_or("(nothing)");
  absl::StatusOr<std::optional<Lease>> busy = locks->try_acquire(key);
  if (!busy.ok() || busy->has_value())
    return "the key was not held by the helper";
  ::kill(holder.pid(), SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  holder.wait();
  AcquireOptions o;
  o.timeout = bound + 10s;
  absl::StatusOr<Lease> lease = locks->acquire(key, o);
  const auto took = std::chrono::steady_clock::now() - killed;
  if (!lease.ok()) return lease.status().ToString();
  if (took > bound) {
    return absl::StrCat(
        "free only after ",
        std::chrono::duration_cast<std::chrono::milliseconds>(took).count(),
        " ms (bound ", bound.count(), " ms)");
  }
  return "";
}

std::string check_sigstop(const std::string& spec, const std::string& key,
                          std::chrono::milliseconds ttl,
                          const std::filesystem::path& dir,
                          std::string* figures) {
  const std::filesystem::path fence = dir / "fence";
  std::filesystem::create_directories(fence);
  absl::StatusOr<LeaseLock> locks = lock_for(spec, 30s);
  if (!locks.ok()) return locks.status().ToString();
  Process holder =
      Process::spawn({lease_helper_path(), "hold", spec, key,
                      std::to_string(ttl.count()), "--auto-renew"});
  std::optional<std::string> held = holder.read_line();
  if (!held || held->rfind("held ", 0) != 0)
    return "holder: " + held.value_or("(nothing)");
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
      !absl::SimpleAtoi(lost_line->substr(13, lost_line->find(' ', 13) - 13),
                        &lost_ns)) {
    return "resumed holder: " + lost_line.value_or("(nothing)");
  }
  const auto lost_at =
      std::chrono::steady_clock::time_point(std::chrono::nanoseconds(lost_ns));
  auto ms = [](std::chrono::nanoseconds d) {
    return std::chrono::duration<double, std::milli>(d).count();
  };
  if (figures != nullptr) {
    *figures = absl::StrFormat(
        "stop->other's grant %.0f ms, SIGCONT->lost() %.1f ms, grant->lost() "
        "%.0f ms (the paused holder cannot know: fencing rejects its write)",
        ms(granted - stopped), ms(lost_at - continued), ms(lost_at - granted));
  }
  if (lost_at - continued > 500ms) {
    return absl::StrCat("lost() fired ", ms(lost_at - continued),
                        " ms after SIGCONT");
  }
  holder.write_line("report " + fence.string());
  std::optional<std::string> report = holder.read_line();
  const std::string want = "lost=1 write=rejected extend=false release=false";
  if (!report || *report != want) {
    return absl::StrCat("paused holder reported '",
                        report.value_or("(nothing)"), "', want '", want, "'");
  }
  if (!lease->held()) return "the new owner lost the lease";
  absl::StatusOr<bool> released = lease->release();
  if (!released.ok() || !*released)
    return "the new owner's lease was deleted by the old one";
  return "";
}

// ------------------------------------------------ histories under network
// faults

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t now_ns() { return Clock::now().time_since_epoch().count(); }

struct FaultWrite {
  std::int64_t start = 0;  // before the held() check that allowed it
  bool accepted = false;
};

struct FaultHold {
  int worker = 0;
  std::uint64_t token = 0;
  std::int64_t sent = 0, granted = 0;  // winning try_acquire: called / returned
  std::int64_t end = 0;                // end of the unfenced window
  bool ended_by_loss = false;          // lost() fired before release() began
  // The grant came back after its valid_until() (its reply was held up): the
  // lease was lost on arrival, held() never true, so no window at all.
  bool expired_on_arrival = false;
  std::int64_t lost_at = 0;  // 0: lost() did not fire
  std::vector<FaultWrite> writes;
};

// What the workers share with the checker. Lease errors are outcomes here
// (counted); `errors` are failures of a check made while running.
struct FaultRun {
  const FaultHistoryOptions* options = nullptr;
  std::filesystem::path fence;
  std::atomic<bool> stop{false};
  std::atomic<int> holder{-1};  // the worker holding the key now, or -1
  std::atomic<int> acquire_errors{0};
  std::atomic<std::int64_t> max_held{0};
  std::mutex mu;
  std::vector<FaultHold> holds;
  std::vector<std::int64_t> last_grant_sent;  // per worker, 0: none yet
  std::vector<std::string> errors;

  void error(std::string what) {
    std::lock_guard<std::mutex> lk(mu);
    errors.push_back(std::move(what));
  }
};

void fault_worker(int w, std::shared_ptr<LeaseBackend> backend, FaultRun& run) {
  const FaultHistoryOptions& o = *run.options;
  absl::StatusOr<LeaseLock> locks =
      LeaseLock::create(std::move(backend), {.ttl = o.ttl, .auto_renew = true});
  if (!locks.ok())
    return run.error(
        absl::StrCat("worker ", w, ": ", locks.status().ToString()));
  std::minstd_rand rng(static_cast<unsigned>(7919 * (w + 1)));
  // Pacing between polls and writes (not a synchronisation): jittered so
  // that workers interleave differently from run to run.
  auto pause = [&](int lo_ms, int hi_ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(
        std::uniform_int_distribution<int>(lo_ms, hi_ms)(rng)));
  };
  const int ttl_ms = static_cast<int>(o.ttl.count());
  while (!run.stop.load()) {
    const std::int64_t sent = now_ns();
    absl::StatusOr<std::optional<Lease>> got = locks->try_acquire(o.key);
    const std::int64_t granted = now_ns();
    if (!got.ok()) {
      ++run.acquire_errors;  // the worker's network is faulted: try again
      pause(5, 20);
      continue;
    }
    if (!got->has_value()) {
      pause(2, 8);
      continue;
    }
    Lease& lease = **got;
    FaultHold h;
    h.worker = w;
    h.token = lease.token().value_or(0);
    h.sent = sent;
    h.granted = granted;
    h.expired_on_arrival =
        lease.valid_until().time_since_epoch().count() <= granted;
    auto lost_at = std::make_shared<std::atomic<std::int64_t>>(0);
    std::stop_callback on_lost(lease.lost(),
                               [lost_at] { lost_at->store(now_ns()); });
    run.holder.store(w);
    // Held over several renewals (every ttl/3), and mostly longer than a
    // fault on the holder takes to lose the lease (at most one ttl).
    const std::int64_t hold_until =
        granted +
        std::chrono::nanoseconds(
            std::chrono::milliseconds(
                std::uniform_int_distribution<int>(ttl_ms, 3 * ttl_ms)(rng)))
            .count();
    bool saw_not_held = false;
    while (!run.stop.load() && now_ns() < hold_until) {
      const std::int64_t start = now_ns();
      const bool held = lease.held();
      const std::int64_t took = now_ns() - start;
      std::int64_t prev = run.max_held.load();
      while (took > prev && !run.max_held.compare_exchange_weak(prev, took)) {
      }
      if (!held) {
        saw_not_held = true;
        break;
      }
      absl::StatusOr<bool> wrote = fenced_write(run.fence, h.token);
      if (!wrote.ok()) {
        run.error(absl::StrCat("worker ", w, ": fenced write of token ",
                               h.token, ": ", wrote.status().ToString()));
        break;
      }
      h.writes.push_back({start, *wrote});
      if (!*wrote) break;  // a newer token has written: this holder is stale
      pause(5, 15);
    }
    // held() turns false at valid_until(); lost() must follow within the
    // timer's slack (bounded here far above it).
    if (saw_not_held && !wait_until([&] { return lost_at->load() != 0; }, 2s)) {
      run.error(
          absl::StrCat("worker ", w, " token ", h.token,
                       ": held() false but lost() did not fire within 2 s"));
    }
    int me = w;
    run.holder.compare_exchange_strong(me, -1);
    const std::int64_t release_start = now_ns();
    (void)lease.release();  // false or an error when lost: both fine here
    h.lost_at = lost_at->load();
    h.ended_by_loss = h.lost_at != 0 && h.lost_at < release_start;
    // The holder's belief ends at valid_until() (held() says false from then
    // on, with no timer involved) or at an earlier lost() (a renewal that
    // failed). lost()'s own lateness behind valid_until() is the timer's
    // scheduling slack, checked above, not part of the window.
    const std::int64_t valid_until =
        lease.valid_until().time_since_epoch().count();
    h.end = h.ended_by_loss ? std::min(h.lost_at, valid_until) : release_start;
    {
      std::lock_guard<std::mutex> lk(run.mu);
      run.holds.push_back(std::move(h));
      run.last_grant_sent[static_cast<std::size_t>(w)] = sent;
    }
    pause(10, 40);  // let the others in
  }
}

double ms_of(std::int64_t ns) { return static_cast<double>(ns) / 1e6; }

}  // namespace

std::string FaultHistoryResult::summary() const {
  const std::string gap =
      min_loss_to_next_grant == std::chrono::nanoseconds::max()
          ? std::string("none")
          : absl::StrFormat("%.1f ms", ms_of(min_loss_to_next_grant.count()));
  return absl::StrFormat(
      "grants %d (%d ended by lost(), %d expired on arrival), faults %d "
      "(freeze %d, drop "
      "replies %d, cut %d; %d on the holder), acquire errors %d, writes %d "
      "accepted / %d "
      "rejected, min lost()->next grant sent %s (%d grants in flight across "
      "the previous end), held() max %.3f ms",
      grants, losses, expired_on_arrival, freezes + drops + cuts, freezes,
      drops, cuts, faults_on_holder, acquire_errors, writes_accepted,
      writes_rejected, gap, in_flight_at_end, ms_of(max_held_latency.count()));
}

FaultHistoryResult check_fault_history(std::vector<FaultHistoryWorker> workers,
                                       const FaultHistoryOptions& options) {
  FaultHistoryResult out;
  FaultRun run;
  run.options = &options;
  run.fence = options.dir / "fence";
  std::filesystem::create_directories(run.fence);
  run.last_grant_sent.assign(workers.size(), 0);
  const auto fault_for =
      options.fault_for.count() > 0 ? options.fault_for : options.ttl * 3 / 2;
  const auto gap = options.gap.count() > 0 ? options.gap : options.ttl / 2;
  std::vector<int> faultable;
  for (std::size_t w = 0; w < workers.size(); ++w) {
    if (workers[w].freeze && workers[w].drop_replies && workers[w].cut) {
      faultable.push_back(static_cast<int>(w));
    }
  }
  const std::int64_t t0 = now_ns();
  std::vector<std::thread> threads;
  for (std::size_t w = 0; w < workers.size(); ++w) {
    threads.emplace_back(fault_worker, static_cast<int>(w), workers[w].backend,
                         std::ref(run));
  }
  // The schedule: one fault at a time, on the holder when it is faultable
  // (that is where a fault can break exclusion), else on the next worker.
  std::vector<std::int64_t> last_heal(workers.size(), 0);
  const auto schedule_end = Clock::now() + options.run;
  for (int i = 0;
       !faultable.empty() && Clock::now() + fault_for + gap < schedule_end;
       ++i) {
    int target = run.holder.load();
    if (std::find(faultable.begin(), faultable.end(), target) ==
        faultable.end()) {
      target = faultable[static_cast<std::size_t>(i) % faultable.size()];
    } else {
      ++out.faults_on_holder;
    }
    FaultHistoryWorker& wk = workers[static_cast<std::size_t>(target)];
    switch (i % 3) {
      case 0:
        wk.freeze(true);
        ++out.freezes;
        std::this_thread::sleep_for(fault_for);  // schedule pacing
        wk.freeze(false);
        break;
      case 1:
        // The requests still reach the server; the worker must give the
        // connection up by itself (its calls time out).
        wk.drop_replies();
        ++out.drops;
        std::this_thread::sleep_for(fault_for);
        break;
      default:
        wk.cut();
        ++out.cuts;
        break;
    }
    last_heal[static_cast<std::size_t>(target)] = now_ns();
    std::this_thread::sleep_for(gap);
  }
  // (c) No wedged state: each faulted worker is granted the key again.
  const bool recovered = wait_until(
      [&] {
        std::lock_guard<std::mutex> lk(run.mu);
        for (std::size_t w = 0; w < workers.size(); ++w) {
          if (last_heal[w] != 0 && run.last_grant_sent[w] <= last_heal[w])
            return false;
        }
        return true;
      },
      options.recover);
  run.stop.store(true);
  for (std::thread& t : threads) t.join();
  std::string& bad = out.problems;
  for (const std::string& e : run.errors) absl::StrAppend(&bad, e, "\n");
  if (!recovered) {
    for (std::size_t w = 0; w < workers.size(); ++w) {
      if (last_heal[w] != 0 && run.last_grant_sent[w] <= last_heal[w]) {
        absl::StrAppend(&bad, "key '", options.key, "': worker ", w,
                        " was not granted it again within ",
                        options.recover.count(), " ms of its last heal at +",
                        ms_of(last_heal[w] - t0), " ms (wedged?)\n");
      }
    }
  }

  std::vector<FaultHold>& holds = run.holds;
  std::sort(
      holds.begin(), holds.end(),
      [](const FaultHold& a, const FaultHold& b) { return a.token < b.token; });
  out.grants = static_cast<int>(holds.size());
  out.acquire_errors = run.acquire_errors.load();
  out.max_held_latency = std::chrono::nanoseconds(run.max_held.load());
  auto at = [&](std::int64_t ns) {
    return absl::StrFormat("+%.1fms", ms_of(ns - t0));
  };
  int reported = 0;
  auto report = [&](const std::string& what) {
    if (++reported <= 20)
      absl::StrAppend(&bad, "key '", options.key, "': ", what, "\n");
  };
  for (std::size_t j = 0; j < holds.size(); ++j) {
    const FaultHold& b = holds[j];
    if (b.ended_by_loss) ++out.losses;
    if (b.expired_on_arrival) ++out.expired_on_arrival;
    if (b.expired_on_arrival && !b.writes.empty()) {
      report(absl::StrCat(
          "worker ", b.worker, " token ", b.token,
          " wrote although its grant came back past valid_until()"));
    }
    for (const FaultWrite& wr : b.writes) {
      (wr.accepted ? out.writes_accepted : out.writes_rejected)++;
    }
    // (d) Nothing written once lost() fired.
    for (const FaultWrite& wr : b.writes) {
      if (b.lost_at != 0 && wr.start >= b.lost_at) {
        report(absl::StrCat("worker ", b.worker, " token ", b.token,
                            " began a write at ", at(wr.start),
                            " after its lost() at ", at(b.lost_at)));
      }
    }
    if (j > 0 && holds[j - 1].ended_by_loss &&
        !holds[j - 1].expired_on_arrival) {
      out.min_loss_to_next_grant =
          std::min(out.min_loss_to_next_grant,
                   std::chrono::nanoseconds(b.sent - holds[j - 1].end));
    }
    // (b) Windows in token order, disjoint.
    for (std::size_t i = 0; i < j; ++i) {
      const FaultHold& a = holds[i];
      if (a.token == b.token) {
        report(absl::StrCat("token ", a.token, " granted twice (workers ",
                            a.worker, ", ", b.worker, ")"));
        continue;
      }
      if (!a.expired_on_arrival && b.sent <= a.end && a.end < b.granted) {
        ++out.in_flight_at_end;
      }
      if (!a.expired_on_arrival && a.end >= b.granted) {
        report(absl::StrCat(
            "overlap: worker ", a.worker, " token ", a.token, " held [",
            at(a.sent), ", ", at(a.end), "] (ended by ",
            a.ended_by_loss ? "lost()" : "release()", ") while worker ",
            b.worker, " token ", b.token, " was granted (sent ", at(b.sent),
            ", returned ", at(b.granted), ")"));
      }
    }
  }
  // (c) Progress.
  if (out.grants < options.min_grants) {
    report(absl::StrCat("granted only ", out.grants, " times (want at least ",
                        options.min_grants, ")"));
  }
  // (a) The resource saw each token's writes as one run, in increasing order.
  const std::vector<std::uint64_t> writes = fenced_history(run.fence);
  if (writes.size() != static_cast<std::size_t>(out.writes_accepted)) {
    report(absl::StrCat("fenced resource ", run.fence.string(), " has ",
                        writes.size(), " writes, the workers saw ",
                        out.writes_accepted, " accepted"));
  }
  for (std::size_t k = 1; k < writes.size(); ++k) {
    if (writes[k] < writes[k - 1]) {
      report(absl::StrCat("fenced resource accepted token ", writes[k],
                          " after ", writes[k - 1], " (write ", k, ")"));
    }
  }
  if (reported > 20) absl::StrAppend(&bad, "... ", reported - 20, " more\n");
  return out;
}

}  // namespace tierlock::testing

// tests/helpers/tl_helper.cc
//
// A small program the tests fork+exec to act as "another process". It uses
// tierlock's public API only. Subcommands (DIR is the locked directory):
//
//   hold DIR [--shared] [--name N]   acquire (blocking), print "locked", then
//                                    wait for a line or EOF on stdin, release,
//                                    print "released", exit 0
//   try DIR [--shared] [--name N]    try_acquire: print "acquired" and exit 0,
//                                    or print "busy" and exit 1
//   count DIR N THREADS              THREADS threads each add 1 to the decimal
//                                    number in DIR/counter N times, each under
//                                    its own exclusive acquire/release
//   mixed DIR N WRITERS READERS      the counter invariant: WRITERS threads
//   each
//                                    add 1 to DIR/record N times under an
//                                    exclusive acquire; READERS threads take
//                                    shared holds meanwhile and check that the
//                                    record is whole and does not change while
//                                    they hold it. Prints "reads R" and exits
//                                    0, or reports the first violation and
//                                    exits 2
//   wait-time DIR [--shared] [--timeout MS]
//                                    open, print "opened", acquire (blocking,
//                                    or with a timeout); print "acquired T"
//                                    where T is CLOCK_MONOTONIC in ns right
//                                    after the grant, then release at a line or
//                                    EOF
//   churn DIR HOLD_US                print "ready", then acquire exclusively,
//                                    hold HOLD_US microseconds, release, again,
//                                    until a line or EOF on stdin; print
//                                    "churned N", exit 0
//   exec-probe DIR                   run in a process exec'd by a holder:
//   report
//                                    "inherited K" (descriptors onto DIR/.lock
//                                    inherited across exec), LOCK_UN every one
//                                    of its descriptors and one of its own,
//                                    then try_acquire: print "busy" or
//                                    "acquired"
//   acquire-for DIR MS [--shared] [--name N]
//                                    acquire_for(MS ms): print "acquired" and
//                                    exit 0 (released), or print
//                                    "deadline_exceeded: <message>" and exit 1
//   cancel DIR [--shared] [--name N] start a cancellable acquire on a thread
//   and
//                                    print "started"; on a line (or EOF)
//                                    request stop and print "cancelled:
//                                    <message>" or "acquired" (then keep the
//                                    hold); on a second line (or EOF) release,
//                                    print "bye", exit 0
//   async-count DIR N POOL           open the lock, print "ready", wait for a
//                                    line; then N acquire_async calls on a
//                                    WorkerPool(POOL), each adding 1 to
//                                    DIR/counter under the lock; check they
//                                    complete in submission order; print
//                                    "done N", exit 0
//   tier-mode DIR                    print the tier check mode the process
//                                    starts with: ignore|report|fail|abort
//   tier-try DIR LEVEL               with tier checks in kFail mode (reports
//                                    to stdout), acquire DIR as tier LEVEL
//                                    ('child'): print "acquired", exit 0; or
//                                    exit 3 on a tier violation
//
// Errors print "tl_helper: <reason>" on stderr and exit 2; bad usage exits 64.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <latch>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "support/counter.h"
#include "support/record.h"
#include "tierlock/tierlock.h"

namespace {

constexpr int kBusy = 1;
constexpr int kError = 2;
constexpr int kUsage = 64;

struct Args {
  std::string command;
  std::string dir;
  std::vector<std::string> positional;
  tierlock::Mode mode = tierlock::Mode::kExclusive;
  tierlock::LockOptions options;
};

int usage() {
  std::fprintf(stderr,
               "usage: tl_helper hold|try DIR [--shared] [--name NAME]\n"
               "       tl_helper count DIR N THREADS\n"
               "       tl_helper acquire-for DIR MS [--shared] [--name NAME]\n"
               "       tl_helper cancel DIR [--shared] [--name NAME]\n"
               "       tl_helper async-count DIR N POOL\n"
               "       tl_helper mixed DIR N WRITERS READERS\n"
               "       tl_helper wait-time DIR [--shared] [--timeout MS]\n"
               "       tl_helper churn DIR HOLD_US\n"
               "       tl_helper exec-probe DIR\n");
  return kUsage;
}

int fail(const std::string& what) {
  std::fprintf(stderr, "tl_helper: %s\n", what.c_str());
  return kError;
}

void say(std::string_view line) {
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

std::optional<Args> parse(int argc, char** argv) {
  if (argc < 3) return std::nullopt;
  Args a;
  a.command = argv[1];
  a.dir = argv[2];
  for (int i = 3; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--shared") {
      a.mode = tierlock::Mode::kShared;
    } else if (arg == "--name" && i + 1 < argc) {
      a.options.lock_file_name = argv[++i];
    } else {
      a.positional.emplace_back(arg);
    }
  }
  return a;
}

int hold(const Args& a) {
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(a.dir, a.options);
  if (!lock.ok()) return fail(lock.status().ToString());
  absl::StatusOr<tierlock::Guard> guard = lock->acquire(a.mode);
  if (!guard.ok()) return fail(guard.status().ToString());
  say("locked");
  std::string line;
  std::getline(std::cin, line);  // a line or EOF
  absl::Status released = guard->release();
  if (!released.ok()) return fail(released.ToString());
  say("released");
  return 0;
}

int try_once(const Args& a) {
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(a.dir, a.options);
  if (!lock.ok()) return fail(lock.status().ToString());
  absl::StatusOr<std::optional<tierlock::Guard>> guard =
      lock->try_acquire(a.mode);
  if (!guard.ok()) return fail(guard.status().ToString());
  if (!guard->has_value()) {
    say("busy");
    return kBusy;
  }
  say("acquired");
  return 0;
}

int count(const Args& a) {
  if (a.positional.size() != 2) return usage();
  const long n = std::strtol(a.positional[0].c_str(), nullptr, 10);
  const long threads = std::strtol(a.positional[1].c_str(), nullptr, 10);
  if (n < 0 || threads < 1) return usage();
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(a.dir, a.options);
  if (!lock.ok()) return fail(lock.status().ToString());
  const std::string counter = a.dir + "/counter";
  std::vector<std::string> errors(static_cast<std::size_t>(threads));
  std::vector<std::thread> workers;
  for (long t = 0; t < threads; ++t) {
    // Each thread works through its own copy of the handle.
    workers.emplace_back([handle = *lock, &counter, &errors, n, t]() mutable {
      std::string& err = errors[static_cast<std::size_t>(t)];
      for (long i = 0; i < n && err.empty(); ++i) {
        absl::StatusOr<tierlock::Guard> g = handle.acquire();
        if (!g.ok()) {
          err = g.status().ToString();
          break;
        }
        err = tierlock::testing::increment_counter(counter);
        absl::Status r = g->release();
        if (err.empty() && !r.ok()) err = r.ToString();
      }
    });
  }
  for (auto& w : workers) w.join();
  for (const auto& e : errors) {
    if (!e.empty()) return fail(e);
  }
  return 0;
}

int mixed(const Args& a) {
  if (a.positional.size() != 3) return usage();
  const long n = std::strtol(a.positional[0].c_str(), nullptr, 10);
  const long writers = std::strtol(a.positional[1].c_str(), nullptr, 10);
  const long readers = std::strtol(a.positional[2].c_str(), nullptr, 10);
  if (n < 0 || writers < 1 || readers < 0) return usage();
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(a.dir, a.options);
  if (!lock.ok()) return fail(lock.status().ToString());
  const std::string record = a.dir + "/record";
  std::mutex mu;
  std::string error;  // the first violation, guarded by mu
  auto report = [&](const std::string& e) {
    std::lock_guard<std::mutex> lk(mu);
    if (error.empty()) error = e;
  };
  std::atomic<long> writers_left{writers};
  std::atomic<long> reads{0};
  // Writers start once every reader has made its first read, so that the
  // readers overlap this process's writers however small N is.
  std::latch readers_started(readers);
  std::vector<std::thread> threads;
  for (long t = 0; t < writers; ++t) {
    threads.emplace_back([handle = *lock, &record, &report, &writers_left,
                          &readers_started, n]() mutable {
      readers_started.wait();
      for (long i = 0; i < n; ++i) {
        absl::StatusOr<tierlock::Guard> g = handle.acquire();
        if (!g.ok()) {
          report(g.status().ToString());
          break;
        }
        std::string err = tierlock::testing::increment_record(record);
        absl::Status r = g->release();
        if (err.empty() && !r.ok()) err = r.ToString();
        if (!err.empty()) {
          report(err);
          break;
        }
      }
      writers_left.fetch_sub(1);
    });
  }
  for (long t = 0; t < readers; ++t) {
    threads.emplace_back([handle = *lock, &record, &report, &writers_left,
                          &reads, &readers_started]() mutable {
      long long last = 0;
      bool first_read = true;
      while (first_read || writers_left.load() > 0) {
        absl::StatusOr<tierlock::Guard> g =
            handle.acquire(tierlock::Mode::kShared);
        if (!g.ok()) {
          report(g.status().ToString());
          if (first_read) readers_started.count_down();
          return;
        }
        std::string err;
        absl::StatusOr<long long> first =
            tierlock::testing::read_record(record);
        // Stay in the critical section a little so a writer that got in
        // would be seen.
        for (int k = 0; k < 3; ++k) std::this_thread::yield();
        absl::StatusOr<long long> second =
            tierlock::testing::read_record(record);
        if (!first.ok() || !second.ok()) {
          err = "torn: " + (first.ok() ? second : first).status().ToString();
        } else if (*first != *second) {
          err = "changed under a shared hold: " + std::to_string(*first) +
                " then " + std::to_string(*second);
        } else if (*first < last) {
          err = "went backwards: " + std::to_string(last) + " then " +
                std::to_string(*first);
        } else {
          last = *first;
        }
        absl::Status r = g->release();
        if (err.empty() && !r.ok()) err = r.ToString();
        if (!err.empty()) {
          report(err);
          if (first_read) readers_started.count_down();
          return;
        }
        reads.fetch_add(1);
        if (first_read) readers_started.count_down();
        first_read = false;
      }
    });
  }
  for (auto& th : threads) th.join();
  if (!error.empty()) return fail(error);
  say("reads " + std::to_string(reads.load()));
  return 0;
}

long long monotonic_ns() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1'000'000'000LL + ts.tv_nsec;
}

int wait_time(const Args& a) {
  tierlock::AcquireOptions options;
  options.mode = a.mode;
  for (std::size_t i = 0; i + 1 < a.positional.size(); ++i) {
    if (a.positional[i] == "--timeout") {
      options.timeout = std::chrono::milliseconds(
          std::strtol(a.positional[i + 1].c_str(), nullptr, 10));
    }
  }
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(a.dir, a.options);
  if (!lock.ok()) return fail(lock.status().ToString());
  say("opened");
  absl::StatusOr<tierlock::Guard> guard = lock->acquire(std::move(options));
  const long long t = monotonic_ns();
  if (!guard.ok()) {
    say("error: " + guard.status().ToString());
    return kBusy;
  }
  say("acquired " + std::to_string(t));
  std::string line;
  std::getline(std::cin, line);
  absl::Status released = guard->release();
  if (!released.ok()) return fail(released.ToString());
  return 0;
}

// True once stdin has a line or is at EOF (never blocks).
bool stdin_ready() {
  struct pollfd p = {0, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

int churn(const Args& a) {
  if (a.positional.size() != 1) return usage();
  const auto hold_for = std::chrono::microseconds(
      std::strtol(a.positional[0].c_str(), nullptr, 10));
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(a.dir, a.options);
  if (!lock.ok()) return fail(lock.status().ToString());
  say("ready");
  long rounds = 0;
  while (!stdin_ready()) {
    absl::StatusOr<tierlock::Guard> g = lock->acquire();
    if (!g.ok()) return fail(g.status().ToString());
    // Busy-hold: the point is to keep the lock taken, not to sleep.
    const auto until = std::chrono::steady_clock::now() + hold_for;
    while (std::chrono::steady_clock::now() < until) {
    }
    absl::Status r = g->release();
    if (!r.ok()) return fail(r.ToString());
    ++rounds;
  }
  say("churned " + std::to_string(rounds));
  return 0;
}

int exec_probe(const Args& a) {
  const std::string lock_file = a.dir + "/" + a.options.lock_file_name;
  struct stat want;
  if (::stat(lock_file.c_str(), &want) != 0) return fail("stat " + lock_file);
  int inherited = 0;
  std::vector<int> fds;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const struct dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') fds.push_back(std::atoi(e->d_name));
    }
    ::closedir(d);
  }
  for (int fd : fds) {
    struct stat st;
    if (::fstat(fd, &st) != 0) continue;  // the opendir descriptor, closed
    if (st.st_dev == want.st_dev && st.st_ino == want.st_ino) ++inherited;
    // Whatever this descriptor is, unlocking it must not free the parent.
    (void)::flock(fd, LOCK_UN);
  }
  say("inherited " + std::to_string(inherited));
  const int own = ::open(lock_file.c_str(), O_RDONLY | O_CLOEXEC);
  if (own < 0) return fail("open " + lock_file);
  (void)::flock(own, LOCK_UN);
  ::close(own);
  return try_once(a) == kError ? kError : 0;
}

int acquire_for(const Args& a) {
  if (a.positional.size() != 1) return usage();
  const long ms = std::strtol(a.positional[0].c_str(), nullptr, 10);
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(a.dir, a.options);
  if (!lock.ok()) return fail(lock.status().ToString());
  absl::StatusOr<tierlock::Guard> guard =
      lock->acquire_for(std::chrono::milliseconds(ms), a.mode);
  if (guard.ok()) {
    say("acquired");
    absl::Status released = guard->release();
    if (!released.ok()) return fail(released.ToString());
    return 0;
  }
  if (guard.status().code() != absl::StatusCode::kDeadlineExceeded) {
    return fail(guard.status().ToString());
  }
  say("deadline_exceeded: " + std::string(guard.status().message()));
  return kBusy;
}

int cancel(const Args& a) {
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(a.dir, a.options);
  if (!lock.ok()) return fail(lock.status().ToString());
  std::stop_source stop;
  absl::StatusOr<tierlock::Guard> result = absl::UnknownError("not run");
  std::thread waiter([&] {
    tierlock::AcquireOptions options;
    options.mode = a.mode;
    options.stop = stop.get_token();
    result = lock->acquire(std::move(options));
  });
  say("started");
  std::string line;
  std::getline(std::cin, line);
  stop.request_stop();
  waiter.join();
  if (result.ok()) {
    say("acquired");
  } else if (result.status().code() == absl::StatusCode::kCancelled) {
    say("cancelled: " + std::string(result.status().message()));
  } else {
    return fail(result.status().ToString());
  }
  std::getline(std::cin, line);
  if (result.ok()) {
    absl::Status released = result->release();
    if (!released.ok()) return fail(released.ToString());
  }
  say("bye");
  return 0;
}

int async_count(const Args& a) {
  if (a.positional.size() != 2) return usage();
  const long n = std::strtol(a.positional[0].c_str(), nullptr, 10);
  const long threads = std::strtol(a.positional[1].c_str(), nullptr, 10);
  if (n < 0 || threads < 0) return usage();
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(a.dir, a.options);
  if (!lock.ok()) return fail(lock.status().ToString());
  const std::string counter = a.dir + "/counter";
  say("ready");
  std::string line;
  std::getline(std::cin, line);

  std::mutex mu;
  std::condition_variable cv;
  long completed = 0;
  long next = 0;  // guarded by the DirLock itself: the completion order
  std::string error;
  {
    tierlock::WorkerPool pool(static_cast<std::size_t>(threads));
    for (long i = 0; i < n; ++i) {
      tierlock::AcquireOptions options;
      options.pool = &pool;
      lock->acquire_async(
          std::move(options), [&, i](absl::StatusOr<tierlock::Guard> g) {
            std::string err;
            if (!g.ok()) {
              err = g.status().ToString();
            } else {
              if (next != i) {
                err = "completion " + std::to_string(i) + " ran when " +
                      std::to_string(next) + " was expected";
              }
              next = i + 1;
              std::string inc = tierlock::testing::increment_counter(counter);
              if (err.empty()) err = inc;
              absl::Status released = g->release();
              if (err.empty() && !released.ok()) err = released.ToString();
            }
            std::lock_guard<std::mutex> lk(mu);
            if (error.empty()) error = err;
            ++completed;
            cv.notify_all();
          });
    }
    std::unique_lock<std::mutex> lk(mu);
    if (!cv.wait_for(lk, std::chrono::seconds(120),
                     [&] { return completed == n; })) {
      error = "timed out: " + std::to_string(completed) + " of " +
              std::to_string(n) + " completions ran";
    }
  }  // lk is released before the pool is destroyed (a completion takes mu)
  if (!error.empty()) return fail(error);
  say("done " + std::to_string(completed));
  return 0;
}

int tier_mode() {
  switch (tierlock::tier_check_mode()) {
    case tierlock::TierCheckMode::kIgnore:
      say("ignore");
      break;
    case tierlock::TierCheckMode::kReport:
      say("report");
      break;
    case tierlock::TierCheckMode::kFail:
      say("fail");
      break;
    case tierlock::TierCheckMode::kAbort:
      say("abort");
      break;
  }
  return 0;
}

int tier_try(Args a) {
  int level = 0;
  if (a.positional.size() != 1 || !absl::SimpleAtoi(a.positional[0], &level)) {
    return usage();
  }
  tierlock::set_tier_check_mode(tierlock::TierCheckMode::kFail);
  tierlock::set_tier_violation_handler(
      [](const tierlock::TierViolation& v) { say(v.to_string()); });
  a.options.tier = tierlock::Tier{level, "child"};
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(a.dir, a.options);
  if (!lock.ok()) return fail(lock.status().ToString());
  absl::StatusOr<tierlock::Guard> guard = lock->acquire(a.mode);
  if (guard.status().code() == absl::StatusCode::kFailedPrecondition) return 3;
  if (!guard.ok()) return fail(guard.status().ToString());
  say("acquired");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<Args> a = parse(argc, argv);
  if (!a) return usage();
  if (a->command == "hold") return hold(*a);
  if (a->command == "try") return try_once(*a);
  if (a->command == "count") return count(*a);
  if (a->command == "mixed") return mixed(*a);
  if (a->command == "wait-time") return wait_time(*a);
  if (a->command == "churn") return churn(*a);
  if (a->command == "exec-probe") return exec_probe(*a);
  if (a->command == "acquire-for") return acquire_for(*a);
  if (a->command == "cancel") return cancel(*a);
  if (a->command == "async-count") return async_count(*a);
  if (a->command == "tier-mode") return tier_mode();
  if (a->command == "tier-try") return tier_try(*a);
  return usage();
}

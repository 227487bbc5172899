// ErrorKind: every error tierlock classifies carries its kind (error.h), so
// callers (the CLI first) branch on it instead of on message text. Also the
// API seams that go with it: async-only options refused by blocking
// acquires, the future form of acquire_async completing on the caller's
// executor, acquire_all over const handles, and diagnostics.h.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "support/fixture.h"
#include "support/internal.h"
#include "support/tier_mode.h"
#include "support/wait.h"
#include "tierlock/diagnostics.h"
#include "tierlock/dir_lock.h"
#include "tierlock/error.h"
#include "tierlock/executor.h"
#include "tierlock/lock_context.h"
#include "tierlock/tier.h"

namespace {

using std::chrono_literals::operator""ms;
using tierlock::AcquireOptions;
using tierlock::DirLock;
using tierlock::error_kind;
using tierlock::ErrorKind;
using tierlock::Guard;
using tierlock::LockOptions;
using namespace tierlock::testing;  // NOLINT: test support vocabulary

class ErrorKindTest : public TierlockTest {};

LockOptions tiered(int level, std::string_view name) {
  LockOptions options;
  options.tier = tierlock::Tier{level, name};
  return options;
}
AcquireOptions with_timeout(std::chrono::nanoseconds timeout) {
  AcquireOptions options;
  options.timeout = timeout;
  return options;
}
AcquireOptions with_stop(std::stop_token stop) {
  AcquireOptions options;
  options.stop = std::move(stop);
  return options;
}
AcquireOptions on(tierlock::WorkerPool* pool, tierlock::Executor* executor) {
  AcquireOptions options;
  options.pool = pool;
  options.executor = executor;
  return options;
}

TEST_F(ErrorKindTest, OkAndForeignStatusesAreUnclassified) {
  EXPECT_EQ(error_kind(absl::OkStatus()), ErrorKind::kUnclassified);
  EXPECT_EQ(error_kind(absl::InvalidArgumentError("not a directory")),
            ErrorKind::kUnclassified);
  absl::Status odd = absl::InternalError("x");
  odd.SetPayload(std::string(tierlock::kErrorKindPayloadUrl),
                 absl::Cord(std::string("no_such_kind")));
  EXPECT_EQ(error_kind(odd), ErrorKind::kUnclassified);
}

TEST_F(ErrorKindTest, NamesAreStable) {
  EXPECT_EQ(tierlock::error_kind_name(ErrorKind::kNotADirectory),
            "not_a_directory");
  EXPECT_EQ(tierlock::error_kind_name(ErrorKind::kBadLockFileName),
            "bad_lock_file_name");
  EXPECT_EQ(tierlock::error_kind_name(ErrorKind::kUnclassified),
            "unclassified");
}

TEST_F(ErrorKindTest, OpenOfAFileAsDirectoryIsNotADirectory) {
  const std::filesystem::path file = dir() / "plain";
  std::ofstream(file) << "x";
  absl::StatusOr<DirLock> lock = DirLock::open(file);
  ASSERT_FALSE(lock.ok());
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(error_kind(lock.status()), ErrorKind::kNotADirectory)
      << lock.status();
}

TEST_F(ErrorKindTest, BadLockFileNameIsBadLockFileName) {
  for (const char* name : {"", ".", "..", "a/b"}) {
    LockOptions options;
    options.lock_file_name = name;
    absl::StatusOr<DirLock> lock = DirLock::open(dir(), options);
    ASSERT_FALSE(lock.ok()) << "'" << name << "'";
    EXPECT_EQ(lock.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(error_kind(lock.status()), ErrorKind::kBadLockFileName)
        << "'" << name << "': " << lock.status();
  }
}

TEST_F(ErrorKindTest, SymlinkOrDirectoryLockFileIsNotARegularFile) {
  std::filesystem::create_directory(dir() / "d");
  std::filesystem::create_directory(dir() / "d" / ".lock");
  std::filesystem::create_directory(dir() / "s");
  std::ofstream(dir() / "target") << "x";
  std::filesystem::create_symlink(dir() / "target", dir() / "s" / ".lock");
  for (const char* sub : {"d", "s"}) {
    absl::StatusOr<DirLock> lock = DirLock::open(dir() / sub);
    ASSERT_FALSE(lock.ok()) << sub;
    EXPECT_EQ(lock.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(error_kind(lock.status()), ErrorKind::kNotARegularFile)
        << sub << ": " << lock.status();
  }
}

TEST_F(ErrorKindTest, RefusedUnsafeLockFileIsUnsafeLockFile) {
  const std::filesystem::path open_dir = dir() / "open";
  std::filesystem::create_directory(open_dir);
  // World-writable without the sticky bit: anyone may replace the file.
  ASSERT_EQ(::chmod(open_dir.c_str(), 0777), 0);
  LockOptions options;
  options.refuse_unsafe_lock_file = true;
  absl::StatusOr<DirLock> lock = DirLock::open(open_dir, options);
  ASSERT_FALSE(lock.ok());
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(error_kind(lock.status()), ErrorKind::kUnsafeLockFile)
      << lock.status();
}

TEST_F(ErrorKindTest, ReentryIsSelfDeadlock) {
  absl::StatusOr<DirLock> lock = DirLock::open(dir());
  ASSERT_TRUE(lock.ok()) << lock.status();
  absl::StatusOr<Guard> held = lock->acquire();
  ASSERT_TRUE(held.ok()) << held.status();
  absl::StatusOr<Guard> again = lock->acquire();
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(error_kind(again.status()), ErrorKind::kSelfDeadlock)
      << again.status();
}

TEST_F(ErrorKindTest, TaskReentryWithChecksOnIsSelfDeadlock) {
  ScopedTierCheckMode mode(tierlock::TierCheckMode::kFail);
  Reports quiet;
  absl::StatusOr<DirLock> lock = DirLock::open(dir(), tiered(10, "ws"));
  ASSERT_TRUE(lock.ok()) << lock.status();
  absl::StatusOr<Guard> held = lock->acquire();
  ASSERT_TRUE(held.ok()) << held.status();
  absl::StatusOr<Guard> again = lock->acquire();
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(error_kind(again.status()), ErrorKind::kSelfDeadlock)
      << again.status();
}

TEST_F(ErrorKindTest, RefusedOrderIsTierViolation) {
  ScopedTierCheckMode mode(tierlock::TierCheckMode::kFail);
  Reports quiet;
  std::filesystem::create_directory(dir() / "hi");
  std::filesystem::create_directory(dir() / "lo");
  absl::StatusOr<DirLock> hi = DirLock::open(dir() / "hi", tiered(20, "hi"));
  absl::StatusOr<DirLock> lo = DirLock::open(dir() / "lo", tiered(10, "lo"));
  ASSERT_TRUE(hi.ok() && lo.ok());
  absl::StatusOr<Guard> held = hi->acquire();
  ASSERT_TRUE(held.ok()) << held.status();
  absl::StatusOr<Guard> refused = lo->acquire();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(error_kind(refused.status()), ErrorKind::kTierViolation)
      << refused.status();
}

// Holds `lock` on another thread until the returned promise is set.
class HeldElsewhere {
 public:
  explicit HeldElsewhere(DirLock lock) {
    std::promise<void> holding;
    std::future<void> held = holding.get_future();
    thread_ = std::thread([this, lock, &holding]() mutable {
      absl::StatusOr<Guard> g = lock.acquire();
      EXPECT_TRUE(g.ok()) << g.status();
      holding.set_value();
      done_.get_future().wait();
    });
    held.wait();
  }
  ~HeldElsewhere() {
    done_.set_value();
    thread_.join();
  }

 private:
  std::promise<void> done_;
  std::thread thread_;
};

TEST_F(ErrorKindTest, TimeoutIsTimeoutAlsoThroughAcquireAll) {
  absl::StatusOr<DirLock> lock = DirLock::open(dir());
  ASSERT_TRUE(lock.ok()) << lock.status();
  HeldElsewhere holder(*lock);
  absl::StatusOr<Guard> timed = lock->acquire_for(5ms);
  ASSERT_FALSE(timed.ok());
  EXPECT_EQ(timed.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(error_kind(timed.status()), ErrorKind::kTimeout) << timed.status();

  const std::vector<DirLock> locks = {*lock};
  absl::StatusOr<std::vector<Guard>> all =
      tierlock::acquire_all(locks, with_timeout(5ms));
  ASSERT_FALSE(all.ok());
  EXPECT_EQ(error_kind(all.status()), ErrorKind::kTimeout) << all.status();
}

TEST_F(ErrorKindTest, CancelIsCancelledBeforeAndWhileWaiting) {
  absl::StatusOr<DirLock> lock = DirLock::open(dir());
  ASSERT_TRUE(lock.ok()) << lock.status();
  std::stop_source stopped;
  stopped.request_stop();
  absl::StatusOr<Guard> before = lock->acquire(with_stop(stopped.get_token()));
  ASSERT_FALSE(before.ok());
  EXPECT_EQ(before.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(error_kind(before.status()), ErrorKind::kCancelled)
      << before.status();

  HeldElsewhere holder(*lock);
  std::stop_source stop;
  std::shared_ptr<tierlock::internal::LockEntry> entry = entry_of(*lock);
  ASSERT_NE(entry, nullptr);
  std::thread stopper([&] {
    // Stops once the acquire below is queued behind the holder.
    EXPECT_TRUE(wait_for_waiting(*entry, 1, std::chrono::seconds(10)));
    stop.request_stop();
  });
  absl::StatusOr<Guard> during = lock->acquire(with_stop(stop.get_token()));
  stopper.join();
  ASSERT_FALSE(during.ok());
  EXPECT_EQ(during.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(error_kind(during.status()), ErrorKind::kCancelled)
      << during.status();
}

TEST_F(ErrorKindTest, BlockingAcquireRejectsPoolAndExecutor) {
  absl::StatusOr<DirLock> lock = DirLock::open(dir());
  ASSERT_TRUE(lock.ok()) << lock.status();
  tierlock::WorkerPool pool(1);
  for (bool use_pool : {true, false}) {
    AcquireOptions options;
    if (use_pool) {
      options.pool = &pool;
    } else {
      options.executor = &pool;
    }
    absl::StatusOr<Guard> got = lock->acquire(std::move(options));
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(error_kind(got.status()), ErrorKind::kInvalidOption);
    const std::string message(got.status().message());
    EXPECT_TRUE(absl::StrContains(message, use_pool ? "pool" : "executor"))
        << message;
    EXPECT_TRUE(absl::StrContains(message, lock->lock_file().native()))
        << message;
  }
  // Nothing was taken: the lock is free.
  absl::StatusOr<std::optional<Guard>> free = lock->try_acquire();
  ASSERT_TRUE(free.ok()) << free.status();
  EXPECT_TRUE(free->has_value());
}

TEST_F(ErrorKindTest, AcquireAllRejectsPoolAndTheSameLockTwice) {
  absl::StatusOr<DirLock> lock = DirLock::open(dir());
  ASSERT_TRUE(lock.ok()) << lock.status();
  tierlock::WorkerPool pool(1);
  const std::vector<DirLock> one = {*lock};
  absl::StatusOr<std::vector<Guard>> with_pool =
      tierlock::acquire_all(one, on(&pool, nullptr));
  ASSERT_FALSE(with_pool.ok());
  EXPECT_EQ(error_kind(with_pool.status()), ErrorKind::kInvalidOption);
  const DirLock twice[] = {*lock, *lock};
  absl::StatusOr<std::vector<Guard>> dup = tierlock::acquire_all(twice);
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(error_kind(dup.status()), ErrorKind::kInvalidOption);
}

TEST_F(ErrorKindTest, AcquireAllTakesConstHandles) {
  absl::StatusOr<DirLock> a = DirLock::open(dir());
  ASSERT_TRUE(a.ok()) << a.status();
  std::vector<DirLock> mutable_locks = {*a};  // a vector<DirLock> still works
  absl::StatusOr<std::vector<Guard>> got = tierlock::acquire_all(mutable_locks);
  ASSERT_TRUE(got.ok()) << got.status();
  got->clear();
  const std::vector<DirLock>& const_locks = mutable_locks;
  got = tierlock::acquire_all(const_locks);
  ASSERT_TRUE(got.ok()) << got.status();
}

// Runs nothing until run_all(): shows where the future's completion runs.
class ManualExecutor : public tierlock::Executor {
 public:
  void execute(absl::AnyInvocable<void() &&> task) override {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
  }
  std::size_t queued() {
    std::lock_guard<std::mutex> lock(mu_);
    return tasks_.size();
  }
  void run_all() {
    std::deque<absl::AnyInvocable<void() &&>> tasks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks.swap(tasks_);
    }
    for (auto& t : tasks) std::move(t)();
  }

 private:
  std::mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> tasks_;
};

TEST_F(ErrorKindTest, FutureAcquireAsyncCompletesOnTheCallersExecutor) {
  absl::StatusOr<DirLock> lock = DirLock::open(dir());
  ASSERT_TRUE(lock.ok()) << lock.status();
  tierlock::WorkerPool pool(1);
  ManualExecutor executor;
  std::future<absl::StatusOr<Guard>> future =
      lock->acquire_async(on(&pool, &executor));
  // The grant is delivered to the executor, and the future waits for it.
  ASSERT_TRUE(wait_until([&] { return executor.queued() == 1; }));
  EXPECT_EQ(future.wait_for(std::chrono::seconds(0)),
            std::future_status::timeout);
  executor.run_all();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(0)),
            std::future_status::ready);
  absl::StatusOr<Guard> got = future.get();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->held());
}

TEST_F(ErrorKindTest, RegistrySizeHasBothSpellings) {
  const std::size_t before = tierlock::diagnostics::registry_size();
  EXPECT_EQ(tierlock::Registry::global().size(), before);
  absl::StatusOr<DirLock> lock = DirLock::open(dir());
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_EQ(tierlock::diagnostics::registry_size(), before + 1);
  EXPECT_EQ(tierlock::Registry::global().size(), before + 1);
}

}  // namespace

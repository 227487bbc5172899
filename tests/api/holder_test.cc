// Tests of holder records and who-holds-it queries (tierlock/holder.h,
// DirLock::holders, src/holders/holder_record.h): several shared holders in
// several processes, stale, corrupt and hostile records.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "holders/holder_record.h"
#include "platform/platform.h"
#include "support/files.h"
#include "support/fixture.h"
#include "support/helpers.h"
#include "support/proc_locks.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "tierlock/tierlock.h"

namespace tierlock::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAreArray;
namespace fs = std::filesystem;
using internal::HolderRecord;
using internal::kRecordSize;

std::string hostname() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

fs::path records_dir(const fs::path& dir) { return dir / ".lock.holders"; }

// The record name a live process `pid` would use.
std::string record_name(pid_t pid) {
  internal::platform::ProcessInfo info = internal::platform::process_info(pid);
  return internal::record_file_name(pid, info.start_time.value_or(0),
                                    internal::platform::boot_id());
}

std::vector<std::int64_t> pids_of(const std::vector<Holder>& holders) {
  std::vector<std::int64_t> out;
  for (const Holder& h : holders) out.push_back(h.pid.value_or(-1));
  return out;
}

class HolderTest : public TierlockTest {};

TEST_F(HolderTest, FreeLockHasNoHoldersAndInspectCreatesNothing) {
  absl::StatusOr<LockState> none = inspect_lock(dir());
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->lock_file_exists);
  EXPECT_TRUE(none->holders.empty());
  EXPECT_EQ(none->lock_file, dir() / ".lock");
  EXPECT_TRUE(snapshot(dir()).entries.empty())
      << "inspect_lock must create nothing";

  absl::StatusOr<DirLock> lock = DirLock::open(dir());
  ASSERT_TRUE(lock.ok());
  absl::StatusOr<std::vector<Holder>> holders = lock->holders();
  ASSERT_TRUE(holders.ok()) << holders.status();
  EXPECT_TRUE(holders->empty());
}

TEST_F(HolderTest, NamesThisProcessWhileItHoldsAndNotAfter) {
  std::optional<DirLock> lock;
  {
    absl::StatusOr<DirLock> opened =
        DirLock::open(dir(), {.tier = Tier{7, "workspace"}});
    ASSERT_TRUE(opened.ok());
    lock.emplace(*std::move(opened));
  }
  const auto before = std::chrono::system_clock::now();
  absl::StatusOr<Guard> guard = lock->acquire();
  ASSERT_TRUE(guard.ok());
  absl::StatusOr<std::vector<Holder>> holders = lock->holders();
  ASSERT_TRUE(holders.ok()) << holders.status();
  ASSERT_EQ(holders->size(), 1u);
  const Holder& h = holders->front();
  EXPECT_EQ(h.pid, ::getpid());
  EXPECT_EQ(h.mode, Mode::kExclusive);
  EXPECT_TRUE(h.recorded);
  EXPECT_EQ(h.host, hostname());
  ASSERT_TRUE(h.program.has_value());
  EXPECT_THAT(*h.program, HasSubstr("holder_test"));
  ASSERT_TRUE(h.since.has_value());
  // The coarse clock may lag by a tick (a few ms); allow a generous bound.
  EXPECT_GE(*h.since, before - std::chrono::seconds(1));
  EXPECT_LE(*h.since,
            std::chrono::system_clock::now() + std::chrono::seconds(1));
  EXPECT_EQ(h.tier_level, 7);
  EXPECT_EQ(h.tier_name, "workspace");
  EXPECT_TRUE(h.start_time.has_value());
  EXPECT_TRUE(fs::exists(records_dir(dir()) / record_name(::getpid())));

  ASSERT_TRUE(guard->release().ok());
  holders = lock->holders();
  ASSERT_TRUE(holders.ok());
  EXPECT_TRUE(holders->empty());
  // Shared, through the same entry: the record follows the kernel mode.
  absl::StatusOr<Guard> shared = lock->acquire(Mode::kShared);
  ASSERT_TRUE(shared.ok());
  holders = lock->holders();
  ASSERT_TRUE(holders.ok());
  ASSERT_EQ(holders->size(), 1u);
  EXPECT_EQ(holders->front().mode, Mode::kShared);
  EXPECT_TRUE(holders->front().since.has_value());
  ASSERT_TRUE(shared->release().ok());
  shared = absl::UnknownError("moved");
  lock.reset();  // drop the entry: its record is kept for the next one
  EXPECT_TRUE(fs::exists(records_dir(dir()) / record_name(::getpid())));
  // The next entry of the same lock file adopts it (no new file).
  const std::uint64_t inode =
      inode_of(records_dir(dir()) / record_name(::getpid()));
  absl::StatusOr<DirLock> again = DirLock::open(dir());
  ASSERT_TRUE(again.ok());
  absl::StatusOr<Guard> g = again->acquire();
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(inode_of(records_dir(dir()) / record_name(::getpid())), inode);
  holders = again->holders();
  ASSERT_TRUE(holders.ok());
  ASSERT_EQ(holders->size(), 1u);
  EXPECT_TRUE(holders->front().recorded);
  EXPECT_EQ(holders->front().tier_level, std::nullopt)
      << "this handle has no tier";
}

TEST_F(HolderTest, ARecordOutlivesItsEntryOnlyUntilTheProcessExits) {
  Process p = Process::spawn({helper_path(), "try", dir().string()});
  EXPECT_EQ(p.wait().code, 0);
  EXPECT_EQ(snapshot(records_dir(dir())).entries,
            std::vector<std::string>{".gitignore"})
      << "a process that exits normally removes its records (the ignore "
         "rule for version control stays)";
}

TEST_F(HolderTest, ReportsSeveralSharedHoldersInSeveralProcesses) {
  std::vector<Process> holders;
  std::vector<std::int64_t> pids;
  for (int i = 0; i < 3; ++i) {
    holders.push_back(start_holder(dir(), Mode::kShared));
    ASSERT_EQ(holders.back().read_line(), "locked");
    pids.push_back(holders.back().pid());
  }
  absl::StatusOr<LockState> state = inspect_lock(dir());
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_THAT(pids_of(state->holders), UnorderedElementsAreArray(pids));
  for (const Holder& h : state->holders) {
    EXPECT_EQ(h.mode, Mode::kShared);
    EXPECT_TRUE(h.recorded);
    EXPECT_TRUE(h.since.has_value());
    EXPECT_EQ(h.host, hostname());
    EXPECT_THAT(h.program.value_or(""), HasSubstr("tl_helper hold"));
  }
  for (Process& p : holders) EXPECT_EQ(stop_holder(p).code, 0);
  state = inspect_lock(dir());
  ASSERT_TRUE(state.ok());
  EXPECT_TRUE(state->holders.empty());
}

// A valid record for `pid`, as if that process had written it.
std::string fake_record(std::int64_t pid, std::uint64_t start,
                        const fs::path& lock_file, const std::string& program) {
  HolderRecord r;
  r.pid = pid;
  r.start_time = start;
  r.boot_id = internal::platform::boot_id();
  struct stat st;
  if (::stat(lock_file.c_str(), &st) == 0) {
    r.lock_dev = st.st_dev;
    r.lock_ino = st.st_ino;
  }
  r.host = "forged";
  r.program = program;
  return internal::encode_holder_record(r);
}

TEST_F(HolderTest, StaleRecordOfADeadProcessIsNotReportedAndIsCleanedUp) {
  write_file(dir() / ".lock", "");
  // A process that has exited: its pid is free, its record left behind.
  Process gone = Process::spawn({"true"});
  ASSERT_EQ(gone.wait().code, 0);
  const pid_t dead = gone.pid();
  fs::create_directory(records_dir(dir()));
  const std::string stale =
      internal::record_file_name(dead, 12345, internal::platform::boot_id());
  write_file(records_dir(dir()) / stale,
             fake_record(dead, 12345, dir() / ".lock", "stale-program"));

  absl::StatusOr<LockState> state = inspect_lock(dir());
  ASSERT_TRUE(state.ok());
  EXPECT_TRUE(state->holders.empty()) << "a record alone never makes a holder";

  // A tierlock process creating its record removes records of dead processes.
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  state = inspect_lock(dir());
  ASSERT_TRUE(state.ok());
  ASSERT_EQ(state->holders.size(), 1u);
  EXPECT_EQ(state->holders[0].pid, holder.pid());
  EXPECT_THAT(state->holders[0].program.value_or(""), HasSubstr("tl_helper"));
  EXPECT_TRUE(
      wait_until([&] { return !fs::exists(records_dir(dir()) / stale); }));
  EXPECT_EQ(stop_holder(holder).code, 0);
}

TEST_F(HolderTest, CorruptRecordIsIgnoredAndTheHolderStillReported) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  const fs::path record = records_dir(dir()) / record_name(holder.pid());
  ASSERT_TRUE(fs::exists(record));
  for (const std::string& garbage :
       {std::string(kRecordSize, '\xff'), std::string("short"),
        fake_record(holder.pid() + 1, 1, dir() / ".lock", "someone else"),
        std::string(kRecordSize * 2, 'x')}) {
    write_file(record, garbage);
    absl::StatusOr<LockState> state = inspect_lock(dir());
    ASSERT_TRUE(state.ok());
    ASSERT_EQ(state->holders.size(), 1u);
    const Holder& h = state->holders[0];
    EXPECT_EQ(h.pid, holder.pid());
    EXPECT_FALSE(h.recorded);
    EXPECT_FALSE(h.since.has_value());
    EXPECT_FALSE(h.host.has_value());
    EXPECT_THAT(h.program.value_or(""),
                HasSubstr("tl_helper hold"));  // from /proc
  }
  EXPECT_EQ(stop_holder(holder).code, 0);
}

TEST_F(HolderTest, HostileSymlinksAreNotFollowed) {
  TempDir elsewhere;
  write_file(elsewhere.path() / "precious", "keep me");
  const FileSnapshot before = snapshot(elsewhere.path());
  // The records directory is a symlink to another directory.
  fs::create_directory_symlink(elsewhere.path(), records_dir(dir()));
  {
    absl::StatusOr<DirLock> lock = DirLock::open(dir());
    ASSERT_TRUE(lock.ok());
    absl::StatusOr<Guard> guard = lock->acquire();
    ASSERT_TRUE(guard.ok());
    absl::StatusOr<std::vector<Holder>> holders = lock->holders();
    ASSERT_TRUE(holders.ok());
    ASSERT_EQ(holders->size(), 1u);
    EXPECT_EQ(holders->front().pid, ::getpid());
    EXPECT_FALSE(holders->front().recorded) << "no record through a symlink";
  }
  EXPECT_EQ(snapshot(elsewhere.path()), before);
  EXPECT_TRUE(fs::is_symlink(records_dir(dir())))
      << "the symlink is not ours to remove";
  fs::remove(records_dir(dir()));

  // A record file that is a symlink to a valid-looking record elsewhere.
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  const fs::path record = records_dir(dir()) / record_name(holder.pid());
  internal::platform::ProcessInfo info =
      internal::platform::process_info(holder.pid());
  write_file(elsewhere.path() / "forged",
             fake_record(holder.pid(), info.start_time.value_or(0),
                         dir() / ".lock", "forged"));
  fs::remove(record);
  fs::create_symlink(elsewhere.path() / "forged", record);
  absl::StatusOr<LockState> state = inspect_lock(dir());
  ASSERT_TRUE(state.ok());
  ASSERT_EQ(state->holders.size(), 1u);
  EXPECT_FALSE(state->holders[0].recorded);
  EXPECT_THAT(state->holders[0].program.value_or(""),
              HasSubstr("tl_helper hold"));
  EXPECT_EQ(stop_holder(holder).code, 0);
  // The holder removed nothing that was not its own.
  EXPECT_TRUE(fs::is_symlink(record));
  EXPECT_EQ(read_file(elsewhere.path() / "precious"), "keep me");
}

// Times out acquiring dir() for 20 ms; returns the message ("" on failure).
std::string timeout_message(const std::filesystem::path& dir) {
  absl::StatusOr<DirLock> lock = DirLock::open(dir);
  EXPECT_TRUE(lock.ok()) << lock.status();
  if (!lock.ok()) return "";
  absl::StatusOr<Guard> got = lock->acquire_for(std::chrono::milliseconds(20));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded);
  return std::string(got.status().message());
}

TEST_F(HolderTest, TimeoutMessageNamesTheHoldersProgram) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  EXPECT_THAT(
      timeout_message(dir()),
      HasSubstr("held exclusively by pid " + std::to_string(holder.pid()) +
                " '" + helper_path() + " hold " + dir().string() + "'"));
  EXPECT_EQ(stop_holder(holder).code, 0);
}

// A timeout names holders from their records first (no /proc/locks read);
// a holder that leaves no record is still named, from the kernel's table.
TEST_F(HolderTest, TimeoutMessageNamesAHolderWithoutARecordFromTheKernel) {
  if (flock_path().empty()) GTEST_SKIP() << "flock(1) not found";
  Process holder = Process::spawn({flock_path(), (dir() / ".lock").string(),
                                   "sh", "-c", "echo locked; read x"});
  ASSERT_EQ(holder.read_line(), "locked");
  EXPECT_THAT(timeout_message(dir()),
              HasSubstr("held exclusively by pid " +
                        std::to_string(holder.pid()) + " '"));
  holder.write_line("go");
  EXPECT_EQ(holder.wait().code, 0);
}

// A record left "held" by a process that has exited names nobody: the
// timeout falls back to the kernel, which says the lock is free now.
TEST_F(HolderTest, TimeoutNeverNamesADeadProcessFromItsRecord) {
  Process holder = start_holder(dir());
  ASSERT_EQ(holder.read_line(), "locked");
  const pid_t dead = holder.pid();
  // Another tierlock process takes over before the first one dies, so the
  // lock stays held while a record of a dead process may remain.
  Process second = start_holder(dir(), Mode::kShared);
  ::kill(dead, SIGKILL);
  EXPECT_EQ(holder.wait().code, 128 + SIGKILL);
  ASSERT_EQ(second.read_line(), "locked");
  const std::string message = timeout_message(dir());
  EXPECT_THAT(message,
              HasSubstr("held shared by pid " + std::to_string(second.pid())));
  EXPECT_THAT(message, Not(HasSubstr("pid " + std::to_string(dead) + " ")));
  EXPECT_EQ(stop_holder(second).code, 0);
}

// flock(1), like `tierlock run`, lets its command inherit the locked open
// file description: SIGKILL of the wrapper leaves the command holding the
// lock, while the kernel's table still names the wrapper's (dead) pid, or 0
// inside a pid namespace. The holder named must be the command.
TEST_F(HolderTest, NamesTheProcessThatInheritedTheLockWhenItsTakerWasKilled) {
  if (flock_path().empty()) GTEST_SKIP() << "flock(1) not found";
  Process wrapper = Process::spawn({flock_path(), (dir() / ".lock").string(),
                                    "sh", "-c", "echo $$; exec sleep 1000"});
  const std::optional<std::string> line = wrapper.read_line();
  ASSERT_TRUE(line.has_value());
  const pid_t command = std::stoi(*line);
  auto command_program = [&] {
    return internal::platform::process_info(command).program;
  };
  ASSERT_TRUE(wait_until([&] { return command_program() == "sleep 1000"; }));
  ASSERT_EQ(::kill(wrapper.pid(), SIGKILL), 0);
  ASSERT_EQ(wrapper.wait().code, 128 + SIGKILL);
  const std::vector<ProcLock> kernel = locks_on(dir() / ".lock");
  ASSERT_EQ(kernel.size(), 1u) << "the command still holds the lock";
  std::cerr << "[ info ] /proc/locks names pid " << kernel[0].pid
            << " for a lock whose taker (pid " << wrapper.pid()
            << ") was killed; the command holding it is pid " << command
            << "\n";

  absl::StatusOr<LockState> state = inspect_lock(dir());
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(state->holders.size(), 1u);
  const Holder& h = state->holders[0];
  EXPECT_EQ(h.pid, command);
  EXPECT_EQ(h.mode, Mode::kExclusive);
  EXPECT_TRUE(h.inherited);
  EXPECT_EQ(h.program, "sleep 1000");
  EXPECT_TRUE(h.start_time.has_value());
  if (kernel[0].pid != 0) {
    EXPECT_EQ(h.taker_pid, wrapper.pid());
  }
  EXPECT_FALSE(h.recorded);
  // The waiting and timeout messages are built from the same answer.
  EXPECT_THAT(timeout_message(dir()),
              HasSubstr("held exclusively by pid " + std::to_string(command) +
                        " 'sleep 1000' (inherited the lock from pid"));
  ASSERT_EQ(::kill(command, SIGKILL), 0);
  EXPECT_TRUE(wait_until([&] { return locks_on(dir() / ".lock").empty(); }));
}

// Text fields are the exact bytes (C1 controls, ESC, bidi overrides kept);
// every library message that prints them escapes them.
TEST_F(HolderTest, TextFieldsAreExactAndMessagesEscapeThem) {
  const std::string hostile =
      "c1\xc2\x9b"
      "esc\x1b[31m"
      "rlo\xe2\x80\xae"
      "end";
  const std::string escaped = "c1\\u009besc\\x1b[31mrlo\\u202eend";
  auto expect_escaped_only = [&](const std::string& message) {
    EXPECT_THAT(message, HasSubstr(escaped));
    EXPECT_EQ(message.find('\x1b'), std::string::npos) << message;
    EXPECT_EQ(message.find("\xc2\x9b"), std::string::npos) << message;
    EXPECT_EQ(message.find("\xe2\x80\xae"), std::string::npos) << message;
  };
  // A tierlock holder: its record carries the command line.
  {
    Process holder =
        Process::spawn({helper_path(), "hold", dir().string(), hostile});
    ASSERT_EQ(holder.read_line(), "locked");
    absl::StatusOr<LockState> state = inspect_lock(dir());
    ASSERT_TRUE(state.ok());
    ASSERT_EQ(state->holders.size(), 1u);
    EXPECT_TRUE(state->holders[0].recorded);
    EXPECT_EQ(state->holders[0].program,
              helper_path() + " hold " + dir().string() + " " + hostile);
    expect_escaped_only(timeout_message(dir()));
    EXPECT_EQ(stop_holder(holder).code, 0);
  }
  // A holder without a record: the command line comes from /proc.
  if (!flock_path().empty()) {
    Process holder =
        Process::spawn({flock_path(), (dir() / ".lock").string(), "sh", "-c",
                        "echo locked; read x", hostile});
    ASSERT_EQ(holder.read_line(), "locked");
    absl::StatusOr<LockState> state = inspect_lock(dir());
    ASSERT_TRUE(state.ok());
    ASSERT_EQ(state->holders.size(), 1u);
    EXPECT_FALSE(state->holders[0].recorded);
    EXPECT_THAT(state->holders[0].program.value_or(""),
                HasSubstr(" " + hostile));
    expect_escaped_only(timeout_message(dir()));
    holder.write_line("go");
    EXPECT_EQ(holder.wait().code, 0);
  }
  // A tier name, from this process's own record.
  absl::StatusOr<DirLock> lock =
      DirLock::open(dir(), {.tier = Tier{7, hostile}});
  ASSERT_TRUE(lock.ok());
  absl::StatusOr<Guard> guard = lock->acquire();
  ASSERT_TRUE(guard.ok());
  absl::StatusOr<std::vector<Holder>> holders = lock->holders();
  ASSERT_TRUE(holders.ok());
  ASSERT_EQ(holders->size(), 1u);
  EXPECT_EQ(holders->front().tier_name, hostile);
}

TEST_F(HolderTest, InspectRejectsBadInput) {
  write_file(dir() / "file", "");
  EXPECT_EQ(inspect_lock(dir() / "missing").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(inspect_lock(dir() / "file").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(inspect_lock(dir(), "a/b").status().code(),
            absl::StatusCode::kInvalidArgument);
  fs::create_directory(dir() / ".lock");
  absl::StatusOr<LockState> dir_as_lock = inspect_lock(dir());
  EXPECT_EQ(dir_as_lock.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(dir_as_lock.status().message()),
              HasSubstr("not a regular file"));
}

// The parser alone: anything malformed is rejected, never read past.
TEST(HolderRecordTest, RoundTripsAndRejectsMalformedBytes) {
  HolderRecord in;
  in.pid = 1234;
  in.start_time = 99;
  in.lock_dev = 1;
  in.lock_ino = 2;
  in.boot_id = "0123456789abcdef-boot";
  in.host = "host\x01\x1b\xc2\x9bname";  // exact bytes, whatever they are
  in.program = "make -j8";
  const std::string bytes = internal::encode_holder_record(in);
  ASSERT_EQ(bytes.size(), kRecordSize);
  absl::StatusOr<HolderRecord> out = internal::parse_holder_record(bytes);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->pid, 1234);
  EXPECT_EQ(out->start_time, 99u);
  EXPECT_EQ(out->host, in.host);
  EXPECT_EQ(out->program, "make -j8");
  EXPECT_TRUE(out->dynamic_valid);
  EXPECT_FALSE(out->held);

  // Held, through the writer's view.
  std::string live = bytes;
  internal::RecordView view(live.data());
  view.set_held(Mode::kShared, Tier{3, "t"});
  out = internal::parse_holder_record(live);
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->held);
  EXPECT_EQ(out->mode, Mode::kShared);
  EXPECT_EQ(out->tier_level, 3);
  EXPECT_EQ(out->tier_name, "t");
  EXPECT_GT(out->since_ns, 0);

  EXPECT_FALSE(internal::parse_holder_record("").ok());
  EXPECT_FALSE(
      internal::parse_holder_record(bytes.substr(0, kRecordSize - 1)).ok());
  EXPECT_FALSE(internal::parse_holder_record(bytes + "x").ok());
  // Every single-byte change in the static part is caught (magic, checksum
  // or range checks); the dynamic part is only ever "not valid".
  for (std::size_t i = 0; i < kRecordSize; ++i) {
    std::string flipped = live;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x5a);
    absl::StatusOr<HolderRecord> r = internal::parse_holder_record(flipped);
    const bool dynamic = i >= 96 && i < 256;
    const bool unused_text =
        (i >= 256 + in.host.size() && i < 512) || i >= 512 + in.program.size();
    if (!dynamic && !unused_text) {
      EXPECT_FALSE(r.ok()) << "byte " << i;
    }
  }
  // A dynamic part caught mid-update (odd sequence number) is not used.
  std::string torn = live;
  torn[96] = static_cast<char>(torn[96] + 1);
  out = internal::parse_holder_record(torn);
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE(out->dynamic_valid);
  EXPECT_FALSE(out->held);
}

}  // namespace
}  // namespace tierlock::testing

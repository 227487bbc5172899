// bench/registry_bench.cc
//
// Registry scale (docs/perf.md): what an acquire costs while N other locks are
// live in the process-wide registry, N = 10, 1,000 and 10,000. Target: flat,
// at most 1.2x from 10 to 10,000. Rows, each at every N:
//   registry/ref_flock_kept_fd/entries:N  flock EX+UN on a kept fd (baseline;
//                                         the same at every N by construction)
//   registry/kept_handle/entries:N        DirLock::acquire+release on a kept
//                                         handle (no registry lookup at all)
//   registry/open_warm/entries:N          DirLock::open + acquire + release;
//                                         the entry stays alive elsewhere, so
//                                         open is a registry lookup
//   registry/open_cold/entries:N          the same with no other handle: every
//                                         iteration inserts the entry, opens
//                                         the file and removes it again
// The N other locks are N directories with their lock files open through
// DirLock handles (one descriptor each), created once and kept between rows.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "tierlock/dir_lock.h"
#include "tierlock/guard.h"
#include "tierlock/mode.h"

namespace {

namespace fs = std::filesystem;

constexpr int kMaxEntries = 10'000;

fs::path g_root;
std::vector<tierlock::DirLock>* g_others = nullptr;  // live handles

// Keeps exactly `n` other entries alive, opening or dropping handles.
bool ensure_others(benchmark::State& state, std::size_t n) {
  std::vector<tierlock::DirLock>& others = *g_others;
  if (others.size() > n) {
    others.erase(others.begin() + static_cast<std::ptrdiff_t>(n), others.end());
  }
  while (others.size() < n) {
    const fs::path dir = g_root / "others" / std::to_string(others.size());
    absl::StatusOr<tierlock::DirLock> lock = tierlock::DirLock::open(dir);
    if (!lock.ok()) {
      state.SkipWithError(std::string(lock.status().message()).c_str());
      return false;
    }
    others.push_back(*std::move(lock));
  }
  return true;
}

bool cycle(benchmark::State& state, tierlock::DirLock& lock) {
  absl::StatusOr<tierlock::Guard> g = lock.acquire();
  if (!g.ok()) [[unlikely]] {
    state.SkipWithError(std::string(g.status().message()).c_str());
    return false;
  }
  return true;
}

void BM_RefFlockKeptFd(benchmark::State& state) {
  if (!ensure_others(state, static_cast<std::size_t>(state.range(0)))) return;
  const std::string path = (g_root / "ref.lock").native();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    state.SkipWithError(std::strerror(errno));
    return;
  }
  for (auto _ : state) {
    ::flock(fd, LOCK_EX);
    ::flock(fd, LOCK_UN);
  }
  ::close(fd);
}

void BM_KeptHandle(benchmark::State& state) {
  if (!ensure_others(state, static_cast<std::size_t>(state.range(0)))) return;
  absl::StatusOr<tierlock::DirLock> lock =
      tierlock::DirLock::open(g_root / "subject");
  if (!lock.ok()) {
    state.SkipWithError(std::string(lock.status().message()).c_str());
    return;
  }
  for (auto _ : state) {
    if (!cycle(state, *lock)) break;
  }
}

void BM_OpenPerUse(benchmark::State& state, bool warm) {
  if (!ensure_others(state, static_cast<std::size_t>(state.range(0)))) return;
  const fs::path dir = g_root / "subject";
  std::optional<tierlock::DirLock> keep;
  if (warm) keep.emplace(tierlock::DirLock::open(dir).value());
  for (auto _ : state) {
    absl::StatusOr<tierlock::DirLock> lock = tierlock::DirLock::open(dir);
    if (!lock.ok()) [[unlikely]] {
      state.SkipWithError(std::string(lock.status().message()).c_str());
      break;
    }
    if (!cycle(state, *lock)) break;
  }
}

// 10,000 entries need 10,000 descriptors: raise the soft limit to the hard one.
bool raise_fd_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return false;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) return false;
  }
  if (lim.rlim_cur < kMaxEntries + 100) {
    std::fprintf(
        stderr, "registry_bench: needs %d descriptors, RLIMIT_NOFILE is %llu\n",
        kMaxEntries + 100, static_cast<unsigned long long>(lim.rlim_cur));
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (!raise_fd_limit()) return 1;
  const char* tmp = std::getenv("TMPDIR");
  std::string templ =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
      "/tierlock-registry-bench.XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  g_root = fs::canonical(templ);
  std::error_code ec;
  for (int i = 0; i < kMaxEntries; ++i) {
    fs::create_directories(g_root / "others" / std::to_string(i), ec);
    if (ec) {
      std::fprintf(stderr, "mkdir: %s\n", ec.message().c_str());
      return 1;
    }
  }
  fs::create_directories(g_root / "subject");
  g_others = new std::vector<tierlock::DirLock>();
  g_others->reserve(kMaxEntries);

  auto sizes = [](benchmark::internal::Benchmark* b) {
    b->ArgName("entries")->Arg(10)->Arg(1'000)->Arg(10'000)->UseRealTime();
  };
  sizes(benchmark::RegisterBenchmark("registry/ref_flock_kept_fd",
                                     BM_RefFlockKeptFd));
  sizes(benchmark::RegisterBenchmark("registry/kept_handle", BM_KeptHandle));
  sizes(
      benchmark::RegisterBenchmark("registry/open_warm", BM_OpenPerUse, true));
  sizes(
      benchmark::RegisterBenchmark("registry/open_cold", BM_OpenPerUse, false));

#ifdef NDEBUG
  benchmark::AddCustomContext("registry_bench_build", "release (NDEBUG)");
#else
  benchmark::AddCustomContext("registry_bench_build", "debug (assertions on)");
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  delete g_others;
  fs::remove_all(g_root, ec);
  return 0;
}

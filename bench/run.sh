#!/usr/bin/env bash
# Builds the benchmarks in Release, runs each (5 interleaved repetitions,
# aggregates only) and prints the tables of medians and within-run ratios.
#   core_bench     uncontended, new handle, in-process contention (rows 1-3)
#   acquire_bench  cross-process handoff, cancel latency, async throughput
#   tier_bench     tier-check cost; built twice: without debug checks (in
#                  BUILD_DIR) and with TIERLOCK_DEBUG_CHECKS=ON (BUILD_DIR-checks)
#
# Usage: bench/run.sh [OUT.json] [extra Google Benchmark flags...]
#   OUT.json defaults to build/bench/core_bench-<UTC timestamp>.json (and
#   build/bench/acquire_bench-<same>.json); given OUT.json, acquire_bench
#   writes OUT with ".json" replaced by ".acquire.json".
#   e.g. bench/run.sh /tmp/r.json --benchmark_filter=uncontended
#   (flags go to both binaries; one that matches nothing is left out)
# Environment: BUILD_DIR (default build/bench); BENCHES (default
# "core_bench acquire_bench"); TIERLOCK_BENCH_WINDOW_MS (core_bench's
# contention window per repetition, default 300); acquire_bench's
# TIERLOCK_BENCH_CANCELS / _HANDOFFS / _ASYNC_N / _SETTLE_US / _TIMEOUT_US
# (see bench/acquire_bench.cc).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build_dir="${BUILD_DIR:-build/bench}"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$build_dir/core_bench-$stamp.json"
named_out=0
if [[ $# -gt 0 && "$1" != --* ]]; then
  out="$1"
  named_out=1
  shift
fi

generator=()
if [[ ! -f "$build_dir/CMakeCache.txt" ]] && command -v ninja >/dev/null; then
  generator=(-G Ninja)
fi
cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DTIERLOCK_BUILD_TESTS=OFF -DTIERLOCK_BUILD_EXAMPLES=OFF \
  -DTIERLOCK_BUILD_BENCHMARKS=ON >/dev/null
read -r -a benches <<<"${BENCHES:-core_bench acquire_bench tier_bench}"
cmake --build "$build_dir" --target "${benches[@]}"
run_list=()
for bench in "${benches[@]}"; do
  run_list+=("$build_dir/bench/$bench")
  if [[ "$bench" == tier_bench ]]; then
    checks_dir="$build_dir-checks"
    if [[ ! -f "$checks_dir/CMakeCache.txt" ]] && command -v ninja >/dev/null; then
      checks_gen=(-G Ninja)
    else
      checks_gen=()
    fi
    cmake -S . -B "$checks_dir" "${checks_gen[@]}" -DCMAKE_BUILD_TYPE=Release \
      -DTIERLOCK_BUILD_TESTS=OFF -DTIERLOCK_BUILD_EXAMPLES=OFF \
      -DTIERLOCK_BUILD_BENCHMARKS=ON -DTIERLOCK_DEBUG_CHECKS=ON >/dev/null
    cmake --build "$checks_dir" --target tier_bench
    run_list+=("$checks_dir/bench/tier_bench")
  fi
done

mkdir -p "$(dirname "$out")"
echo "Google Benchmark's 'Library was built as DEBUG' warning is Debian's" \
  "libbenchmark; it affects every row equally" >&2
outs=()
for binary in "${run_list[@]}"; do
  bench="$(basename "$binary")"
  [[ "$binary" == *-checks/* ]] && bench="${bench}_checks"
  bench_out="$out"
  if [[ "$bench" != core_bench ]]; then
    if [[ $named_out -eq 1 ]]; then
      bench_out="${out%.json}.${bench%_bench}.json"
    else
      bench_out="$build_dir/$bench-$stamp.json"
    fi
  fi
  rm -f "$bench_out"
  echo "$bench: writing $bench_out (load before: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  "$binary" \
    --benchmark_repetitions=5 \
    --benchmark_enable_random_interleaving=true \
    --benchmark_report_aggregates_only=true \
    --benchmark_out="$bench_out" --benchmark_out_format=json \
    "$@" >&2
  echo "$bench: load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  # A filter that matches nothing in this binary leaves no results.
  if [[ -s "$bench_out" ]] && grep -q '"run_name"' "$bench_out"; then
    outs+=("$bench_out")
  fi
done

if [[ ${#outs[@]} -eq 0 ]]; then
  echo "run.sh: no benchmark results" >&2
  exit 1
fi
python3 bench/ratios.py "${outs[@]}"

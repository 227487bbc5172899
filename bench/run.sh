#!/usr/bin/env bash
# Builds core_bench in Release, runs it (5 interleaved repetitions, aggregates
# only) and prints the table of medians and within-run ratios.
#
# Usage: bench/run.sh [OUT.json] [extra Google Benchmark flags...]
#   OUT.json defaults to build/bench/core_bench-<UTC timestamp>.json.
#   e.g. bench/run.sh /tmp/r.json --benchmark_filter=uncontended
# Environment: BUILD_DIR (default build/bench), TIERLOCK_BENCH_WINDOW_MS
# (contention window per repetition, default 300).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build_dir="${BUILD_DIR:-build/bench}"

out="$build_dir/core_bench-$(date -u +%Y%m%dT%H%M%SZ).json"
if [[ $# -gt 0 && "$1" != --* ]]; then
  out="$1"
  shift
fi

generator=()
if [[ ! -f "$build_dir/CMakeCache.txt" ]] && command -v ninja >/dev/null; then
  generator=(-G Ninja)
fi
cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DTIERLOCK_BUILD_TESTS=OFF -DTIERLOCK_BUILD_EXAMPLES=OFF \
  -DTIERLOCK_BUILD_BENCHMARKS=ON >/dev/null
cmake --build "$build_dir" --target core_bench

mkdir -p "$(dirname "$out")"
echo "core_bench: writing $out (Google Benchmark's 'Library was built as DEBUG'" \
  "warning is Debian's libbenchmark; it affects every row equally)" >&2
"$build_dir/bench/core_bench" \
  --benchmark_repetitions=5 \
  --benchmark_enable_random_interleaving=true \
  --benchmark_report_aggregates_only=true \
  --benchmark_out="$out" --benchmark_out_format=json \
  "$@" >&2

python3 bench/ratios.py "$out"

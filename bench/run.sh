#!/usr/bin/env bash
# Every benchmark row of docs/perf.md in one command: builds the benchmarks in
# Release, runs each binary (5 interleaved repetitions, aggregates only), the
# CLI rows with hyperfine, then prints the tables of medians and within-run
# ratios and draws the plots.
#   core_bench      uncontended, new handle, in-process contention (rows 1-3)
#   acquire_bench   cross-process handoff, cancel latency, timeouts, async
#   tier_bench      tier-check cost; built twice: without debug checks (in
#                   BUILD_DIR) and with TIERLOCK_DEBUG_CHECKS=ON (BUILD_DIR-checks)
#   registry_bench  acquires and opens with 10 / 1,000 / 10,000 live entries
#   lease_bench     leases on real Redis / PostgreSQL / SQLite on loopback
#                   beside the raw protocols, hand-off woken vs polled; not in
#                   the default list (it starts servers): BENCHES=lease_bench;
#                   built in BUILD_DIR-lease with the tests on (its servers
#                   come from tests/lease/servers.h)
#   cli             `tierlock run` beside flock(1) and Python's filelock
#                   (bench/cli_bench.sh; hyperfine)
#
# Usage: bench/run.sh [OUT_DIR] [extra Google Benchmark flags...]
#   OUT_DIR (default build/bench/results-<UTC timestamp>) receives one JSON per
#   binary (core.json, acquire.json, tier.json, tier_checks.json,
#   registry.json, cli.json), report.md (the tables) and the plots
#   (contention.svg, summary.svg).
#   e.g. bench/run.sh /tmp/r --benchmark_filter=uncontended
#   PUBLISH_DIR=docs/perf bench/run.sh   also copies report.md, the plots and
#   the JSON (compacted) to docs/perf/, as committed beside docs/perf.md.
#   (flags go to every binary; one that matches nothing is left out)
# Environment: BUILD_DIR (default build/bench); BENCHES (default
# "core_bench acquire_bench tier_bench registry_bench cli"); CLI_RUNS
# (hyperfine runs per command, default 300); TIERLOCK_BENCH_WINDOW_MS
# (core_bench's contention window per repetition, default 300);
# acquire_bench's TIERLOCK_BENCH_CANCELS / _HANDOFFS / _ASYNC_N / _SETTLE_US /
# _TIMEOUT_US (see bench/acquire_bench.cc).
# Installs what it needs and the tests do not (hyperfine, python3-matplotlib)
# from Debian packages when missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build_dir="${BUILD_DIR:-build/bench}"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out_dir="$build_dir/results-$stamp"
if [[ $# -gt 0 && "$1" != --* ]]; then
  out_dir="$1"
  shift
fi
mkdir -p "$out_dir"
read -r -a benches <<<"${BENCHES:-core_bench acquire_bench tier_bench registry_bench cli}"

# Packages the benchmarks need beyond scripts/deps.sh.
need=()
for b in "${benches[@]}"; do
  [[ $b == cli ]] && ! command -v hyperfine >/dev/null && need+=(hyperfine)
done
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || need+=(python3-matplotlib)
if ((${#need[@]})); then
  sudo=()
  [[ $(id -u) -ne 0 ]] && sudo=(sudo)
  echo "run.sh: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y \
    --no-install-recommends "${need[@]}" >/dev/null
fi

configure() {  # configure DIR [extra cmake args...]
  local dir=$1
  shift
  local generator=()
  if [[ ! -f "$dir/CMakeCache.txt" ]] && command -v ninja >/dev/null; then
    generator=(-G Ninja)
  fi
  cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DTIERLOCK_BUILD_TESTS=OFF -DTIERLOCK_BUILD_EXAMPLES=OFF \
    -DTIERLOCK_BUILD_BENCHMARKS=ON "$@" >/dev/null
}

configure "$build_dir"
targets=()
run_list=()
for bench in "${benches[@]}"; do
  case $bench in
    cli)
      targets+=(tierlock_cli)
      ;;
    tier_bench)
      targets+=(tier_bench)
      run_list+=("$build_dir/bench/tier_bench")
      configure "$build_dir-checks" -DTIERLOCK_DEBUG_CHECKS=ON
      cmake --build "$build_dir-checks" --target tier_bench
      run_list+=("$build_dir-checks/bench/tier_bench")
      ;;
    lease_bench)
      configure "$build_dir-lease" -DTIERLOCK_BUILD_TESTS=ON
      cmake --build "$build_dir-lease" --target lease_bench
      run_list+=("$build_dir-lease/bench/lease_bench")
      ;;
    *)
      targets+=("$bench")
      run_list+=("$build_dir/bench/$bench")
      ;;
  esac
done
if ((${#targets[@]})); then
  cmake --build "$build_dir" --target "${targets[@]}"
fi

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty=""
git diff --quiet HEAD 2>/dev/null || dirty=" (with uncommitted changes)"
echo "Google Benchmark's 'Library was built as DEBUG' warning is Debian's" \
  "libbenchmark; it affects every row equally" >&2
outs=()
for binary in "${run_list[@]}"; do
  name="$(basename "$binary" _bench)"
  [[ "$binary" == *-checks/* ]] && name="${name}_checks"
  bench_out="$out_dir/$name.json"
  rm -f "$bench_out"
  echo "$name: writing $bench_out (load before: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  "$binary" \
    --benchmark_repetitions=5 \
    --benchmark_enable_random_interleaving=true \
    --benchmark_report_aggregates_only=true \
    --benchmark_context=commit="$commit$dirty" \
    --benchmark_out="$bench_out" --benchmark_out_format=json \
    "$@" >&2
  echo "$name: load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  # A filter that matches nothing in this binary leaves no results.
  if [[ -s "$bench_out" ]] && grep -q '"run_name"' "$bench_out"; then
    outs+=("$bench_out")
  fi
done

for bench in "${benches[@]}"; do
  if [[ $bench == cli ]]; then
    echo "cli: writing $out_dir/cli.json" >&2
    TIERLOCK="$root/$build_dir/tools/tierlock/tierlock" CLI_JSON="$out_dir/cli.json" \
      bench/cli_bench.sh "${CLI_RUNS:-300}" >&2
    outs+=("$out_dir/cli.json")
  fi
done

if [[ ${#outs[@]} -eq 0 ]]; then
  echo "run.sh: no benchmark results" >&2
  exit 1
fi
{
  echo "Commit $commit$dirty, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, kernel $(uname -r)."
  echo
  python3 bench/ratios.py "${outs[@]}"
} | tee "$out_dir/report.md"
/usr/bin/python3 bench/plot.py "$out_dir" >&2
echo "run.sh: results in $out_dir" >&2
# PUBLISH_DIR=docs/perf: also copy the report, the plots and the JSON
# (compacted) there, to commit beside docs/perf.md.
if [[ -n "${PUBLISH_DIR:-}" ]]; then
  mkdir -p "$PUBLISH_DIR"
  cp "$out_dir/report.md" "$out_dir"/*.svg "$PUBLISH_DIR/"
  for f in "$out_dir"/*.json; do
    python3 -c 'import json, sys
json.dump(json.load(open(sys.argv[1])), open(sys.argv[2], "w"), separators=(",", ":"))' \
      "$f" "$PUBLISH_DIR/$(basename "$f")"
  done
  echo "run.sh: published to $PUBLISH_DIR" >&2
fi

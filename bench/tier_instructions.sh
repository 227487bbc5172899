#!/usr/bin/env bash
# bench/tier_instructions.sh: instructions per acquire+release of each
# tier_bench row, counted by valgrind (callgrind), which gives the same count
# on every run; the time rows move with the machine's load.
#
# Usage: bench/tier_instructions.sh [BUILD_DIR ...]
#   (default: build/bench build/bench-checks, as bench/run.sh leaves them)
# Each row runs twice, with N and 2N iterations (TIER_BENCH_ITERATIONS); the
# difference divided by N is the row's cost without start-up.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || {
  echo "tier_instructions.sh: needs valgrind (apt-get install valgrind)" >&2
  exit 2
}
dirs=("$@")
[[ ${#dirs[@]} -gt 0 ]] || dirs=(build/bench build/bench-checks)
rows=(untiered_off tiered_off tiered_on untiered_off_depth2 tiered_on_depth2)
n=20000
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

count() {  # count BINARY ROW ITERATIONS
  TIER_BENCH_ITERATIONS=$3 valgrind --tool=callgrind \
    --callgrind-out-file="$tmp/out" "$1" --benchmark_filter="/$2(/|\$)" \
    >/dev/null 2>"$tmp/err"
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/err"
}

for dir in "${dirs[@]}"; do
  bin="$dir/bench/tier_bench"
  [[ -x $bin ]] || { echo "no $bin: run bench/run.sh first" >&2; exit 2; }
  echo "## $bin"
  declare -A per=()
  for row in "${rows[@]}"; do
    a=$(count "$bin" "$row" "$n")
    b=$(count "$bin" "$row" $((2 * n)))
    per[$row]=$(((b - a) / n))
  done
  printf '%-22s %6s %s\n' row instr "extra vs unchecked"
  for row in "${rows[@]}"; do
    base=untiered_off
    [[ $row == *depth2 ]] && base=untiered_off_depth2
    printf '%-22s %6d %+d\n' "$row" "${per[$row]}" $((per[$row] - per[$base]))
  done
  unset per
done

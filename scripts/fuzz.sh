#!/usr/bin/env bash
# Builds the libFuzzer targets (`fuzz` preset: clang, ASan+UBSan) and runs
# each on a scratch copy of its committed corpus (tests/fuzz/corpus/<name>)
# for FUZZ_SECONDS (default 60). Any crash, leak or failed check fails.
# New inputs are kept in the scratch copy; to grow the committed corpus run
#   build/fuzz/tests/fuzz/<name>_fuzz -merge=1 tests/fuzz/corpus/<name> DIR
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for name in holder_record held_env; do
  mkdir -p "$scratch/$name"
  cp tests/fuzz/corpus/$name/* "$scratch/$name/"
  echo "fuzz: $name for ${seconds}s on $(ls "$scratch/$name" | wc -l) corpus inputs"
  "build/fuzz/tests/fuzz/${name}_fuzz" -max_total_time="$seconds" -seed=1 \
    -print_final_stats=1 "$scratch/$name" 2>&1 | tail -n 12
done
echo "fuzz: no crash"

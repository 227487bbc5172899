#!/usr/bin/env bash
# Runs clang-tidy (.clang-tidy: bugprone-*, concurrency-*, performance-*) on
# the library's sources, and the CLI's when tools/ exists, using the
# compile_commands.json of a configured preset (default: dev). Fails on any
# finding. Usage: ./scripts/tidy.sh [PRESET]
set -euo pipefail
cd "$(dirname "$0")/.."

preset=${1:-dev}
db="build/$preset"
if [[ ! -f "$db/compile_commands.json" ]]; then
  cmake --preset "$preset" >/dev/null
fi
tidy=$(command -v clang-tidy || command -v clang-tidy-14 || true)
if [[ -z "$tidy" ]]; then
  echo "tidy: clang-tidy not found (scripts/deps.sh installs it)" >&2
  exit 1
fi
# The Windows platform files (src/platform/win32_*.cc) are not in a Linux
# preset's compile_commands.json and need <windows.h>: the mingw build's
# -Werror is their check.
mapfile -t files < <(find src tools -name '*.cc' ! -name 'win32_*' 2>/dev/null | sort)
echo "tidy: $("$tidy" --version | grep -m1 -o 'version [0-9.]*') on ${#files[@]} files"
# Two at a time (the CI machine has two cores); any finding fails the run
# (WarningsAsErrors makes clang-tidy exit non-zero, and so xargs).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
printf '%s\0' "${files[@]}" |
  xargs -0 -n1 -P2 "$tidy" -p "$db" --quiet >"$log" 2>&1 || status=$?
grep -v -E '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$' "$log" || true
if ((status != 0)) || grep -q -E '(warning|error):' "$log"; then
  echo "tidy: findings above" >&2
  exit 1
fi
echo "tidy: clean"

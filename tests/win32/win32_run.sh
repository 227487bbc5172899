#!/bin/sh
# Runs one Windows test program under Wine: win32_run.sh WINE PROGRAM ARGS...
#
# Wine, rarely, exits before the program has run at all (seen once in CI: a
# failure after 0.02 s with no output). That is not a test result, so it is
# retried, at most twice, and said so on stderr. Anything that reached the
# test's main() (GoogleTest's "Running main() from" line) is never retried:
# a failing test fails.
wine=$1
shift
out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT
attempt=1
while :; do
  "$wine" "$@" >"$out" 2>&1
  rc=$?
  cat "$out"
  if [ "$rc" -eq 0 ] || grep -q '^Running main() from' "$out" || [ "$attempt" -ge 3 ]; then
    exit "$rc"
  fi
  echo "win32_run.sh: wine exited with status $rc before the program's main() ran (attempt $attempt of 3); starting it again" >&2
  attempt=$((attempt + 1))
done

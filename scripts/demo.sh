#!/usr/bin/env bash
# Installs the dependencies, builds the example program `lock_dir` (release
# preset) and shows it locking a temporary directory: a command run under the
# lock, contention seen by another process, shared holders, and flock(1) interop.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
cmake --preset release
cmake --build --preset release --target lock_dir -j "$(nproc)"
lock_dir=$PWD/build/release/examples/lock_dir

dir=$(mktemp -d "${TMPDIR:-/tmp}/tierlock-demo.XXXXXX")
sync_dir=$(mktemp -d "${TMPDIR:-/tmp}/tierlock-demo-sync.XXXXXX")
holder=
cleanup() {
  if [[ -n $holder ]]; then echo >&4; wait "$holder" || true; fi
  rm -rf "$dir" "$sync_dir"
}
trap cleanup EXIT
# Two FIFOs, kept open read-write here so no open(2) on them ever blocks:
# the holder writes a line to `ready` once it has the lock; we write to `go`.
mkfifo "$sync_dir/ready" "$sync_dir/go"
exec 3<>"$sync_dir/ready" 4<>"$sync_dir/go"

# Starts `lock_dir ARGS "$dir" -- <signal ready, wait for go>` in the background
# and returns once it holds the lock. No sleeps: the FIFOs synchronise.
hold() {
  "$lock_dir" "$@" "$dir" -- sh -c 'echo > "$1/ready"; read -r _ < "$1/go"' sh "$sync_dir" &
  holder=$!
  if ! read -t 60 -r _ <&3; then
    echo "demo: the background holder did not take the lock" >&2
    exit 1
  fi
}
let_go() {
  echo >&4
  wait "$holder"
  holder=
}
# expect CODE COMMAND...: runs COMMAND, shows its exit status, and stops the
# demo if it is not CODE.
expect() {
  local want=$1 rc=0
  shift
  "$@" || rc=$?
  if [[ $rc -ne $want ]]; then
    echo "  -> exit $rc, expected $want: demo FAILED" >&2
    exit 1
  fi
  echo "  -> exit $rc (as expected)"
}

echo
echo "== 1. Run a command while holding $dir exclusively"
expect 0 "$lock_dir" "$dir" -- sh -c 'echo "  the command runs under the lock (pid $$)"'

echo
echo "== 2. Another process holds it: --try gives up at once with exit 75"
hold
expect 75 "$lock_dir" --try "$dir"
echo "  flock(1) sees the same kernel lock:"
expect 75 flock --nonblock --conflict-exit-code 75 "$dir/.lock" true
let_go

echo
echo "== 3. Shared holders coexist; an exclusive --try still fails"
hold --shared
expect 0 "$lock_dir" --try --shared "$dir" -- echo "  a second shared holder got in"
expect 75 "$lock_dir" --try "$dir"
let_go

echo
echo "== 4. Released: --try succeeds again"
expect 0 "$lock_dir" --try "$dir"
echo
echo "demo done (lock_dir is at $lock_dir)"

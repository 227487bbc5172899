#!/usr/bin/env bash
# Installs the dependencies, builds the `tierlock` command (release preset) and
# shows it guarding a temporary directory: a command run under the lock, a
# second run waiting and naming the holder, `tierlock status`, --no-wait, shared
# holders, and flock(1) on the same lock.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
cmake --preset release
cmake --build --preset release --target tierlock_cli -j "$(nproc)"
tierlock=$PWD/build/release/tools/tierlock/tierlock

dir=$(mktemp -d "${TMPDIR:-/tmp}/tierlock-demo.XXXXXX")
sync_dir=$(mktemp -d "${TMPDIR:-/tmp}/tierlock-demo-sync.XXXXXX")
holder=
waiter=
cleanup() {
  if [[ -n $holder ]]; then echo >&4; wait "$holder" || true; fi
  if [[ -n $waiter ]]; then wait "$waiter" || true; fi
  rm -rf "$dir" "$sync_dir"
}
trap cleanup EXIT
# FIFOs kept open read-write here, so no open(2) on them ever blocks: the
# holder writes a line to `ready` once it has the lock; we write to `go` to
# let it finish; a waiting `tierlock run` writes its stderr to `msgs`.
mkfifo "$sync_dir/ready" "$sync_dir/go" "$sync_dir/msgs"
exec 3<>"$sync_dir/ready" 4<>"$sync_dir/go" 5<>"$sync_dir/msgs"

# hold OPTIONS...: `tierlock run OPTIONS $dir -- <signal ready, wait for go>`
# in the background; returns once it holds the lock. No sleeps: FIFOs sync.
hold() {
  "$tierlock" run "$@" "$dir" -- sh -c 'echo > "$1/ready"; read -r _ < "$1/go"' sh "$sync_dir" &
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
  echo "\$ ${*/#$tierlock/tierlock}"
  "$@" || rc=$?
  if [[ $rc -ne $want ]]; then
    echo "  -> exit $rc, expected $want: demo FAILED" >&2
    exit 1
  fi
  echo "  -> exit $rc (as expected)"
}

echo
echo "== 1. Run a command while holding $dir exclusively"
expect 0 "$tierlock" run "$dir" -- sh -c 'echo "  the command runs under the lock; TIERLOCK_DIR=$TIERLOCK_DIR"'

echo
echo "== 2. Another process holds it: status names it, a second run waits and says for whom"
hold --tier 10:demo
expect 0 "$tierlock" status "$dir"
expect 0 "$tierlock" status --json "$dir"
echo "\$ tierlock run $dir -- echo '  got the lock'    (in the background)"
"$tierlock" run "$dir" -- echo "  got the lock" 2>&5 &
waiter=$!
# The waiting message comes after ~0.5 s; show it, then release the holder.
if ! read -t 30 -r line <&5; then
  echo "demo: no waiting message" >&2
  exit 1
fi
echo "  $line"
let_go
wait "$waiter"
waiter=
echo "  -> the waiting run got the lock once the holder finished"

echo
echo "== 3. --no-wait gives up at once with exit 75; flock(1) sees the same lock"
hold
expect 75 "$tierlock" run --no-wait "$dir" -- echo "not printed"
expect 1 flock --nonblock "$dir/.lock" true
let_go

echo
echo "== 4. Shared holders coexist; an exclusive --no-wait still fails"
hold --shared
expect 0 "$tierlock" run --shared --no-wait "$dir" -- echo "  a second shared holder got in"
expect 75 "$tierlock" run --no-wait -q "$dir" -- true
let_go

echo
echo "== 5. Released: free again"
expect 0 "$tierlock" status "$dir"
echo
echo "demo done (tierlock is at $tierlock; see docs/cli.md)"

#!/usr/bin/env bash
# The `tierlock` command beside flock(1) and Python's filelock, side by side
# with hyperfine -N (no shell): one uncontended lock+run+unlock of `true`.
# Targets: tierlock <= 1.3x flock(1), >= 10x faster than python3.
#
# Usage: bench/cli_bench.sh [RUNS]   (default 300 runs each, 30 warm-up)
# Builds the release preset's tierlock (build/release), installs hyperfine
# (Debian package) if it is missing, prints hyperfine's table and the ratios.
# Environment: TIERLOCK (a tierlock binary to use instead of building one);
# CLI_JSON (keep hyperfine's JSON there; bench/run.sh passes it to ratios.py).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-300}

if ! command -v hyperfine >/dev/null; then
  sudo=()
  [[ $(id -u) -ne 0 ]] && sudo=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends hyperfine
fi
tierlock=${TIERLOCK:-}
if [[ -z $tierlock ]]; then
  cmake --preset release >/dev/null
  cmake --build --preset release --target tierlock_cli -j2 >/dev/null
  tierlock=$PWD/build/release/tools/tierlock/tierlock
fi
flock=$(command -v flock)
true_bin=$(command -v true)
# The python3 that has filelock (the first one in PATH may be a pyenv/venv).
python=
for p in "$(command -v python3 || true)" /usr/bin/python3; do
  if [[ -n $p ]] && "$p" -c 'import filelock' 2>/dev/null; then python=$p; break; fi
done
[[ -n $python ]] || { echo "cli_bench: no python3 with filelock (apt-get install python3-filelock)" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/tierlock-cli-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
json=${CLI_JSON:-$dir/result.json}
# Python runs `true` too, so all three do the same work: lock, run, unlock.
py_cmd="import filelock, subprocess, sys
with filelock.FileLock(sys.argv[1]):
    subprocess.run([sys.argv[2]])"

hyperfine -N --warmup 30 --runs "$runs" --export-json "$json" \
  -n "tierlock run" "$tierlock run $dir -- $true_bin" \
  -n "flock(1)" "$flock $dir/.lock $true_bin" \
  -n "python3 filelock" "$python -c '$py_cmd' $dir/.lock $true_bin"

"$python" - "$json" <<'PY'
import json, sys
r = {b["command"]: b for b in json.load(open(sys.argv[1]))["results"]}
t, f, p = r["tierlock run"], r["flock(1)"], r["python3 filelock"]
for name, b in r.items():
    print(f"{name:18s} mean {b['mean']*1e3:6.2f} ms  median {b['median']*1e3:6.2f} ms  "
          f"user {b['user']*1e3:5.2f} ms  system {b['system']*1e3:5.2f} ms")
print(f"tierlock / flock(1):        {t['mean']/f['mean']:.2f}x mean, "
      f"{t['median']/f['median']:.2f}x median   (target <= 1.3x)")
print(f"python3 filelock / tierlock: {p['mean']/t['mean']:.1f}x mean, "
      f"{p['median']/t['median']:.1f}x median   (target >= 10x)")
PY

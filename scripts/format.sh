#!/usr/bin/env bash
# One code style: .clang-format (Google) over every C++ file git tracks.
#   ./scripts/format.sh         check only; fails listing the files that differ
#   ./scripts/format.sh --fix   rewrite them in place
# Regions that must keep their order (Windows headers after <windows.h>) are
# fenced with `// clang-format off` / `// clang-format on` where they are.
set -euo pipefail
cd "$(dirname "$0")/.."

fmt=$(command -v clang-format || command -v clang-format-14 || true)
if [[ -z "$fmt" ]]; then
  echo "format: clang-format not found (scripts/deps.sh installs it)" >&2
  exit 1
fi
mapfile -t files < <(git ls-files '*.h' '*.cc' '*.cpp')
echo "format: $("$fmt" --version | grep -m1 -o 'version [0-9.]*') on ${#files[@]} files"
if [[ ${1:-} == --fix ]]; then
  printf '%s\0' "${files[@]}" | xargs -0 "$fmt" -i
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  if ! "$fmt" --dry-run --Werror "$f" >/dev/null 2>&1; then
    bad+=("$f")
  fi
done
if ((${#bad[@]})); then
  printf 'format: not formatted: %s\n' "${bad[@]}" >&2
  echo "format: run ./scripts/format.sh --fix" >&2
  exit 1
fi
echo "format: clean"

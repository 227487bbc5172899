#!/usr/bin/env bash
# packaging.deb: makes this build's Debian packages with cpack, checks what
# each holds, extracts both with dpkg-deb -x into a temporary directory
# (nothing is installed on the machine) and uses them from there: the
# command, the lease command beside it, the manual, a find_package consumer
# and a pkg-config consumer of the -dev package.
#   check_deb.sh BUILD_DIR SOURCE_DIR CMAKE CPACK GENERATOR BUILD_TYPE CXX [PKG_CONFIG]
set -euo pipefail

build=$1 source=$2 cmake=$3 cpack=$4 generator=$5 build_type=$6 cxx=$7 pkg_config=${8:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/tierlock-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() {
  echo "check_deb: $*" >&2
  exit 1
}

start=$SECONDS
(cd "$build" && "$cpack" -G DEB -B "$work/out" --config "$build/CPackConfig.cmake") \
  >"$work/cpack.log" 2>&1 || { cat "$work/cpack.log"; fail "cpack -G DEB in $build failed (log above)"; }
echo "cpack -G DEB: $((SECONDS - start)) s"

shopt -s nullglob
cli_debs=("$work"/out/tierlock_*.deb)
dev_debs=("$work"/out/libtierlock-dev_*.deb)
((${#cli_debs[@]} == 1)) || fail "expected one tierlock_*.deb in $work/out, found: $(ls "$work/out")"
((${#dev_debs[@]} == 1)) || fail "expected one libtierlock-dev_*.deb in $work/out, found: $(ls "$work/out")"
cli_deb=${cli_debs[0]} dev_deb=${dev_debs[0]}
for deb in "$cli_deb" "$dev_deb"; do
  echo "== $(basename "$deb"): $(stat -c %s "$deb") bytes"
  dpkg-deb --field "$deb" Package Version Architecture Depends Suggests
done

# What each package holds (paths as dpkg-deb -c prints them).
contents() { dpkg-deb -c "$1" | awk '{print $NF}' | sed 's|^\./|/|'; }
cli_files=$(contents "$cli_deb")
dev_files=$(contents "$dev_deb")
expect_in() {  # expect_in NAME FILES PATH...
  local name=$1 files=$2 path
  shift 2
  for path in "$@"; do
    grep -qxF -- "$path" <<<"$files" || fail "$name lacks $path; it holds:"$'\n'"$files"
  done
}
expect_not_in() {  # expect_not_in NAME FILES REGEX
  if grep -qE -- "$3" <<<"$2"; then
    fail "$1 holds files that belong in the other package: $(grep -E -- "$3" <<<"$2" | head -3)"
  fi
}
expect_in tierlock "$cli_files" /usr/bin/tierlock /usr/share/man/man1/tierlock.1 \
  /usr/share/bash-completion/completions/tierlock /usr/share/zsh/vendor-completions/_tierlock \
  /usr/share/fish/vendor_completions.d/tierlock.fish
expect_not_in tierlock "$cli_files" '^/usr/(include|lib/cmake|lib/pkgconfig)/'
# The library's variant follows the build type (Debug: the d postfix).
pf=""
[[ $build_type == Debug ]] && pf=d
expect_in libtierlock-dev "$dev_files" /usr/include/tierlock/dir_lock.h \
  /usr/lib/cmake/tierlock/tierlockConfig.cmake /usr/lib/cmake/tierlock/tierlockConfigVersion.cmake \
  "/usr/lib/pkgconfig/tierlock$pf.pc"
grep -qE "^/usr/lib/libtierlock$pf\.(a|so)$" <<<"$dev_files" ||
  fail "libtierlock-dev lacks /usr/lib/libtierlock$pf.{a,so}; it holds:"$'\n'"$dev_files"
expect_not_in libtierlock-dev "$dev_files" '^/usr/(bin|share/man)/'
if grep -q '^/usr/lib/libtierlock_lease_sqlite' <<<"$dev_files"; then
  expect_in libtierlock-dev "$dev_files" "/usr/lib/pkgconfig/tierlock_lease$pf.pc" \
    "/usr/lib/pkgconfig/tierlock_lease_sqlite$pf.pc"
fi

root=$work/root
dpkg-deb -x "$cli_deb" "$root"
dpkg-deb -x "$dev_deb" "$root"

# The extracted command on a fresh directory: the lock, the environment, status.
ws=$work/ws
mkdir "$ws"
out=$("$root/usr/bin/tierlock" run "$ws" -- sh -c 'echo "dir=$TIERLOCK_DIR"') ||
  fail "$root/usr/bin/tierlock run $ws -- sh -c ... failed"
[[ $out == "dir=$(realpath "$ws")" ]] || fail "tierlock run $ws: the command printed '$out'"
[[ -f $ws/.lock ]] || fail "tierlock run $ws left no $ws/.lock"
"$root/usr/bin/tierlock" status "$ws" | grep -q 'free' ||
  fail "tierlock status $ws does not say free"
# --backend execs tierlock-lease from the command's own directory.
if [[ -x $root/usr/bin/tierlock-lease ]]; then
  "$root/usr/bin/tierlock" run --backend "sqlite:$work/leases.db" --key packaging -- true ||
    fail "$root/usr/bin/tierlock run --backend sqlite:$work/leases.db failed"
fi
LC_ALL=C MANWIDTH=80 man -l "$root/usr/share/man/man1/tierlock.1" | grep -q 'tierlock run' ||
  fail "man -l $root/usr/share/man/man1/tierlock.1 does not show 'tierlock run'"
bash --norc --noprofile -c 'source "$1" && complete -p tierlock' _ \
  "$root/usr/share/bash-completion/completions/tierlock" >/dev/null ||
  fail "the packaged bash completion registers nothing for tierlock"

# find_package against the extracted -dev package (its files locate each
# other relative to themselves), with the lease components when packaged.
consumer_options=()
if grep -q '^/usr/lib/libtierlock_lease_sqlite' <<<"$dev_files"; then
  consumer_options+=(-DTIERLOCK_CONSUMER_LEASES=ON)
fi
"$cmake" -S "$source/tests/consumer" -B "$work/consumer" -G "$generator" \
  "-DCMAKE_PREFIX_PATH=$root/usr" "-DTIERLOCK_EXPECTED_PREFIX=$root/usr" \
  "-DCMAKE_CXX_COMPILER=$cxx" "-DCMAKE_BUILD_TYPE=$build_type" "${consumer_options[@]}" \
  >"$work/consumer.log" 2>&1 &&
  "$cmake" --build "$work/consumer" >>"$work/consumer.log" 2>&1 ||
  { cat "$work/consumer.log"; fail "find_package(tierlock) consumer against $root/usr failed (log above)"; }
"$work/consumer/tierlock_consumer" || fail "$work/consumer/tierlock_consumer failed"
if [[ -x $work/consumer/tierlock_lease_consumer ]]; then
  "$work/consumer/tierlock_lease_consumer" || fail "$work/consumer/tierlock_lease_consumer failed"
fi

# pkg-config, lease libraries included.
if [[ -n $pkg_config ]] && grep -q '^/usr/lib/libtierlock_lease_sqlite' <<<"$dev_files"; then
  flags=$(PKG_CONFIG_PATH="$root/usr/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" \
    "$pkg_config" --cflags --libs "tierlock_lease_sqlite$pf") ||
    fail "pkg-config --cflags --libs tierlock_lease_sqlite$pf against $root/usr/lib/pkgconfig failed"
  echo "pkg-config tierlock_lease_sqlite$pf: $flags"
  # shellcheck disable=SC2086  # flags are words
  "$cxx" -std=c++20 "$source/tests/consumer/lease_main.cc" -o "$work/pc_lease_consumer" $flags ||
    fail "compiling tests/consumer/lease_main.cc with pkg-config tierlock_lease_sqlite$pf failed"
  "$work/pc_lease_consumer" || fail "$work/pc_lease_consumer (pkg-config build) failed"
fi
echo "check_deb: both packages checked in $((SECONDS - start)) s"

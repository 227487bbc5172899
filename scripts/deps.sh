#!/usr/bin/env bash
# Installs what building and testing tierlock needs, from Debian 12 packages.
# Idempotent: when every package is already installed it touches nothing (and
# needs no root). Otherwise it runs apt-get as root, or through sudo.
#   scripts/deps.sh           the POSIX build (every preset but mingw)
#   scripts/deps.sh --mingw   also the Windows cross build and Wine (the
#                             mingw preset: ~1 GB more, so only on request)
set -euo pipefail

packages=(
  build-essential   # g++, make, libc headers; GCC's sanitizer runtimes
  cmake
  ninja-build
  pkg-config        # the consumer.pkg_config test
  libabsl-dev       # absl::Status / StatusOr, strings, hash maps
  libgtest-dev
  libgmock-dev
  libbenchmark-dev  # bench/
  libboost-dev      # bench/: boost::interprocess::file_lock baseline
  libcli11-dev      # tools/tierlock: command-line parsing (header-only)
  nlohmann-json3-dev # tools/tierlock: `status --json` output (header-only)
  util-linux        # flock(1), for the interop tests
  python3
  python3-filelock  # interop tests against Python's filelock
  clang             # the -Wthread-safety CI job
  clang-tidy        # scripts/tidy.sh, the static-check CI job
  clang-format      # scripts/format.sh: one code style (.clang-format), checked in CI
  procps            # ps / pgrep for tests that check for leftover processes
  zsh               # tests: the zsh completion's syntax (completions/_tierlock; ~5 MB)
  fish              # tests: the fish completion, completed by fish itself (~3 MB)
  libpq-dev         # leases: the PostgreSQL backend (libpq)
  postgresql        # leases: a real PostgreSQL server the `lease` tests start
  libsqlite3-dev    # leases: the SQLite backend
  libhiredis-dev    # leases: the Redis backend (hiredis 0.14)
  redis-server      # leases: a real Redis server the `lease` tests start
  pgbouncer         # leases: the PostgreSQL backend behind a real pooler (tests)
  faketime          # leases: a holder whose wall clock jumps (libfaketime, tests)
  libcurl4-openssl-dev # leases: the etcd backend (its v3 JSON gateway over HTTP)
  etcd-server       # leases: a real 3-member etcd cluster the `etcd` tests start
  etcd-client       # leases: etcdctl, for probing and `etcdctl lock` interop (tests)
)

# The mingw preset (docs/design.md, "Windows"): the MinGW-w64 cross compiler
# with the posix thread model (std::thread, std::mutex, std::stop_token),
# wine64 to run the Windows tests, GoogleTest's sources to build them, and
# dpkg-dev to unpack Debian's abseil source package
# (scripts/fetch-abseil-source.sh).
mingw_packages=(
  g++-mingw-w64-x86-64-posix
  wine64
  googletest
  dpkg-dev
)
if [[ "${1:-}" == "--mingw" ]]; then
  packages+=("${mingw_packages[@]}")
elif [[ $# -gt 0 ]]; then
  echo "usage: scripts/deps.sh [--mingw]" >&2
  exit 64
fi

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != ii* ]]; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "deps: installing ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null; then
    echo "deps: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"

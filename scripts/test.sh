#!/usr/bin/env bash
# Installs the dependencies, then configures, builds and runs every test with
# the `dev` preset (Debug, warnings as errors). Extra arguments go to ctest,
# e.g. ./scripts/test.sh -R DirLockTest   or   ./scripts/test.sh -LE stress
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
cmake --preset dev
cmake --build --preset dev -j "$(nproc)"
ctest --preset dev "$@"

#!/usr/bin/env bash
# Installs what is missing, builds ckpt and runs every test suite (unit, engine, slurm, mpi).
# Usage: scripts/test.sh [ctest arguments, e.g. -L unit]
# Run as root: the engine and Slurm suites trace processes and start daemons.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
build=${CKPT_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=${CKPT_BUILD_TYPE:-RelWithDebInfo} ${CKPT_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j2

cd "$build"
# A run that executes no test is a failure.
count=$(ctest -N "$@" | awk '/^Total Tests:/ {print $3}')
if [ "${count:-0}" -eq 0 ]; then
  echo "test.sh: no tests selected" >&2
  exit 1
fi
ctest --output-on-failure --timeout 600 "$@"

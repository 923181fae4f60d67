#!/usr/bin/env bash
# Installs what is missing, builds ckpt and runs the demo.
# For now the demo is the kernel feature check; the Slurm demo (a job checkpointed,
# its node killed, the job resumed elsewhere) replaces it with the Slurm integration.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
build=${CKPT_BUILD_DIR:-build}
cmake -S . -B "$build" >/dev/null
cmake --build "$build" -j2
"$build/engine/ckpt-engine" check

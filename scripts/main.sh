#!/usr/bin/env bash
# The main job, from a fresh clone: install dependencies, build, run addc.
# For now: `addc --help` and the op smoke run (every op forward and backward on small inputs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
./build/addc --help
./build/addc smoke

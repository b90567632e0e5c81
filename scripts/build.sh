#!/usr/bin/env bash
# Configures and builds addc into build/ (Release). Extra arguments go to cmake's configure.
# BUILD_TARGETS (default: everything, tests included) names the targets to build, e.g. "addc".
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >build.configure.log 2>&1 || { cat build.configure.log; exit 1; }
# shellcheck disable=SC2086
cmake --build build -j"$(nproc)" ${BUILD_TARGETS:+--target $BUILD_TARGETS}

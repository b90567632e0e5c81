#!/bin/sh
# Regenerates every committed PyTorch fixture: runs each tests/ref/make_*.py in turn (each writes
# under tests/ref/fixtures/). Needs python3 with torch and numpy (CPU is enough), and whatever a
# script names at its top (diffusers, transformers...). Keeps going past a failing script and
# exits nonzero naming it. Usage: tests/ref/make_fixtures.sh
dir=$(cd "$(dirname "$0")" && pwd)
failed=""
for script in "$dir"/make_*.py; do
    echo "$(basename "$script"):"
    python3 "$script" || failed="$failed $(basename "$script")"
done
if [ -n "$failed" ]; then
    echo "make_fixtures.sh: failed:$failed" >&2
    exit 1
fi

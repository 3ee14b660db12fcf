#!/usr/bin/env bash
# Install what is missing, build libglow and its examples, and run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh demo
cmake -S . -B build -DGLOW_BUILD_TESTS=OFF >/dev/null
cmake --build build -j "$(nproc)"
./build/examples/quickstart

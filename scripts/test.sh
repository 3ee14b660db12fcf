#!/usr/bin/env bash
# Install what is missing, build libglow with warnings as errors, and run the
# whole test suite through ctest.
#   scripts/test.sh              build/ , optimised build
#   scripts/test.sh --sanitize   build-asan/ , AddressSanitizer + UBSan
#   scripts/test.sh --blas       build-blas/ , without the own GEMM kernel:
#                                every product through the CBLAS, as on
#                                CPUs without AVX-512F
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test

dir=build flags=()
if [ "${1:-}" = "--sanitize" ]; then
  dir=build-asan
  flags=(-DGLOW_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)
  # Leaks and undefined behaviour fail the run.
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
elif [ "${1:-}" = "--blas" ]; then
  dir=build-blas
  flags=(-DGLOW_GEMM_KERNEL=OFF -DGLOW_BUILD_EXAMPLES=OFF -DGLOW_BUILD_BENCH=OFF)
fi
cmake -S . -B "$dir" -DGLOW_WERROR=ON -DGLOW_BUILD_TESTS=ON "${flags[@]}" >/dev/null
cmake --build "$dir" -j "$(nproc)"
cd "$dir"
ctest --output-on-failure -j "$(nproc)"

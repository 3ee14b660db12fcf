#!/usr/bin/env bash
# Install what is missing, build libglow with warnings as errors, and run the
# whole test suite through ctest.
#   scripts/test.sh              build/ , optimised build
#   scripts/test.sh --sanitize   build-asan/ , AddressSanitizer + UBSan
#   scripts/test.sh --blas       build-blas/ , without the own GEMM kernel:
#                                every product through the CBLAS, as on
#                                CPUs without AVX-512F or AVX2
#   scripts/test.sh --tsan       build-tsan/ , ThreadSanitizer over the
#                                threaded tests only (shards, teams,
#                                concurrent callers on one model)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test

dir=build flags=() targets=() only=()
if [ "${1:-}" = "--sanitize" ]; then
  dir=build-asan
  flags=(-DGLOW_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)
  # Leaks and undefined behaviour fail the run.
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
elif [ "${1:-}" = "--blas" ]; then
  dir=build-blas
  flags=(-DGLOW_GEMM_KERNEL=OFF -DGLOW_BUILD_EXAMPLES=OFF -DGLOW_BUILD_BENCH=OFF)
elif [ "${1:-}" = "--tsan" ]; then
  dir=build-tsan
  flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DGLOW_BUILD_EXAMPLES=OFF
    -DGLOW_BUILD_BENCH=OFF "-DCMAKE_C_FLAGS=-fsanitize=thread -fno-omit-frame-pointer"
    -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread
    -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread)
  targets=(--target test_threads --target test_gemm --target test_crew)
  only=(-R '^test_(threads|gemm|crew)$')
  # A race fails the run.  OpenBLAS's own threads are not instrumented:
  # products through the CBLAS run single-threaded, as inside shards.
  export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
  export OPENBLAS_NUM_THREADS=1
fi
cmake -S . -B "$dir" -DGLOW_WERROR=ON -DGLOW_BUILD_TESTS=ON "${flags[@]}" >/dev/null
cmake --build "$dir" -j "$(nproc)" "${targets[@]}"
cd "$dir"
ctest --output-on-failure -j "$(nproc)" "${only[@]}"

#!/usr/bin/env bash
# Fuzz the model-file loader (glow_model_load_buffer) with libFuzzer, under
# AddressSanitizer and UBSan, for a bounded time.
#   scripts/fuzz.sh [SECONDS]      default 60
# Builds with clang in build-fuzz/ (GLOW_FUZZ_BUILD_DIR overrides) and starts
# from the seed corpus tests/fuzz/corpus/.  New interesting inputs collect in
# build-fuzz/corpus/, and any crashing input in build-fuzz/artifacts/: copy
# it to tests/fuzz/regressions/ once fixed, so that ctest replays it.
# Exits non-zero if the fuzzer finds a crash, a leak, undefined behaviour, a
# timeout or a broken round trip (see tests/fuzz/fuzz_load.c).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
dir=${GLOW_FUZZ_BUILD_DIR:-build-fuzz}

if ! command -v clang >/dev/null; then
  echo "fuzz.sh: clang is required (Debian: apt-get install clang libclang-rt-14-dev)" >&2
  exit 2
fi
CC=clang cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DGLOW_FUZZ=ON -DGLOW_SANITIZE=ON -DGLOW_WERROR=ON \
  -DGLOW_BUILD_EXAMPLES=OFF -DGLOW_BUILD_BENCH=OFF >/dev/null
cmake --build "$dir" --target fuzz_load -j "$(nproc)"

mkdir -p "$dir/corpus" "$dir/artifacts"
# One BLAS thread: the inputs are tiny, and threads only blur coverage.
export OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# New inputs go to the first directory; the committed seeds stay untouched.
exec "$dir/tests/fuzz/fuzz_load" \
  -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=32768 \
  -dict=tests/fuzz/load.dict -artifact_prefix="$dir/artifacts/" \
  -print_final_stats=1 "$dir/corpus" tests/fuzz/corpus

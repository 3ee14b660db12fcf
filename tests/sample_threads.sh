#!/usr/bin/env bash
# Samples of one seed under 1 and 2 BLAS threads: the noise is the same by
# construction, and the images agree to float rounding (OpenBLAS's sgemm
# itself rounds differently with the number of threads it uses).
# Usage: sample_threads.sh SAMPLE_THREADS_BINARY
set -euo pipefail
bin=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$bin" write "$dir/one"
OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 "$bin" write "$dir/two"
OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 "$bin" write "$dir/two-again"
cmp "$dir/two" "$dir/two-again"   # same thread count: bit-identical
"$bin" compare "$dir/one" "$dir/two"

#!/usr/bin/env bash
# Install what is missing, build libglow and its examples, train a
# class-conditional Glow on Fashion-MNIST for about five minutes, then draw
# samples and latent manipulations.  Pictures and the model go to out/.
#   scripts/demo.sh [extra train options, e.g. --minutes 10]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh demo
cmake -S . -B build -DGLOW_BUILD_TESTS=OFF >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
out=out
# libglow runs one thread per core itself (GLOW_OPT_THREADS); where its
# products go to OpenBLAS (CPUs without AVX-512F), OpenBLAS must then run
# one thread inside each of them.
export OPENBLAS_NUM_THREADS=1
./build/examples/train --out "$out" "$@"
./build/examples/sample "$out/model.safetensors" "$out"
./build/examples/manipulate "$out/model.safetensors" "$out"
echo
echo "Pictures in $out/: samples.png (training's own grid), temperatures.png,"
echo "classes.png, manipulate.png (sneaker - ankle boot direction) and interpolate.png."

#!/usr/bin/env bash
# Install the Debian packages libglow needs that are not installed yet.
#   scripts/install-deps.sh build   compiler, CMake, CBLAS/LAPACKE, cJSON
#   scripts/install-deps.sh test    build + cmocka, clang fuzzing, clang-format, python3
#                                   (numpy, pytest, pip, PyTorch), Fashion-MNIST,
#                                   abigail-tools (the ABI check), Open MPI
#   scripts/install-deps.sh demo    build + zlib, libpng, Fashion-MNIST
# Uses sudo when not run as root.  Does nothing when all are present.
set -euo pipefail

build=(build-essential cmake pkg-config libopenblas-dev liblapacke-dev libcjson-dev)
test=(libcmocka-dev g++ clang clang-format libclang-rt-14-dev python3 python3-numpy python3-pytest binutils zlib1g-dev libpng-dev
      python3-torch python3-pip python3-setuptools python3-wheel dataset-fashion-mnist abigail-tools
      libopenmpi-dev openmpi-bin)
demo=(zlib1g-dev libpng-dev dataset-fashion-mnist)

want=("${build[@]}")
for set in "$@"; do
  case $set in
    build) ;;
    test) want+=("${test[@]}") ;;
    demo) want+=("${demo[@]}") ;;
    *) echo "install-deps.sh: unknown set '$set' (build, test, demo)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "Installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# The shared library keeps the ABI of the last release: abidiff (Debian's
# abigail-tools) compares it with the release's committed abidw dump,
# tests/abi/libglow-<version>.abi.  Types that the public header does not
# define (the opaque glow_model, internal structs) are private and dropped
# on both sides.  abidiff's exit status is a bit set:
#   1 error, 2 usage error   -> fail (nothing was compared)
#   4 ABI change             -> pass: a compatible change, such as a
#                               function added (under a new version node)
#                               or const added to a pointed-to parameter
#   8 incompatible change    -> fail: a symbol removed or re-versioned, a
#                               public struct or function type changed
# docs/robustness.md says how a release updates the baseline.
# Usage: check_abi.sh LIBGLOW_SO SOURCE_DIR
set -euo pipefail
so=$1 src=$2
base=$(ls "$src"/tests/abi/libglow-*.abi | sort -V | tail -n 1)
if ! command -v abidiff >/dev/null; then
  echo "abidiff not found: install abigail-tools (scripts/install-deps.sh test)"
  exit 1
fi
rc=0
abidiff --drop-private-types --headers-dir2 "$src/include" "$base" "$so" ||
  rc=$?
echo "abidiff against $(basename "$base"): exit status $rc"
if (( rc & 3 )); then
  echo "abidiff could not compare"
  exit 1
fi
if (( rc & 8 )); then
  echo "incompatible ABI change against the last release"
  exit 1
fi
exit 0

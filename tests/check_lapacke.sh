#!/usr/bin/env bash
# libglow calls LAPACKE only through its column-major *_work functions,
# which call LAPACK directly: the others allocate scratch with the C
# library's malloc, bypassing glow_set_allocator, and print "Not enough
# memory" when it fails.  (The row-major *_work functions allocate too;
# lib/layers/permute.c transposes in its own scratch instead.)
# Usage: check_lapacke.sh LIBGLOW_SO SOURCE_DIR
set -euo pipefail
so=$1 src=$2
fail=0
bad=$(nm -D --undefined-only "$so" | awk '{print $2}' | sed 's/@.*//' |
  grep '^LAPACKE_' | grep -v '_work$' || true)
if [ -n "$bad" ]; then
  echo "LAPACKE functions that allocate behind the allocator's back:"
  echo "$bad"
  fail=1
fi
if grep -rn 'LAPACK_ROW_MAJOR' "$src/lib"; then
  echo "row-major LAPACKE calls allocate a transposed copy"
  fail=1
fi
[ $fail -eq 0 ] && echo "LAPACKE: column-major *_work functions only"
exit $fail

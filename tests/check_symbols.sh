#!/usr/bin/env bash
# The shared library exports exactly the symbols of lib/glow.map, each
# declared in include/glow.h, under a SONAME from the major version.
# Usage: check_symbols.sh LIBGLOW_SO SOURCE_DIR MAJOR
set -euo pipefail
so=$1 src=$2 major=$3
fail=0
soname=$(objdump -p "$so" | awk '/SONAME/ {print $2}')
if [ "$soname" != "libglow.so.$major" ]; then
  echo "SONAME is '$soname', expected libglow.so.$major"; fail=1
fi
exported=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBR]$/ {sub(/@.*/, "", $3); print $3}' | sort)
listed=$(sed -n 's/^ *\(glow_[a-z0-9_]*\);.*/\1/p' "$src/lib/glow.map" | sort)
if [ "$exported" != "$listed" ]; then
  echo "exported symbols differ from lib/glow.map:"
  diff <(echo "$listed") <(echo "$exported") || true
  fail=1
fi
for s in $listed; do
  grep -q "GLOW_API[^;]*\b$s(" "$src/include/glow.h" || { echo "$s is not declared in glow.h"; fail=1; }
done
echo "$(echo "$exported" | wc -l) exported symbols, SONAME $soname"
exit $fail

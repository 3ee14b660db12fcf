#!/usr/bin/env bash
# The Python package as a user installs it: the library installed into a
# scratch prefix, `pip install` of python/ (offline, with Debian's
# setuptools) into a scratch directory, then the whole pytest suite against
# the installed package, which must find the installed libglow.so.0 by
# itself: no GLOW_LIBRARY, no LD_LIBRARY_PATH.
# Usage: python_install.sh PYTHON BUILD_DIR SOURCE_DIR
set -euo pipefail
py=$1 build=$2 src=$(cd "$3" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
pc=$(find "$work/prefix" -name glow.pc | head -n 1)
# pip builds in the directory it is given: build a copy (python/ and the
# header it takes the version from), so that the source tree stays clean.
mkdir "$work/src"
cp -r "$src/python" "$src/include" "$work/src/"
if ! PKG_CONFIG_PATH=$(dirname "$pc") "$py" -m pip install --no-build-isolation \
    --no-deps --no-index --root-user-action=ignore --target "$work/site" \
    "$work/src/python" >"$work/pip.log" 2>&1; then
  cat "$work/pip.log"
  exit 1
fi

unset GLOW_LIBRARY LD_LIBRARY_PATH
export PYTHONPATH=$work/site PYTHONDONTWRITEBYTECODE=1
export GLOW_TEST_INSTALLED=$work/site GLOW_TEST_PREFIX=$work/prefix
cd "$work"
"$py" -m pytest -q -p no:cacheprovider --basetemp="$work/tmp" "$src/python/tests"

#!/usr/bin/env bash
# Install the built library into a scratch prefix, then build and run small
# C and C++ programs against it, once through pkg-config and once through
# CMake's find_package.  Usage: run.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(dirname "$(find "$prefix" -name glow.pc | head -n 1)")/..
export PKG_CONFIG_PATH=$libdir/pkgconfig
export LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

echo "== pkg-config: $(pkg-config --modversion glow)"
cc -std=c11 -Wall -Wextra -Werror "$here/consumer.c" -o "$work/c_pc" \
  $(pkg-config --cflags --libs glow) -lm
c++ -std=c++11 -Wall -Wextra -Werror "$here/consumer.cpp" -o "$work/cpp_pc" \
  $(pkg-config --cflags --libs glow)
"$work/c_pc"
"$work/cpp_pc"
# Static linking pulls the private dependencies through --static.
cc -std=c11 "$here/consumer.c" -o "$work/c_static" \
  $(pkg-config --cflags glow) "$libdir/libglow.a" \
  $(pkg-config --static --libs-only-l --libs-only-L glow | sed 's/-lglow//')
"$work/c_static"

# The README's example, as a user would paste it.
awk '/^```c$/ {f = 1; next} /^```$/ {f = 0} f' "$here/../../README.md" > "$work/readme.c"
cc -std=c11 -Wall -Wextra -Werror "$work/readme.c" -o "$work/readme" \
  $(pkg-config --cflags --libs glow)
"$work/readme"

echo "== find_package"
cmake -S "$here" -B "$work/cm" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cm" >/dev/null
"$work/cm/consumer_c"
"$work/cm/consumer_cpp"
"$work/cm/consumer_c_static"
echo "consumer programs: all passed"

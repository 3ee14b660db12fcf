#!/usr/bin/env bash
# The example programs end to end on a tiny synthetic IDX data set: train a
# few steps, resume, sample, manipulate; check that each writes its files.
# Usage: examples.sh EXAMPLES_BUILD_DIR
set -euo pipefail
bin=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 "$(dirname "$0")/make_idx.py" "$dir"
common=(--data "$dir" --levels 2 --depth 2 --hidden 16 --batch 16)
"$bin/train" "${common[@]}" --steps 12 --minutes 2 --out "$dir/run" 2>&1 | tail -n 3
for f in model.safetensors optimizer.bin samples.png log.csv curve.png; do
  test -s "$dir/run/$f" || { echo "train did not write $f"; exit 1; }
done
"$bin/train" --data "$dir" --resume "$dir/run" --steps 16 --out "$dir/run2" 2>&1 | tail -n 3
grep -q "^.*,16,.*" "$dir/run2/log.csv" || { echo "resume did not reach step 16"; exit 1; }
# An evaluation on the last step is its final one: one test row per step.
"$bin/train" "${common[@]}" --steps 3 --eval-every 0.00001 --out "$dir/run3" 2>&1 | tail -n 1
awk -F, 'NR > 1 && $4 != "" && seen[$2]++ { exit 1 }' "$dir/run3/log.csv" ||
  { echo "log.csv has two test rows for one step"; cat "$dir/run3/log.csv"; exit 1; }
grep -q "^[^,]*,3,[^,]*,[0-9]" "$dir/run3/log.csv" || { echo "no test row for step 3"; exit 1; }
"$bin/sample" "$dir/run/model.safetensors" "$dir/run" --columns 4
"$bin/manipulate" "$dir/run/model.safetensors" "$dir/run" --data "$dir" --count 6
for f in temperatures.png classes.png manipulate.png interpolate.png; do
  test -s "$dir/run/$f" || { echo "missing $f"; exit 1; }
done
echo "examples: all ran"

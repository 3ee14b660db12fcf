#!/usr/bin/env bash
# The PyTorch example end to end on a slice of Fashion-MNIST: examples/train
# trains a small conditional model in C, examples/python/finetune.py
# fine-tunes it on one class in PyTorch and saves it, and examples/sample
# draws from the result in C.  Checks that the fine-tuning lowered the
# class's test bits/dim and that libglow scores the saved model as PyTorch
# did.
# Usage: examples_python.sh PYTHON EXAMPLES_BUILD_DIR SOURCE_DIR [DATA_DIR]
set -euo pipefail
py=$1 bin=$2 src=$3 data=${4:-/usr/share/datasets/fashion-mnist}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# The first 1000 training and 300 test images, as IDX files.
"$py" - "$data" "$dir" <<'PY'
import gzip, struct, sys
src, dst = sys.argv[1:]
for split, n in (("train", 1000), ("t10k", 300)):
    for kind, header, size in (("images", 16, 784), ("labels", 8, 1)):
        name = f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
        raw = gzip.open(f"{src}/{name}").read()
        head = bytearray(raw[:header])
        struct.pack_into(">I", head, 4, n)
        with gzip.open(f"{dst}/{name}", "wb") as f:
            f.write(bytes(head) + raw[header:header + n * size])
PY

"$bin/train" --data "$dir" --levels 2 --depth 2 --hidden 16 --batch 16 \
  --steps 40 --minutes 2 --out "$dir/run" 2>&1 | tail -n 2
"$py" "$src/examples/python/finetune.py" "$dir/run/model.safetensors" \
  "$dir/tuned.safetensors" --data "$dir" --class sneaker --steps 300 \
  --batch 16 --lr 1e-3 --device cpu | tee "$dir/finetune.log"
"$bin/sample" "$dir/tuned.safetensors" "$dir" --columns 4
for f in temperatures.png classes.png; do
  test -s "$dir/$f" || { echo "sample did not write $f"; exit 1; }
done

# "test bits/dim before: B" and "after: T (PyTorch), C (libglow ...)".
before=$(sed -n 's/.*test bits\/dim before: \([0-9.]*\).*/\1/p' "$dir/finetune.log")
read -r torch_after c_after < <(sed -n \
  's/.*test bits\/dim after: \([0-9.]*\) (PyTorch), \([0-9.]*\) (libglow.*/\1 \2/p' \
  "$dir/finetune.log")
"$py" - "$before" "$torch_after" "$c_after" <<'PY'
import sys
before, torch_after, c_after = map(float, sys.argv[1:])
assert torch_after < before - 0.1, f"fine-tuning did not help: {before} -> {torch_after}"
assert abs(torch_after - c_after) <= 1e-4 * c_after, (torch_after, c_after)
print(f"examples_python: class bits/dim {before:.4f} -> {torch_after:.4f}, "
      f"libglow agrees ({c_after:.4f}); sampled in C")
PY

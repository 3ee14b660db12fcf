#!/usr/bin/python3
"""finetune -- fine-tune a libglow model on one Fashion-MNIST class in PyTorch.

    finetune.py MODEL OUT [--class sneaker] [--steps 300] [--batch 32]
                [--lr 1e-4] [--data DIR] [--device cuda|cpu]

Loads MODEL (a model file, e.g. out/model.safetensors from examples/train)
into glow.torch, trains it with Adam on the training images of one class
(on the GPU if there is one), and writes OUT, a model file for the C
library.  It prints the class's test bits/dim before and after, the "after"
figure once from PyTorch and once from libglow reading OUT: the same
number, since both compute the same model.  Then draw from it in C:

    build/examples/sample OUT out/   # out/temperatures.png, out/classes.png

Needs the glow package (python/, with libglow.so.0) and PyTorch (Debian:
python3-torch); see docs/pytorch.md.
"""

from __future__ import annotations

import argparse
import gzip
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch

import glow
import glow.torch

CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "boot")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST's format), gzipped or not."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    zero, kind, ndim = struct.unpack_from(">HBB", raw)
    if zero != 0 or kind != 0x08:
        sys.exit(f"finetune: {path} is not an IDX file of unsigned bytes")
    shape = struct.unpack_from(f">{ndim}I", raw, 4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_class(data: Path, split: str, label: int) -> np.ndarray:
    """The images (n, 28, 28, 1) of one class of a split ("train", "t10k")."""
    images = read_idx(data / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(data / f"{split}-labels-idx1-ubyte.gz")
    return np.ascontiguousarray(images[labels == label][..., None])


def mean_bits(net: glow.torch.Glow, x: torch.Tensor, label: int) -> float:
    """Mean bits/dim of x under net, in batches."""
    with torch.no_grad():
        total = 0.0
        for batch in torch.split(x, 256):
            total += float(net.bits_per_dim(batch, labels_for(net, label, len(batch))).sum())
    return total / len(x)


def labels_for(net: glow.torch.Glow, label: int, n: int) -> torch.Tensor | None:
    """n copies of label for a conditional model; None otherwise."""
    return torch.full((n,), label, device=net.device) if net.n_classes else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path, help="model file to start from")
    ap.add_argument("out", type=Path, help="model file to write")
    ap.add_argument("--class", dest="cls", default="sneaker",
                    help="class name (%s) or number" % " ".join(CLASSES))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    label = int(args.cls) if args.cls.isdigit() else CLASSES.index(args.cls)

    net = glow.torch.Glow.load(args.model, device=args.device)
    if net.image_shape != (28, 28, 1):
        sys.exit(f"finetune: the model is {net.image_shape}, Fashion-MNIST is (28, 28, 1)")
    gen = torch.Generator(device=net.device).manual_seed(args.seed)
    train = torch.from_numpy(load_class(args.data, "train", label)).to(net.device)
    test = torch.from_numpy(load_class(args.data, "t10k", label))
    # Fixed dequantisation noise for the test figures (the library's).
    test_x = torch.from_numpy(net.to_model().preprocess(test.numpy(), seed=0)).to(net.device)
    print(f"{args.model}: {net.extra_repr()}")
    print(f"class {CLASSES[label]}: {len(train)} training, {len(test)} test images; "
          f"test bits/dim before: {mean_bits(net, test_x, label):.4f}")

    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        pick = torch.randint(len(train), (args.batch,), generator=gen, device=net.device)
        x = net.preprocess(train[pick], generator=gen)  # fresh noise each step
        opt.zero_grad()
        loss = net.loss(x, labels_for(net, label, args.batch))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 50.0)
        opt.step()
        if step % 50 == 0 or step == args.steps:
            print(f"step {step}: loss {float(loss):.4f} "
                  f"({time.perf_counter() - start:.1f} s)")

    after = mean_bits(net, test_x, label)
    net.save(args.out)
    c_model = glow.Model.load(args.out)
    c_labels = np.full(len(test), label, np.int32) if net.n_classes else None
    c_after = float(np.mean(c_model.bits_per_dim(test_x.cpu().numpy().astype(np.float32),
                                                 c_labels)))
    print(f"class {CLASSES[label]}: test bits/dim after: {after:.4f} (PyTorch), "
          f"{c_after:.4f} (libglow reading {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A tiny synthetic IDX data set in DIR: 28x28 images in which class k is a
bar whose position and brightness follow k; 200 training and 60 test images.
Usage: make_idx.py DIR"""
import gzip
import random
import struct
import sys


def write(d, prefix, n, seed):
    rng = random.Random(seed)
    labels = [i % 10 for i in range(n)]
    pixels = bytearray()
    for k in labels:
        for y in range(28):
            for x in range(28):
                on = 2 * k <= x < 2 * k + 6
                pixels.append(min(255, (120 + 13 * k if on else 0) + rng.randrange(8)))
    with gzip.open(f"{d}/{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28) + bytes(pixels))
    with gzip.open(f"{d}/{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + bytes(labels))


write(sys.argv[1], "train", 200, 1)
write(sys.argv[1], "t10k", 60, 2)

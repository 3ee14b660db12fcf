"""The weights of two trainer runs agree to a bound.
Usage: compare_params.py DIR_A DIR_B BOUND
Reads DIR/optimizer.bin of each run (step count, raw weights, Adam moments,
Polyak average) and exits 0 only if both reached the same step and, for
the raw weights and for their average,
    max_i |a_i - b_i| <= BOUND * max(1, max_i |a_i|).
Prints the measured ratio either way.  Bit-identical runs are checked
with cmp instead."""
import array
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"GLOWADAM":
        sys.exit(f"{path}: not an optimizer file")
    n, t = struct.unpack("<qq", data[8:24])
    values = array.array("f")
    values.frombytes(data[32:])
    if len(values) != 4 * n:
        sys.exit(f"{path}: {len(values)} floats, not 4 x {n}")
    # raw weights, first moment, second moment, Polyak average
    return t, [values[k * n:(k + 1) * n] for k in range(4)]


def main():
    dir_a, dir_b, bound = sys.argv[1], sys.argv[2], float(sys.argv[3])
    t_a, a = read(f"{dir_a}/optimizer.bin")
    t_b, b = read(f"{dir_b}/optimizer.bin")
    if t_a != t_b:
        sys.exit(f"the runs stopped at different steps: {t_a} and {t_b}")
    worst = 0.0
    for k, name in ((0, "weights"), (3, "averaged weights")):
        scale = max(1.0, max(abs(v) for v in a[k]))
        diff = max(abs(x - y) for x, y in zip(a[k], b[k]))
        print(f"{name}: max difference {diff:.3g}, {diff / scale:.3g} of the scale")
        worst = max(worst, diff / scale)
    if not worst <= bound:
        sys.exit(f"difference {worst:.3g} is above the bound {bound:g}")


main()

"""Shared fixtures: small model configurations and the C driver.

The driver (glow_driver.c, next to this file) is compiled once per session
into a temporary directory against include/glow.h and the library that the
binding loaded, so that the tests can compare the binding's results with
the same calls made from C.
"""

from __future__ import annotations

import ctypes
import gzip
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import glow

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

#: Small configurations that cover every coupling and permutation and a
#: conditional model; each runs in milliseconds.
CONFIGS = {
    "affine-conv1x1": dict(height=8, width=8, channels=3, levels=2, depth=2, hidden=16, seed=3),
    "additive-lu": dict(height=8, width=4, channels=2, levels=2, depth=3, hidden=8,
                        coupling=glow.Coupling.ADDITIVE,
                        permutation=glow.Permutation.CONV1X1_LU, seed=11),
    "reverse-3levels": dict(height=8, width=8, channels=1, levels=3, depth=1, hidden=8,
                            permutation=glow.Permutation.REVERSE, n_bits=5, seed=5),
    "shuffle-conditional": dict(height=4, width=4, channels=3, levels=1, depth=2, hidden=12,
                                permutation=glow.Permutation.SHUFFLE, n_classes=3,
                                learn_top=0, class_weight=0.25, seed=7),
}


#: Fashion-MNIST as Debian's dataset-fashion-mnist installs it (IDX, gzipped);
#: GLOW_FASHION_MNIST names another directory.
FASHION_MNIST = Path(os.environ.get("GLOW_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


def fashion_mnist(split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 28, 28)`` uint8 and labels ``(n,)`` of a Fashion-MNIST
    split; skips the test when the data set is not installed."""
    images = FASHION_MNIST / f"{split}-images-idx3-ubyte.gz"
    labels = FASHION_MNIST / f"{split}-labels-idx1-ubyte.gz"
    if not (images.exists() and labels.exists()):
        pytest.skip(f"Fashion-MNIST not found in {FASHION_MNIST} "
                    "(Debian: dataset-fashion-mnist)")
    with gzip.open(images) as f:
        raw = f.read()
    magic, n, h, w = (int.from_bytes(raw[i : i + 4], "big") for i in range(0, 16, 4))
    assert magic == 0x803, images
    pixels = np.frombuffer(raw, np.uint8, n * h * w, 16).reshape(n, h, w)
    with gzip.open(labels) as f:
        raw = f.read()
    assert int.from_bytes(raw[:4], "big") == 0x801, labels
    return pixels, np.frombuffer(raw, np.uint8, n, 8).astype(np.int32)


def tiny(**overrides) -> glow.Model:
    """A fresh small unconditional model."""
    fields = dict(CONFIGS["affine-conv1x1"])
    fields.update(overrides)
    return glow.Model(**fields)


def images(model: glow.Model, n: int, seed: int = 0) -> np.ndarray:
    """A reproducible batch of preprocessed images for ``model``."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, *model.image_shape), dtype=np.uint8)
    return model.preprocess(pixels, seed=seed)


def labels_for(model: glow.Model, n: int) -> np.ndarray | None:
    """Labels 0, 1, 2, ... for a conditional model, None otherwise."""
    k = model.config.n_classes
    return None if k == 0 else (np.arange(n) % k).astype(np.int32)


def skip_if_unsupported(fn, *args, **kwargs):
    """Call ``fn``; skip the test when (and only when) the library reports
    GLOW_ERR_UNSUPPORTED for it."""
    try:
        return fn(*args, **kwargs)
    except glow.GlowError as exc:
        if exc.status == glow.Status.ERR_UNSUPPORTED:
            pytest.skip(f"libglow reports GLOW_ERR_UNSUPPORTED: {exc.message}")
        raise


def loaded_library_file() -> str:
    """The file this process mapped the library from (Linux /proc)."""
    address = ctypes.cast(glow._lib.glow_forward, ctypes.c_void_p).value
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(v, 16) for v in fields[0].split("-"))
            if low <= address < high and len(fields) >= 6:
                return os.path.realpath(fields[5])
    raise RuntimeError("the library is not in /proc/self/maps")


@dataclass
class Driver:
    """The compiled glow_driver program."""

    exe: Path

    def info(self) -> dict[str, str]:
        out = subprocess.run([str(self.exe), "info"], check=True, capture_output=True,
                             text=True, timeout=30).stdout
        return dict(line.split(" ", 1) for line in out.splitlines())

    def run(self, outdir: Path, config: dict | None = None, *, load: Path | None = None,
            x: np.ndarray | None = None, labels: np.ndarray | None = None,
            temperature: float = 1.0, sample_seed: int = 0, pre_seed: int = 0,
            train: bool = False, save: Path | None = None,
            backward_mode: int | None = None) -> dict:
        """Run ``glow_driver run`` and return its outputs: ``status`` (call ->
        status code), ``tensors`` (``glow.Tensor`` list), ``file`` (the model
        file's bytes) and every array it wrote, keyed by file stem."""
        outdir.mkdir(parents=True, exist_ok=True)
        args = [str(self.exe), "run", str(outdir)]
        if load is not None:
            args.append(f"load={load}")
        for key, value in (config or {}).items():
            value = float(value).hex() if key == "class_weight" else int(value)
            args.append(f"{key}={value}")
        if x is not None:
            x.tofile(outdir / "in_x.bin")
            args += [f"n={x.shape[0]}", f"x={outdir / 'in_x.bin'}",
                     f"temperature={float(temperature).hex()}",
                     f"sample_seed={sample_seed}", f"pre_seed={pre_seed}"]
        if labels is not None:
            np.ascontiguousarray(labels, dtype=np.int32).tofile(outdir / "in_labels.bin")
            args.append(f"labels={outdir / 'in_labels.bin'}")
        if backward_mode is not None:
            args.append(f"backward_mode={int(backward_mode)}")
        if train:
            args.append("train=1")
        if save is not None:
            args.append(f"save={save}")
        proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
        status = {}
        status_path = outdir / "status.txt"
        if status_path.exists():
            for line in status_path.read_text().splitlines():
                call, code = line.split()
                status[call] = int(code)
        assert proc.returncode == 0, f"glow_driver failed ({proc.returncode}): {proc.stderr}"
        result: dict = {"status": status, "file": (outdir / "file.bin").read_bytes()}
        result["tensors"] = []
        for line in (outdir / "tensors.txt").read_text().splitlines():
            name, offset, count, *shape = line.split()
            tensor = glow.Tensor(name, int(offset), tuple(int(v) for v in shape))
            assert tensor.count == int(count), line
            result["tensors"].append(tensor)
        for path in outdir.glob("*.bin"):
            if path.name.startswith("in_") or path.stem == "file":
                continue
            dtype = np.uint8 if path.stem == "pixels" else np.float32
            result[path.stem] = np.fromfile(path, dtype=dtype)
        return result


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="session")
def driver(tmp_path_factory) -> Driver:
    """glow_driver, built against include/glow.h and the library under test."""
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (cc, gcc, clang or $CC) to build glow_driver")
    header = REPO / "include" / "glow.h"
    if not header.exists():
        pytest.skip(f"{header} not found: the C comparison needs the source tree")
    build = tmp_path_factory.mktemp("driver")
    # Link against the very file the binding loaded, found at run time
    # through a link named by the soname in a DT_RPATH directory (which
    # takes precedence over LD_LIBRARY_PATH).
    soname = f"libglow.so.{glow.ABI_MAJOR}"
    (build / soname).symlink_to(loaded_library_file())
    exe = build / "glow_driver"
    cmd = [cc, "-std=c11", "-O1", "-Wall", "-Wextra", "-I", str(REPO / "include"),
           str(HERE / "glow_driver.c"), "-o", str(exe), "-L", str(build), f"-l:{soname}",
           f"-Wl,-rpath,{build}", "-Wl,--disable-new-dtags", "-ldl"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"cannot build glow_driver:\n{' '.join(cmd)}\n{proc.stderr}"
    return Driver(exe)

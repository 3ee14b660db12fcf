"""Model files (docs/format.md) read and written in Python, without the
library: the safetensors container, and the configuration in its metadata.

The library stays the authority on what a valid file is: :mod:`glow.torch`
reads only bytes that ``glow_model_load_buffer`` accepted, and hands the
bytes it writes to the library to check before they reach a file.  This
module only moves tensors in and out of the container, byte for byte as the
library does (the same JSON, key order, padding and float text), so that a
model written from Python is the file libglow would write.
"""

from __future__ import annotations

import json
import struct
from typing import Mapping

import numpy as np

from ._config import Config, Coupling, Permutation

#: The format version this module reads and writes (``GLOW_FORMAT_VERSION``).
FORMAT_VERSION = 1

COUPLING_NAMES = {Coupling.AFFINE: "affine", Coupling.ADDITIVE: "additive"}
PERMUTATION_NAMES = {
    Permutation.CONV1X1: "conv1x1",
    Permutation.CONV1X1_LU: "conv1x1_lu",
    Permutation.REVERSE: "reverse",
    Permutation.SHUFFLE: "shuffle",
}

# The integer fields of glow_config in the order the library writes them.
_INT_FIELDS = ("height", "width", "channels", "levels", "depth", "hidden",
               "n_bits", "n_classes", "learn_top")
_PREFIX = "glow.config."


def read(data: bytes) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """The metadata and the tensors (float32 arrays in their file shapes, in
    file order) of the bytes of a model file.  ``data`` must be a file that
    the library accepted; only the container is checked here."""
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(bytes(data[8 : 8 + n]))
    meta = header.pop("__metadata__", {})
    start = 8 + n
    tensors = {}
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if entry["dtype"] != "F32":
            raise ValueError(f"model file: tensor {name} is {entry['dtype']}, not F32")
        begin, end = entry["data_offsets"]
        flat = np.frombuffer(data, dtype="<f4", count=(end - begin) // 4, offset=start + begin)
        tensors[name] = flat.astype(np.float32).reshape(entry["shape"])
    return meta, tensors


def write(meta: Mapping[str, str], tensors: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of a safetensors file holding ``tensors`` (as F32, in the
    mapping's order) with ``meta`` as its ``__metadata__``, laid out as the
    library lays out its files: compact JSON, the data section aligned to 8
    bytes with spaces."""
    header: dict[str, object] = {"__metadata__": dict(meta)}
    blobs = []
    at = 0
    for name, value in tensors.items():
        blob = np.ascontiguousarray(value, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(value)),
                        "data_offsets": [at, at + len(blob)]}
        blobs.append(blob)
        at += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def float_text(value: float) -> str:
    """The shortest ``%g`` text that reads back as exactly the float32
    ``value``, as the library writes ``class_weight``."""
    target = np.float32(value)
    for precision in range(1, 10):
        text = "%.*g" % (precision, float(target))
        if np.float32(float(text)) == target:
            break
    return text


def config_from_meta(meta: Mapping[str, str]) -> Config:
    """The :class:`Config` stored in a model file's metadata."""
    fields: dict[str, object] = {k: int(meta[_PREFIX + k]) for k in _INT_FIELDS}
    couplings = {v: k for k, v in COUPLING_NAMES.items()}
    permutations = {v: k for k, v in PERMUTATION_NAMES.items()}
    fields["coupling"] = couplings[meta[_PREFIX + "coupling"]]
    fields["permutation"] = permutations[meta[_PREFIX + "permutation"]]
    fields["class_weight"] = float(np.float32(meta[_PREFIX + "class_weight"]))
    fields["seed"] = int(meta[_PREFIX + "seed"])
    return Config(**fields)


def meta_from_config(cfg: Config, initialized: bool, library_version: str) -> dict[str, str]:
    """A model file's metadata, keys in the library's order."""
    meta = {
        "glow.format_version": str(FORMAT_VERSION),
        "glow.library_version": library_version,
        "glow.initialized": "1" if initialized else "0",
    }
    for key in _INT_FIELDS:
        meta[_PREFIX + key] = str(int(getattr(cfg, key)))
    meta[_PREFIX + "coupling"] = COUPLING_NAMES[Coupling(cfg.coupling)]
    meta[_PREFIX + "permutation"] = PERMUTATION_NAMES[Permutation(cfg.permutation)]
    meta[_PREFIX + "class_weight"] = float_text(cfg.class_weight)
    meta[_PREFIX + "seed"] = str(int(cfg.seed))
    return meta

"""Argument checks and conversions shared by the binding's modules.

Everything that ctypes would silently truncate, wrap or misread (integers
wider than the C type, arrays of another dtype or layout) is checked here
and raised as TypeError or ValueError before any C call.
"""

from __future__ import annotations

import ctypes
import numbers
import operator
import os
from typing import Any

import numpy as np

_c_float_p = ctypes.POINTER(ctypes.c_float)
_c_int32_p = ctypes.POINTER(ctypes.c_int32)
_c_uint8_p = ctypes.POINTER(ctypes.c_uint8)


def integer(value: Any, name: str, low: int, high: int, ctype: str = "") -> int:
    """``value`` as an int in ``[low, high]`` (the range of C type ``ctype``):
    TypeError for a non-integer, ValueError outside the range."""
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if not low <= value <= high:
        fits = f"does not fit an {ctype} " if ctype else "is "
        raise ValueError(f"{name} = {value} {fits}(outside [{low}, {high}])")
    return value


def int32(value: Any, name: str) -> int:
    """``value`` as an int that fits an int32_t."""
    return integer(value, name, -(2**31), 2**31 - 1, "int32")


def int64(value: Any, name: str) -> int:
    """``value`` as an int that fits an int64_t."""
    return integer(value, name, -(2**63), 2**63 - 1, "int64")


def real(value: Any, name: str) -> float:
    """``value`` as a Python float; TypeError unless it is a real number
    (a string is not)."""
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def seed(value: Any) -> int:
    """A seed, which must fit a uint64_t."""
    return integer(value, "seed", 0, 2**64 - 1, "uint64")


def path_bytes(path: str | os.PathLike[str] | bytes) -> bytes:
    """A file system path as the NUL-terminated bytes the C library takes."""
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise ValueError("path contains a NUL character")
    return raw


def batch_array(
    a: Any, name: str, dtype: type, item_shape: tuple[int, ...], what: str
) -> np.ndarray:
    """Check that ``a`` is a C-contiguous, aligned ndarray of ``dtype`` (native
    byte order) and shape ``(n, *item_shape)``; TypeError or ValueError
    otherwise.  Returns ``a`` itself: nothing is converted or copied."""
    want = np.dtype(dtype)
    if not isinstance(a, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy.ndarray of {want} ({what}), got {type(a).__name__}"
        )
    if a.dtype != want:
        raise TypeError(
            f"{name} must have dtype {want} (native byte order), got {a.dtype}; "
            f"convert with {name}.astype(numpy.{want})"
        )
    if a.ndim != 1 + len(item_shape) or a.shape[1:] != item_shape:
        dims = ", ".join(["n", *map(str, item_shape)])
        raise ValueError(f"{name} must have shape ({dims}) ({what}), got {a.shape}")
    if not (a.flags.c_contiguous and a.flags.aligned):
        raise ValueError(
            f"{name} must be C-contiguous and aligned; pass numpy.ascontiguousarray({name})"
        )
    int32(a.shape[0], f"the batch size of {name}")
    return a


def labels_array(labels: Any, n: int) -> np.ndarray | None:
    """Labels as a contiguous int32 array of shape ``(n,)``, None for None.
    Whether labels are required, and their range, is the library's check."""
    if labels is None:
        return None
    arr = np.asarray(labels)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {arr.shape}")
    if arr.size and (arr.min() < -(2**31) or arr.max() > 2**31 - 1):
        raise ValueError("labels do not fit an int32")
    return np.ascontiguousarray(arr, dtype=np.int32)


def f32(a: np.ndarray) -> Any:
    """A float * to a float32 array's data."""
    return a.ctypes.data_as(_c_float_p)


def i32(a: np.ndarray | None) -> Any:
    """An int32_t * to an int32 array's data, or NULL for None."""
    return None if a is None else a.ctypes.data_as(_c_int32_p)


def u8(a: np.ndarray) -> Any:
    """A uint8_t * to a uint8 array's data."""
    return a.ctypes.data_as(_c_uint8_p)

"""Latent arithmetic (``glow_latent_*``): interpolation and attribute
directions over latent rows, as numpy float32 arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import f32, int32, int64, real
from ._errors import check
from ._library import lib


def _rows(a: Any, name: str, dim: int | None = None) -> np.ndarray:
    """A C-contiguous float32 array of shape (n, dim); TypeError/ValueError."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of float32, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32 (native byte order), got {a.dtype}")
    if a.ndim != 2 or (dim is not None and a.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, dim)"
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    if not (a.flags.c_contiguous and a.flags.aligned):
        raise ValueError(f"{name} must be C-contiguous and aligned")
    int32(a.shape[0], f"the number of rows of {name}")
    return a


def _vector(a: Any, name: str, dim: int | None = None) -> np.ndarray:
    """A C-contiguous float32 latent row of shape (dim,)."""
    if isinstance(a, np.ndarray) and a.ndim != 1:
        raise ValueError(f"{name} must be one latent row, shape (dim,), got {a.shape}")
    row = _rows(a.reshape(1, -1) if isinstance(a, np.ndarray) else a, name, dim)
    return row.reshape(-1)


def latent_lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """``(1 - t) a + t b`` of two latent rows (``glow_latent_lerp``)."""
    a = _vector(a, "a")
    b = _vector(b, "b", a.shape[0])
    out = np.empty_like(a)
    check(lib.glow_latent_lerp(f32(a), f32(b), int64(a.shape[0], "dim"), real(t, "t"),
                               f32(out)))
    return out


def latent_slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation of two latent rows, with the norm interpolated
    linearly (``glow_latent_slerp``); zero or opposite vectors are
    GLOW_ERR_ARG."""
    a = _vector(a, "a")
    b = _vector(b, "b", a.shape[0])
    out = np.empty_like(a)
    check(lib.glow_latent_slerp(f32(a), f32(b), int64(a.shape[0], "dim"), real(t, "t"),
                                f32(out)))
    return out


def latent_direction(with_attr: np.ndarray, without_attr: np.ndarray) -> np.ndarray:
    """Attribute direction: the mean latent row of ``with_attr`` (n1, dim)
    minus that of ``without_attr`` (n2, dim) (``glow_latent_direction``).
    An empty set is GLOW_ERR_BATCH."""
    with_attr = _rows(with_attr, "with_attr")
    dim = with_attr.shape[1]
    without_attr = _rows(without_attr, "without_attr", dim)
    out = np.empty(dim, dtype=np.float32)
    check(lib.glow_latent_direction(f32(with_attr), with_attr.shape[0], f32(without_attr),
                                    without_attr.shape[0], int64(dim, "dim"), f32(out)))
    return out


def latent_shift(z: np.ndarray, direction: np.ndarray, scale: float) -> np.ndarray:
    """``z[i] + scale * direction`` for each latent row of ``z`` (n, dim)
    (``glow_latent_shift``)."""
    z = _rows(z, "z")
    direction = _vector(direction, "direction", z.shape[1])
    out = np.empty_like(z)
    check(lib.glow_latent_shift(f32(z), f32(direction), z.shape[0], int64(z.shape[1], "dim"),
                                real(scale, "scale"), f32(out)))
    return out

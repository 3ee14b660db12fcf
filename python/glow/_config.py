"""The model configuration, a ctypes mirror of ``glow_config``."""

from __future__ import annotations

import ctypes
import enum
import math
import numbers
from typing import Any

from ._checks import integer
from ._library import lib


class Coupling(enum.IntEnum):
    """``glow_config.coupling``: ``GLOW_COUPLING_*``."""

    AFFINE = 0
    ADDITIVE = 1


class Permutation(enum.IntEnum):
    """``glow_config.permutation``: ``GLOW_PERMUTE_*``."""

    CONV1X1 = 0
    CONV1X1_LU = 1
    REVERSE = 2
    SHUFFLE = 3


_INT_RANGES = {
    ctypes.c_uint32: (0, 2**32 - 1, "uint32"),
    ctypes.c_int32: (-(2**31), 2**31 - 1, "int32"),
    ctypes.c_uint64: (0, 2**64 - 1, "uint64"),
}

# glow_config_init writes sizeof(the library's glow_config) bytes.  A newer
# library may have appended fields, so it writes into a scratch buffer this
# large, and the binding keeps the prefix it knows.
_INIT_SCRATCH_BYTES = 4096


class Config(ctypes.Structure):
    """Model configuration, field for field the C struct ``glow_config``.

    ``Config()`` holds the library's defaults (from ``glow_config_init``) with
    ``size`` set to ``ctypes.sizeof(Config)``; keyword arguments then override
    fields, as does plain attribute assignment::

        cfg = glow.Config(height=28, width=28, channels=1, levels=2)
        cfg.depth = 8

    Assignments are checked: an unknown field name raises AttributeError, a
    non-integer for an integer field TypeError, and a value outside the C
    type's range ValueError (ctypes alone would silently wrap it).  Whether
    the values make a valid model is the library's decision, made by
    :class:`glow.Model`.
    """

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("height", ctypes.c_int32),
        ("width", ctypes.c_int32),
        ("channels", ctypes.c_int32),
        ("levels", ctypes.c_int32),
        ("depth", ctypes.c_int32),
        ("hidden", ctypes.c_int32),
        ("coupling", ctypes.c_int32),
        ("permutation", ctypes.c_int32),
        ("n_bits", ctypes.c_int32),
        ("n_classes", ctypes.c_int32),
        ("learn_top", ctypes.c_int32),
        ("class_weight", ctypes.c_float),
        ("seed", ctypes.c_uint64),
    ]

    def __init__(self, **fields: Any) -> None:
        super().__init__()
        scratch = (ctypes.c_uint64 * (_INIT_SCRATCH_BYTES // 8))()
        lib.glow_config_init(scratch)
        ctypes.memmove(ctypes.addressof(self), scratch, ctypes.sizeof(Config))
        self.size = ctypes.sizeof(Config)
        for name, value in fields.items():
            setattr(self, name, value)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The field names, in C declaration order."""
        return tuple(name for name, _ in cls._fields_)

    def __setattr__(self, name: str, value: Any) -> None:
        ctype = _FIELD_TYPES.get(name)
        if ctype is None:
            raise AttributeError(f"glow_config has no field {name!r}")
        if ctype is ctypes.c_float:
            if not isinstance(value, numbers.Real):
                raise TypeError(
                    f"{name} must be a real number, got {type(value).__name__}"
                )
            value = float(value)
            if math.isfinite(value) and math.isinf(ctypes.c_float(value).value):
                raise ValueError(f"{name} = {value} does not fit a C float")
        else:
            low, high, cname = _INT_RANGES[ctype]
            value = integer(value, name, low, high, cname)
        super().__setattr__(name, value)

    def as_dict(self) -> dict[str, int | float]:
        """The fields as a dict, in declaration order."""
        return {name: getattr(self, name) for name in self.field_names()}

    def copy(self) -> "Config":
        """An independent copy."""
        other = Config()
        ctypes.memmove(ctypes.addressof(other), ctypes.addressof(self), ctypes.sizeof(Config))
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"Config({body})"


_FIELD_TYPES = dict(Config._fields_)

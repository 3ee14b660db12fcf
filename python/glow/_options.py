"""Run-time options of a model (``glow_set_option`` and friends)."""

from __future__ import annotations

import ctypes
import enum

from ._checks import int32
from ._errors import check
from ._library import lib


class Option(enum.IntEnum):
    """Option numbers (``GLOW_OPT_*``), pinned by the library."""

    BACKWARD_MODE = 1
    KEEP_WORKSPACE = 2
    THREADS = 3
    GEMM = 4


class BackwardMode(enum.IntEnum):
    """Values of :attr:`Option.BACKWARD_MODE` (``GLOW_BACKWARD_*``)."""

    RECOMPUTE = 0
    STORE = 1


class Gemm(enum.IntEnum):
    """Values of :attr:`Option.GEMM` (``GLOW_GEMM_*``): what computes the
    matrix products."""

    AUTO = 0
    BLAS = 1


def option_bounds(option: int) -> tuple[int, int]:
    """The valid values ``(lower, upper)`` of an option
    (``glow_option_bounds``); an unknown option is GLOW_ERR_ARG."""
    option = int32(option, "option")
    lower, upper = ctypes.c_int64(), ctypes.c_int64()
    check(lib.glow_option_bounds(option, ctypes.byref(lower), ctypes.byref(upper)))
    return lower.value, upper.value

"""Locating and loading the shared library, and declaring its C prototypes.

Only this module knows the C signatures.  Every other module calls the
functions through :data:`lib`, whose ``argtypes``/``restype`` are set here, so
that ctypes converts and checks each argument instead of guessing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ABI major version that this binding speaks: it loads ``libglow.so.0``.
#: A library whose ``glow_version_number() // 10000`` differs is refused.
ABI_MAJOR = 0

#: Environment variable naming a specific library file to load.
LIBRARY_ENV = "GLOW_LIBRARY"

_c_float_p = ctypes.POINTER(ctypes.c_float)
_c_int32_p = ctypes.POINTER(ctypes.c_int32)
_c_int64_p = ctypes.POINTER(ctypes.c_int64)
_c_uint8_p = ctypes.POINTER(ctypes.c_uint8)
_model_p = ctypes.c_void_p  # glow_model * (opaque)

# name: (restype, argtypes).  Struct pointers (glow_config *,
# glow_tensor_info *) are passed as c_void_p (ctypes.byref of the mirror),
# which keeps this table free of those classes and of an import cycle.
_PROTOTYPES: dict[str, tuple[object, list[object]]] = {
    "glow_config_init": (None, [ctypes.c_void_p]),
    "glow_model_create": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(_model_p)]),
    "glow_model_free": (None, [_model_p]),
    "glow_model_dim": (ctypes.c_int64, [_model_p]),
    "glow_model_config": (ctypes.c_int, [_model_p, ctypes.c_void_p]),
    "glow_latent_layout": (
        ctypes.c_int,
        [_model_p, ctypes.c_int32, _c_int32_p, _c_int32_p, _c_int32_p, _c_int64_p],
    ),
    "glow_forward": (
        ctypes.c_int,
        [_model_p, _c_float_p, _c_int32_p, ctypes.c_int32, _c_float_p, _c_float_p],
    ),
    "glow_inverse": (
        ctypes.c_int,
        [_model_p, _c_float_p, _c_int32_p, ctypes.c_int32, _c_float_p],
    ),
    "glow_logdet": (
        ctypes.c_int,
        [_model_p, _c_float_p, _c_int32_p, ctypes.c_int32, _c_float_p],
    ),
    "glow_log_prob": (
        ctypes.c_int,
        [_model_p, _c_float_p, _c_int32_p, ctypes.c_int32, _c_float_p],
    ),
    "glow_bits_per_dim": (
        ctypes.c_int,
        [_model_p, _c_float_p, _c_int32_p, ctypes.c_int32, _c_float_p],
    ),
    "glow_sample": (
        ctypes.c_int,
        [_model_p, ctypes.c_int32, ctypes.c_float, ctypes.c_uint64, _c_int32_p, _c_float_p],
    ),
    "glow_preprocess": (
        ctypes.c_int,
        [_model_p, _c_uint8_p, ctypes.c_int32, ctypes.c_uint64, _c_float_p],
    ),
    "glow_postprocess": (
        ctypes.c_int,
        [_model_p, _c_float_p, ctypes.c_int32, _c_uint8_p],
    ),
    "glow_classify": (
        ctypes.c_int,
        [_model_p, _c_float_p, ctypes.c_int32, _c_float_p, _c_float_p],
    ),
    "glow_latent_lerp": (
        ctypes.c_int,
        [_c_float_p, _c_float_p, ctypes.c_int64, ctypes.c_float, _c_float_p],
    ),
    "glow_latent_slerp": (
        ctypes.c_int,
        [_c_float_p, _c_float_p, ctypes.c_int64, ctypes.c_float, _c_float_p],
    ),
    "glow_latent_direction": (
        ctypes.c_int,
        [_c_float_p, ctypes.c_int32, _c_float_p, ctypes.c_int32, ctypes.c_int64, _c_float_p],
    ),
    "glow_latent_shift": (
        ctypes.c_int,
        [_c_float_p, _c_float_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float, _c_float_p],
    ),
    "glow_data_init": (
        ctypes.c_int,
        [_model_p, _c_float_p, _c_int32_p, ctypes.c_int32],
    ),
    "glow_param_count": (ctypes.c_int64, [_model_p]),
    "glow_params": (_c_float_p, [_model_p]),
    "glow_grads": (_c_float_p, [_model_p]),
    "glow_zero_grad": (ctypes.c_int, [_model_p]),
    "glow_backward": (
        ctypes.c_int,
        [_model_p, _c_float_p, _c_int32_p, ctypes.c_int32, _c_float_p],
    ),
    "glow_model_save": (ctypes.c_int, [_model_p, ctypes.c_char_p]),
    "glow_model_load": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(_model_p)]),
    "glow_model_save_buffer": (
        ctypes.c_int,
        [_model_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)],
    ),
    "glow_model_load_buffer": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(_model_p)],
    ),
    "glow_tensor_count": (ctypes.c_int32, [_model_p]),
    "glow_tensor_get": (ctypes.c_int, [_model_p, ctypes.c_int32, ctypes.c_void_p]),
    "glow_tensor_find": (ctypes.c_int, [_model_p, ctypes.c_char_p, _c_int32_p]),
    "glow_set_option": (ctypes.c_int, [_model_p, ctypes.c_int32, ctypes.c_int64]),
    "glow_get_option": (ctypes.c_int, [_model_p, ctypes.c_int32, _c_int64_p]),
    "glow_option_bounds": (ctypes.c_int, [ctypes.c_int32, _c_int64_p, _c_int64_p]),
    "glow_status_string": (ctypes.c_char_p, [ctypes.c_int]),
    "glow_last_error": (ctypes.c_char_p, []),
    "glow_version_string": (ctypes.c_char_p, []),
    "glow_version_number": (ctypes.c_uint32, []),
}


def _built_libdir() -> str | None:
    """The libdir of the libglow an installed package was built against
    (glow/_build_info.py, written by setup.py); None in the source tree."""
    try:
        from ._build_info import LIBDIR
    except ImportError:
        return None
    return LIBDIR


def _default_names() -> list[str]:
    """File names to try, in order, when GLOW_LIBRARY is not set."""
    if sys.platform == "darwin":
        names = [f"libglow.{ABI_MAJOR}.dylib"]
    elif sys.platform == "win32":
        names = ["glow.dll"]
    else:
        names = [f"libglow.so.{ABI_MAJOR}"]
    libdir = _built_libdir()
    if libdir:  # after the loader's search, as a run path would be
        names.append(os.path.join(libdir, names[0]))
    found = ctypes.util.find_library("glow")
    if found and found not in names:
        names.append(found)
    return names


def _open() -> tuple[ctypes.CDLL, str]:
    """Open the library: the file named by GLOW_LIBRARY, else the installed one."""
    explicit = os.environ.get(LIBRARY_ENV)
    names = [explicit] if explicit else _default_names()
    failures = []
    for name in names:
        try:
            return ctypes.CDLL(name), name
        except OSError as exc:
            failures.append(f"  {name}: {exc}")
    hint = (
        f"{LIBRARY_ENV} is set; check that it names the built library file"
        if explicit
        else f"install libglow (libglow.so.{ABI_MAJOR}) or set {LIBRARY_ENV} "
        "to the path of the library file"
    )
    raise ImportError("cannot load libglow:\n" + "\n".join(failures) + f"\n{hint}")


def _declare(handle: ctypes.CDLL) -> None:
    """Set argtypes/restype of every function this binding calls."""
    for name, (restype, argtypes) in _PROTOTYPES.items():
        try:
            fn = getattr(handle, name)
        except AttributeError as exc:
            raise ImportError(f"libglow lacks the symbol {name}: {exc}") from None
        fn.restype = restype
        fn.argtypes = argtypes


def _load() -> tuple[ctypes.CDLL, str]:
    handle, name = _open()
    _declare(handle)
    major = handle.glow_version_number() // 10000
    if major != ABI_MAJOR:
        raise ImportError(
            f"{name} is libglow {handle.glow_version_string().decode()} "
            f"(ABI {major}); this binding needs ABI {ABI_MAJOR}"
        )
    return handle, name


#: The loaded library, with prototypes declared.
lib, library_path = _load()

"""Python binding of libglow, a C library for the Glow normalizing flow.

The binding loads the shared library with ctypes: the file named by the
environment variable ``GLOW_LIBRARY`` if set, else the installed
``libglow.so.0``.  Images and latents are numpy float32 arrays (NHWC images,
``(n, dim)`` latents); parameters and gradients are numpy views of the
library's own buffers.

    >>> import glow
    >>> m = glow.Model(height=8, width=8, channels=1, levels=2, depth=2, hidden=16)
    >>> x = m.sample(4, temperature=0.7, seed=1)
    >>> eps, logdet = m.forward(x)
    >>> bpd = m.bits_per_dim(x)

Failing library calls raise :class:`GlowError`, which carries the status code
and the library's detailed message.  See docs/python.md.

``glow.torch`` (imported on first use, and only then needing PyTorch) is the
same model as a ``torch.nn.Module``; see docs/pytorch.md.
"""

from ._library import ABI_MAJOR, LIBRARY_ENV, lib as _lib, library_path
from ._errors import GlowError, Status, last_error, status_string
from ._config import Config, Coupling, Permutation
from ._latent import latent_direction, latent_lerp, latent_shift, latent_slerp
from ._model import LatentLevel, Model, Tensor
from ._options import BackwardMode, Gemm, Option, option_bounds

__all__ = [
    "ABI_MAJOR",
    "LIBRARY_ENV",
    "BackwardMode",
    "Gemm",
    "Config",
    "Coupling",
    "GlowError",
    "LatentLevel",
    "Model",
    "Option",
    "Permutation",
    "Status",
    "Tensor",
    "last_error",
    "latent_direction",
    "latent_lerp",
    "latent_shift",
    "latent_slerp",
    "library_path",
    "option_bounds",
    "status_string",
    "version",
    "version_number",
]


def version() -> str:
    """The loaded library's version, ``"MAJOR.MINOR.PATCH"``
    (``glow_version_string``)."""
    return _lib.glow_version_string().decode("ascii")


def version_number() -> int:
    """``MAJOR * 10000 + MINOR * 100 + PATCH`` of the loaded library
    (``glow_version_number``)."""
    return int(_lib.glow_version_number())


__version__ = version()


def __getattr__(name: str) -> object:
    """``glow.torch`` on first use: PyTorch is imported only then."""
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'glow' has no attribute {name!r}")

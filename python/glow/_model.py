"""The model: a Python object over one ``glow_model *``."""

from __future__ import annotations

import ctypes
import os
from typing import Any, Callable, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from . import _checks
from ._checks import f32, i32, int32, int64, u8
from ._config import Config
from ._errors import check
from ._library import lib
from ._lock import RWLock

_TENSOR_MAX_DIMS = 4  # GLOW_TENSOR_MAX_DIMS


class LatentLevel(NamedTuple):
    """Where one level's latent lies in a latent row (``glow_latent_layout``):
    a block of ``h * w * c`` floats, row-major in shape ``(h, w, c)``,
    starting ``offset`` floats into the row."""

    h: int
    w: int
    c: int
    offset: int

    @property
    def size(self) -> int:
        """Number of floats in the block."""
        return self.h * self.w * self.c


class Tensor(NamedTuple):
    """One named parameter tensor (``glow_tensor_get``): ``count`` floats of
    the flat parameter buffer from ``offset`` on, row-major in ``shape``."""

    name: str
    offset: int
    shape: tuple[int, ...]

    @property
    def count(self) -> int:
        """Number of floats, the product of ``shape``."""
        return int(np.prod(self.shape, dtype=np.int64))


class _TensorInfo(ctypes.Structure):
    """Mirror of the C struct ``glow_tensor_info``."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("ndim", ctypes.c_int32),
        ("name", ctypes.c_char_p),
        ("offset", ctypes.c_int64),
        ("count", ctypes.c_int64),
        ("shape", ctypes.c_int32 * _TENSOR_MAX_DIMS),
    ]


class _Handle:
    """Owns one ``glow_model *`` and frees it when the last reference goes.

    The :class:`Model` holds one reference, every parameter or gradient view
    holds another, so that a view never outlives the memory it shows.
    ``lock`` guards the C model: shared for the calls that may run
    concurrently, exclusive for those that change the model.
    """

    __slots__ = ("ptr", "lock", "__weakref__")
    _free = lib.glow_model_free  # kept on the class: safe at interpreter exit

    def __init__(self, ptr: int) -> None:
        self.ptr = ptr
        self.lock = RWLock()

    def __del__(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr:
            self._free(ptr)


class Model:
    """A Glow model owned by the library.

    Create one from a :class:`Config` (``Model(cfg)``), from keyword fields
    over the defaults (``Model(height=28, width=28, channels=1)``), or from a
    model file (:meth:`load`, :meth:`from_bytes`).

    Images are float32 NHWC arrays of shape ``(n, height, width, channels)``
    (uint8 for pixels), latents float32 arrays of shape ``(n, dim)``.  They
    must already have the right dtype, shape and C-contiguous layout:
    anything else raises TypeError (type, dtype) or ValueError (shape,
    layout); they are never converted or copied.  Labels, required by a
    conditional model and ``None`` otherwise, are any integer array-like of
    length ``n``, converted to int32.  Outputs are new arrays.  A failing
    library call raises :class:`glow.GlowError`.

    :attr:`params` and :attr:`grads` (and :meth:`param`, :meth:`grad`) are
    views of the library's own buffers, not copies.  Each view keeps the C
    model alive, so :meth:`close` (or the end of a ``with`` block) makes this
    object unusable but frees the model only once the last view is gone.

    Threads: ctypes releases the GIL during each library call.  Inference
    methods (and :meth:`save`, :meth:`to_bytes`, :meth:`get_option`) may
    run concurrently on one model from several threads; :meth:`data_init`,
    :meth:`backward`, :meth:`zero_grad` and :meth:`set_option` need
    exclusive access, which a per-model lock enforces: they wait for the
    calls in progress and run alone.  Writes to the views bypass the lock:
    write parameters only while no other thread uses the model.
    """

    def __init__(self, config: Config | None = None, **fields: Any) -> None:
        if config is None:
            cfg = Config(**fields)
        elif isinstance(config, Config):
            cfg = config.copy()
            for name, value in fields.items():
                setattr(cfg, name, value)
        else:
            raise TypeError(f"config must be a glow.Config, got {type(config).__name__}")
        out = ctypes.c_void_p()
        check(lib.glow_model_create(ctypes.byref(cfg), ctypes.byref(out)))
        self._attach(out.value)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | bytes) -> "Model":
        """Read a model file written by :meth:`save` (``glow_model_load``)."""
        out = ctypes.c_void_p()
        check(lib.glow_model_load(_checks.path_bytes(path), ctypes.byref(out)))
        return cls._adopt(out.value)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> "Model":
        """Read a model from the bytes of a model file, as :meth:`to_bytes`
        gives them (``glow_model_load_buffer``)."""
        try:
            raw = np.frombuffer(data, dtype=np.uint8)
        except TypeError:
            raise TypeError(
                f"data must be a bytes-like object, got {type(data).__name__}"
            ) from None
        if raw.size == 0:  # never pass NULL: an empty input is malformed
            raw = np.zeros(1, dtype=np.uint8)[:0]
        out = ctypes.c_void_p()
        check(lib.glow_model_load_buffer(raw.ctypes.data, raw.size, ctypes.byref(out)))
        return cls._adopt(out.value)

    @classmethod
    def _adopt(cls, ptr: int) -> "Model":
        model = cls.__new__(cls)
        model._attach(ptr)
        return model

    def _attach(self, ptr: int) -> None:
        self._handle: _Handle | None = _Handle(ptr)
        cfg = Config()
        check(lib.glow_model_config(ptr, ctypes.byref(cfg)))
        self._config = cfg
        self._image_shape = (cfg.height, cfg.width, cfg.channels)
        self._dim = int(lib.glow_model_dim(ptr))
        self._param_count = int(lib.glow_param_count(ptr))
        self._tensors: list[Tensor] | None = None

    # ---- lifetime and files -------------------------------------------------

    def _live(self) -> _Handle:
        handle = self._handle
        if handle is None:
            raise ValueError("the model is closed")
        return handle

    def close(self) -> None:
        """Release this object's hold on the C model.  The model is freed now,
        or when the last parameter or gradient view is gone."""
        self._handle = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._handle is None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def save(self, path: str | os.PathLike[str] | bytes) -> None:
        """Write the model to the file ``path``, atomically
        (``glow_model_save``)."""
        handle = self._live()
        path = _checks.path_bytes(path)
        with handle.lock.shared():
            check(lib.glow_model_save(handle.ptr, path))

    def to_bytes(self) -> bytes:
        """The bytes of the model file that :meth:`save` writes
        (``glow_model_save_buffer``)."""
        handle = self._live()
        size = ctypes.c_size_t()
        with handle.lock.shared():
            check(lib.glow_model_save_buffer(handle.ptr, None, 0, ctypes.byref(size)))
            buffer = ctypes.create_string_buffer(max(size.value, 1))
            check(lib.glow_model_save_buffer(handle.ptr, buffer, size.value,
                                             ctypes.byref(size)))
        return ctypes.string_at(buffer, size.value)

    # ---- description --------------------------------------------------------

    @property
    def config(self) -> Config:
        """A copy of the model's configuration (``glow_model_config``)."""
        return self._config.copy()

    @property
    def dim(self) -> int:
        """D = height * width * channels, the length of one latent row."""
        return self._dim

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(height, width, channels)`` of one image."""
        return self._image_shape

    @property
    def param_count(self) -> int:
        """Number of trainable floats (``glow_param_count``)."""
        return self._param_count

    def latent_layout(self, level: int) -> LatentLevel:
        """Shape and offset of level ``level``'s block in a latent row
        (``glow_latent_layout``); level 0 is the first factored-out level."""
        handle = self._live()
        level = int32(level, "level")
        h, w, c = ctypes.c_int32(), ctypes.c_int32(), ctypes.c_int32()
        offset = ctypes.c_int64()
        check(lib.glow_latent_layout(handle.ptr, level, ctypes.byref(h), ctypes.byref(w),
                                     ctypes.byref(c), ctypes.byref(offset)))
        return LatentLevel(h.value, w.value, c.value, offset.value)

    def latent_levels(self) -> list[LatentLevel]:
        """:meth:`latent_layout` of every level, first to top."""
        return [self.latent_layout(i) for i in range(self._config.levels)]

    def split_latent(self, eps: np.ndarray) -> list[np.ndarray]:
        """Views of each level's block of latents ``eps`` (shape ``(n, dim)``),
        reshaped to ``(n, h, w, c)``; writing them writes ``eps``."""
        eps = self._latents(eps)
        n = eps.shape[0]
        return [
            eps[:, lv.offset : lv.offset + lv.size].reshape(n, lv.h, lv.w, lv.c)
            for lv in self.latent_levels()
        ]

    # ---- options -------------------------------------------------------------

    def set_option(self, option: int, value: int) -> None:
        """Set a run-time option (``glow_set_option``), e.g.
        ``model.set_option(glow.Option.BACKWARD_MODE, glow.BackwardMode.STORE)``.
        Options are not saved in model files."""
        handle = self._live()
        option, value = int32(option, "option"), int64(value, "value")
        with handle.lock.exclusive():
            check(lib.glow_set_option(handle.ptr, option, value))

    def get_option(self, option: int) -> int:
        """The current value of a run-time option (``glow_get_option``)."""
        handle = self._live()
        value = ctypes.c_int64()
        option = int32(option, "option")
        with handle.lock.shared():
            check(lib.glow_get_option(handle.ptr, option, ctypes.byref(value)))
        return value.value

    # ---- parameters ----------------------------------------------------------

    def _view(self, getter: Callable[[int], Any]) -> np.ndarray:
        handle = self._live()
        address = ctypes.cast(getter(handle.ptr), ctypes.c_void_p).value
        if not address:
            raise RuntimeError("libglow returned a NULL buffer")
        buffer = (ctypes.c_float * self._param_count).from_address(address)
        buffer._glow_handle = handle  # the view keeps the model alive
        return np.ctypeslib.as_array(buffer)

    @property
    def params(self) -> np.ndarray:
        """The flat parameter buffer (``glow_params``) as a writable float32
        view of length :attr:`param_count`, not a copy: writes reach the
        model's next call.  :meth:`tensors` names its parts."""
        return self._view(lib.glow_params)

    @property
    def grads(self) -> np.ndarray:
        """The flat gradient buffer (``glow_grads``), a view like
        :attr:`params` with the same layout."""
        return self._view(lib.glow_grads)

    def zero_grad(self) -> None:
        """Set every gradient to zero (``glow_zero_grad``)."""
        handle = self._live()
        with handle.lock.exclusive():
            check(lib.glow_zero_grad(handle.ptr))

    def _tensor_at(self, handle: _Handle, index: int) -> Tensor:
        info = _TensorInfo(size=ctypes.sizeof(_TensorInfo))
        check(lib.glow_tensor_get(handle.ptr, index, ctypes.byref(info)))
        shape = tuple(info.shape[i] for i in range(info.ndim))
        return Tensor(info.name.decode("utf-8"), info.offset, shape)

    def tensors(self) -> list[Tensor]:
        """Every named parameter tensor, in buffer order
        (``glow_tensor_count``, ``glow_tensor_get``)."""
        handle = self._live()
        if self._tensors is None:
            count = lib.glow_tensor_count(handle.ptr)
            self._tensors = [self._tensor_at(handle, i) for i in range(count)]
        return list(self._tensors)

    def tensor(self, name: str) -> Tensor:
        """The parameter tensor called ``name`` (``glow_tensor_find``); an
        unknown name is GLOW_ERR_ARG."""
        handle = self._live()
        index = ctypes.c_int32()
        check(lib.glow_tensor_find(handle.ptr, _name_bytes(name), ctypes.byref(index)))
        return self._tensor_at(handle, index.value)

    def param(self, name: str) -> np.ndarray:
        """A writable view of the parameter tensor ``name`` in its shape."""
        t = self.tensor(name)
        return self.params[t.offset : t.offset + t.count].reshape(t.shape)

    def grad(self, name: str) -> np.ndarray:
        """A view of the gradient of the parameter tensor ``name``."""
        t = self.tensor(name)
        return self.grads[t.offset : t.offset + t.count].reshape(t.shape)

    # ---- argument helpers ----------------------------------------------------

    def _images(self, x: Any, name: str = "x") -> np.ndarray:
        return _checks.batch_array(x, name, np.float32, self._image_shape, "NHWC images")

    def _latents(self, eps: Any) -> np.ndarray:
        return _checks.batch_array(eps, "eps", np.float32, (self._dim,), "latents")

    def _image_call(
        self, x: Any, labels: ArrayLike | None
    ) -> tuple[_Handle, np.ndarray, np.ndarray | None]:
        """The live handle, the checked image batch and its labels."""
        handle = self._live()
        x = self._images(x)
        return handle, x, _checks.labels_array(labels, x.shape[0])

    def _per_image(self, fn: Callable[..., int], x: Any, labels: ArrayLike | None) -> np.ndarray:
        """Run a ``(m, x, labels, n, out[n])`` call."""
        handle, x, labels = self._image_call(x, labels)
        out = np.empty(x.shape[0], dtype=np.float32)
        with handle.lock.shared():
            check(fn(handle.ptr, f32(x), i32(labels), x.shape[0], f32(out)))
        return out

    # ---- inference -----------------------------------------------------------

    def forward(
        self, x: np.ndarray, labels: ArrayLike | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Images to latents (``glow_forward``).

        Returns ``(eps, logdet)``: ``eps`` of shape ``(n, dim)`` and ``logdet``
        of shape ``(n,)``, log|det d eps/dx| in nats, so that
        ``log p(x) = sum(log N(eps; 0, 1)) + logdet``.
        """
        handle, x, labels = self._image_call(x, labels)
        n = x.shape[0]
        eps = np.empty((n, self._dim), dtype=np.float32)
        logdet = np.empty(n, dtype=np.float32)
        with handle.lock.shared():
            check(lib.glow_forward(handle.ptr, f32(x), i32(labels), n, f32(eps), f32(logdet)))
        return eps, logdet

    def inverse(self, eps: np.ndarray, labels: ArrayLike | None = None) -> np.ndarray:
        """Latents ``(n, dim)`` back to images ``(n, H, W, C)`` (``glow_inverse``)."""
        handle = self._live()
        eps = self._latents(eps)
        n = eps.shape[0]
        labels = _checks.labels_array(labels, n)
        x = np.empty((n, *self._image_shape), dtype=np.float32)
        with handle.lock.shared():
            check(lib.glow_inverse(handle.ptr, f32(eps), i32(labels), n, f32(x)))
        return x

    def logdet(self, x: np.ndarray, labels: ArrayLike | None = None) -> np.ndarray:
        """log|det d eps/dx| per image, shape ``(n,)`` (``glow_logdet``)."""
        return self._per_image(lib.glow_logdet, x, labels)

    def log_prob(self, x: np.ndarray, labels: ArrayLike | None = None) -> np.ndarray:
        """Log density of each image in nats, shape ``(n,)`` (``glow_log_prob``)."""
        return self._per_image(lib.glow_log_prob, x, labels)

    def bits_per_dim(self, x: np.ndarray, labels: ArrayLike | None = None) -> np.ndarray:
        """Bits per dimension of each image under the discretised model,
        shape ``(n,)`` (``glow_bits_per_dim``)."""
        return self._per_image(lib.glow_bits_per_dim, x, labels)

    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        seed: int = 0,
        labels: ArrayLike | None = None,
    ) -> np.ndarray:
        """``n`` images ``(n, H, W, C)`` at ``temperature`` (``glow_sample``):
        the inverse of ``temperature * eps`` with ``eps ~ N(0, I)`` drawn from
        ``seed``.  The same seed gives the same images.  ``n < 1`` is the
        library's GLOW_ERR_BATCH."""
        handle = self._live()
        n = int32(n, "n")
        temperature = _checks.real(temperature, "temperature")
        seed = _checks.seed(seed)
        labels = _checks.labels_array(labels, max(n, 0))
        x = np.empty((max(n, 0), *self._image_shape), dtype=np.float32)
        with handle.lock.shared():
            check(lib.glow_sample(handle.ptr, n, temperature, seed, i32(labels), f32(x)))
        return x

    def preprocess(self, pixels: np.ndarray, seed: int = 0) -> np.ndarray:
        """8-bit NHWC pixels (uint8, ``(n, H, W, C)``) to model input:
        reduction to ``n_bits``, scaling to [-0.5, 0.5) and uniform
        dequantisation noise from ``seed`` (``glow_preprocess``)."""
        handle = self._live()
        pixels = _checks.batch_array(pixels, "pixels", np.uint8, self._image_shape,
                                     "NHWC pixels")
        seed = _checks.seed(seed)
        n = pixels.shape[0]
        x = np.empty((n, *self._image_shape), dtype=np.float32)
        with handle.lock.shared():
            check(lib.glow_preprocess(handle.ptr, u8(pixels), n, seed, f32(x)))
        return x

    def postprocess(self, x: np.ndarray) -> np.ndarray:
        """Model input or output back to uint8 pixels ``(n, H, W, C)``
        (``glow_postprocess``)."""
        handle = self._live()
        x = self._images(x)
        n = x.shape[0]
        pixels = np.empty((n, *self._image_shape), dtype=np.uint8)
        with handle.lock.shared():
            check(lib.glow_postprocess(handle.ptr, f32(x), n, u8(pixels)))
        return pixels

    def classify(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class prediction of a conditional model (``glow_classify``): the
        classifier head of the training loss on the top-level latent.
        Returns ``(logits, probs)``, each ``(n, n_classes)``; an
        unconditional model is GLOW_ERR_STATE."""
        handle = self._live()
        x = self._images(x)
        n, k = x.shape[0], max(self._config.n_classes, 1)
        logits = np.empty((n, k), dtype=np.float32)
        probs = np.empty((n, k), dtype=np.float32)
        with handle.lock.shared():
            check(lib.glow_classify(handle.ptr, f32(x), n, f32(logits), f32(probs)))
        return logits, probs

    # ---- training ------------------------------------------------------------

    def data_init(self, x: np.ndarray, labels: ArrayLike | None = None) -> None:
        """Data-dependent initialisation of every actnorm from the batch ``x``
        (``glow_data_init``); required once before :meth:`backward`."""
        handle, x, labels = self._image_call(x, labels)
        with handle.lock.exclusive():
            check(lib.glow_data_init(handle.ptr, f32(x), i32(labels), x.shape[0]))

    def backward(self, x: np.ndarray, labels: ArrayLike | None = None) -> float:
        """Loss and gradients of the batch ``x`` (``glow_backward``).

        Returns the loss (mean bits/dim, plus the weighted classification loss
        of a conditional model); the gradients are ADDED to :attr:`grads`, so
        call :meth:`zero_grad` between optimizer steps.
        """
        handle, x, labels = self._image_call(x, labels)
        loss = ctypes.c_float()
        with handle.lock.exclusive():
            check(lib.glow_backward(handle.ptr, f32(x), i32(labels), x.shape[0],
                                    ctypes.byref(loss)))
        return float(loss.value)

    def __repr__(self) -> str:
        if self._handle is None:
            return "<glow.Model (closed)>"
        c = self._config
        return (
            f"<glow.Model {c.height}x{c.width}x{c.channels} levels={c.levels} "
            f"depth={c.depth} hidden={c.hidden} params={self._param_count}>"
        )


def _name_bytes(name: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    raw = name.encode("utf-8")
    if b"\0" in raw:
        raise ValueError("name contains a NUL character")
    return raw

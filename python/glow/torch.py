"""libglow's Glow as a PyTorch module: train where PyTorch runs, deploy in C.

:class:`Glow` is a ``torch.nn.Module`` that computes what the C library
computes, with its conventions at every interface: NHWC images in
[-0.5, 0.5], latents ``(n, dim)`` in libglow's layout (every level's
standardized latent, level 0 first, the top last, each block row-major in
its ``(h, w, c)`` shape), labels for class-conditional models.  Its
``state_dict()`` holds exactly the tensors of a model file, under the file's
names and in the file's shapes (docs/format.md), so a model moves between
the two by :meth:`Glow.save` and ``glow_model_load`` (or ``glow.Model.load``)
and back by :meth:`Glow.load`::

    import glow, glow.torch
    net = glow.torch.Glow.load("model.safetensors").to("cuda")
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss = net.loss(x, labels)          # glow_backward's loss
    loss.backward(); opt.step()
    net.save("tuned.safetensors")       # glow_model_load reads it

Nothing pins a device or a dtype: the module runs wherever its parameters
are (``net.to(device, dtype)``), float64 included.  As in the library, the
determinant and the inverse of each 1x1 weight are computed in float64.

Needs PyTorch (Debian: ``python3-torch``); ``import glow`` itself does not.
See docs/pytorch.md.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator, Sequence

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "glow.torch needs PyTorch, which is not installed for this Python "
        "(Debian: apt-get install python3-torch); the rest of the glow "
        "package works without it"
    ) from exc

from . import _modelfile
from ._config import Config, Coupling, Permutation
from ._library import lib
from ._model import Model

__all__ = ["Glow"]

_LN_2 = math.log(2.0)
_LOG_2PI = math.log(2.0 * math.pi)
#: Output scale of the zero-initialised convolutions: exp(3 * logs).
_ZCONV_LOGSCALE = 3.0
#: The affine coupling's scale is sigmoid(raw + 2).
_COUPLING_SHIFT = 2.0
#: glow_sample redraws an image whose inverse is not finite this often.
_SAMPLE_REDRAWS = 16

Labels = Any  # a tensor, array or sequence of n integers, or None


# ---- layers --------------------------------------------------------------------
#
# Every parameter is kept in its file shape: convolution kernels HWIO
# ([ky][kx][in][out]), 1x1 weights [in][out], and the interleaved outputs of
# the affine coupling's last convolution and of the priors (shift/raw and
# mean/logs at channels 2k and 2k+1).  Activations are NCHW tensors inside
# the flow (a permuted NHWC batch, so channels-last in memory).


def _deinterleave(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Channels 0, 2, 4, ... then 1, 3, 5, ... along ``dim``."""
    n = t.shape[dim]
    order = torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2)]).to(t.device)
    return t.index_select(dim, order)


def _hwio_to_oihw(w: torch.Tensor) -> torch.Tensor:
    return w.permute(3, 2, 0, 1)


def _per_channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


def _squeeze(x: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) -> (n, 4c, h/2, w/2), output channel 4 c + 2 dy + dx."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // 2, 2, w // 2, 2)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)


def _unsqueeze(x: torch.Tensor) -> torch.Tensor:
    n, c4, h, w = x.shape
    x = x.reshape(n, c4 // 4, 2, 2, h, w)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(n, c4 // 4, 2 * h, 2 * w)


def _nchw_rows(z: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) -> (n, h*w*c), the block row-major in (h, w, c)."""
    return z.permute(0, 2, 3, 1).reshape(z.shape[0], -1)


class _ActNorm(nn.Module):
    """``y = (x + bias) * exp(logs)`` per channel."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(c))
        self.logs = nn.Parameter(torch.zeros(c))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """glow_data_init for this actnorm: bias = -mean, logs =
        log(1 / (std + 1e-6)) of its input per channel (biased std, in
        float64), so that this batch comes out standardized."""
        xd = x.to(torch.float64)
        mean = xd.mean((0, 2, 3))
        std = (xd - _per_channel(mean)).square().mean((0, 2, 3)).sqrt()
        self.bias.copy_(-mean)
        self.logs.copy_(torch.log(1.0 / (std + 1e-6)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + _per_channel(self.bias)) * _per_channel(torch.exp(self.logs))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * _per_channel(torch.exp(-self.logs)) - _per_channel(self.bias)


class _Conv3x3(nn.Module):
    """3x3 convolution, zero "same" padding, no bias; weight HWIO."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3, 3, cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, _hwio_to_oihw(self.weight), padding=1)


class _Conv1x1(nn.Module):
    """1x1 convolution ``y = x W`` per pixel, ``W[in][out]``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.t()[:, :, None, None])


class _ZeroConv(nn.Module):
    """``(conv3x3(x) + bias) * exp(3 logs)``; weight HWIO.  With
    ``interleaved``, output channels 2k and 2k+1 are two quantities; the
    result then holds all the first ones, then all the second ones, for
    ``torch.chunk``."""

    def __init__(self, cin: int, cout: int, interleaved: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3, 3, cin, cout))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.logs = nn.Parameter(torch.zeros(cout))
        self.interleaved = interleaved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b, s = self.weight, self.bias, self.logs
        if self.interleaved:  # reorder the (small) weights, not the output
            w, b, s = _deinterleave(w, 3), _deinterleave(b, 0), _deinterleave(s, 0)
        y = F.conv2d(x, _hwio_to_oihw(w), padding=1)
        return (y + _per_channel(b)) * _per_channel(torch.exp(_ZCONV_LOGSCALE * s))


class _InvConv(nn.Module):
    """Invertible 1x1 convolution ``y = x W``, ``W[in][out]``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(c, c))

    def weight64(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W in float64 and log|det W| per pixel."""
        w = self.weight.to(torch.float64)
        return w, torch.linalg.slogdet(w)[1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, logdet = self.weight64()
        return F.conv2d(x, w.to(x.dtype).t()[:, :, None, None]), logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        inv = torch.linalg.inv(self.weight64()[0])
        return F.conv2d(y, inv.to(y.dtype).t()[:, :, None, None])


class _InvConvLU(_InvConv):
    """The 1x1 convolution as ``W = P L (U + diag(sign * exp(log_s)))``: the
    strict triangles of ``lower`` and ``upper`` are trained (the rest is
    ignored and gets no gradient); ``perm`` (``P[perm[j]][j] = 1``) and
    ``sign`` are fixed buffers."""

    def __init__(self, c: int) -> None:
        nn.Module.__init__(self)
        self.lower = nn.Parameter(torch.zeros(c, c))
        self.upper = nn.Parameter(torch.zeros(c, c))
        self.log_s = nn.Parameter(torch.zeros(c))
        self.register_buffer("perm", torch.arange(c))
        self.register_buffer("sign", torch.ones(c))

    def weight64(self) -> tuple[torch.Tensor, torch.Tensor]:
        f64 = torch.float64
        lower = torch.tril(self.lower.to(f64), -1)
        lower = lower + torch.eye(lower.shape[0], dtype=f64, device=lower.device)
        log_s = self.log_s.to(f64)
        upper = torch.triu(self.upper.to(f64), 1) + torch.diag(self.sign.to(f64) * torch.exp(log_s))
        a = lower @ upper
        w = torch.empty_like(a).index_copy(0, self.perm, a)  # W[perm[i]] = (L U)[i]
        return w, log_s.sum()


class _Permute(nn.Module):
    """A fixed channel permutation ``y[j] = x[index[j]]`` (reverse or
    shuffle); log-determinant 0."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.register_buffer("index", torch.arange(c))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x.index_select(1, self.index), None

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.index_select(1, torch.argsort(self.index))


class _Coupling(nn.Module):
    """Affine or additive coupling: x1 passes and drives
    ``NN = conv3x3 -> actnorm -> ReLU -> conv1x1 -> actnorm -> ReLU -> zconv``;
    affine ``y2 = (x2 + shift) * sigmoid(raw + 2)``, additive ``y2 = x2 + NN``."""

    def __init__(self, c: int, hidden: int, affine: bool) -> None:
        super().__init__()
        self.conv1 = _Conv3x3(c // 2, hidden)
        self.actnorm1 = _ActNorm(hidden)
        self.conv2 = _Conv1x1(hidden, hidden)
        self.actnorm2 = _ActNorm(hidden)
        self.conv3 = _ZeroConv(hidden, c if affine else c // 2, interleaved=affine)
        self.affine = affine

    def network(self, x1: torch.Tensor, init: bool = False) -> torch.Tensor:
        h = self.conv1(x1)
        if init:
            self.actnorm1.initialize(h)
        h = F.relu(self.actnorm1(h))
        h = self.conv2(h)
        if init:
            self.actnorm2.initialize(h)
        h = F.relu(self.actnorm2(h))
        return self.conv3(h)

    def forward(self, x: torch.Tensor, init: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        x1, x2 = x.chunk(2, 1)
        out = self.network(x1, init)
        if not self.affine:
            return torch.cat([x1, x2 + out], 1), None
        shift, raw = out.chunk(2, 1)
        raw = raw + _COUPLING_SHIFT
        y2 = (x2 + shift) * torch.sigmoid(raw)
        return torch.cat([x1, y2], 1), F.logsigmoid(raw).sum((1, 2, 3))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = y.chunk(2, 1)
        out = self.network(y1)
        if not self.affine:
            return torch.cat([y1, y2 - out], 1)
        shift, raw = out.chunk(2, 1)
        return torch.cat([y1, y2 / torch.sigmoid(raw + _COUPLING_SHIFT) - shift], 1)


class _Step(nn.Module):
    """One flow step: actnorm, channel mixing, coupling."""

    def __init__(self, c: int, hidden: int, coupling: int, permutation: int) -> None:
        super().__init__()
        self.actnorm = _ActNorm(c)
        if permutation == Permutation.CONV1X1:
            self.invconv = _InvConv(c)
        elif permutation == Permutation.CONV1X1_LU:
            self.invconv = _InvConvLU(c)
        else:
            self.permute = _Permute(c)
        self.coupling = _Coupling(c, hidden, coupling == Coupling.AFFINE)

    def mixing(self) -> nn.Module:
        return self.permute if hasattr(self, "permute") else self.invconv

    def forward(
        self, x: torch.Tensor, init: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(y, log|det| per pixel of actnorm and mixing (a scalar),
        the coupling's per-image log|det| or None)."""
        if init:
            self.actnorm.initialize(x)
        x = self.actnorm(x)
        pixel = self.actnorm.logs.sum()
        x, mixing_ld = self.mixing()(x)
        if mixing_ld is not None:
            pixel = pixel + mixing_ld.to(pixel.dtype)
        x, coupling_ld = self.coupling(x, init)
        return x, pixel, coupling_ld

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y = self.coupling.inverse(y)
        y = self.mixing().inverse(y)
        return self.actnorm.inverse(y)


class _Level(nn.Module):
    """K steps; then, below the top, the split prior: a zero-initialised
    conv of the kept half gives the factored half's mean and logs."""

    def __init__(self, c: int, cfg: Config, top: bool) -> None:
        super().__init__()
        self.step = nn.ModuleList(
            _Step(c, cfg.hidden, cfg.coupling, cfg.permutation) for _ in range(cfg.depth))
        if not top:
            self.prior = _ZeroConv(c // 2, c, interleaved=True)


class _Top(nn.Module):
    """The top latent's prior: a learned ``(h, w, 2c)`` tensor (``learn_top``)
    plus, for a conditional model, a per-class ``(n_classes, 2c)`` offset;
    means at channels 2k, log-scales at 2k+1."""

    def __init__(self, h: int, w: int, c: int, learn_top: bool, n_classes: int) -> None:
        super().__init__()
        if learn_top:
            self.prior = nn.Parameter(torch.zeros(h, w, 2 * c))
        if n_classes > 0:
            self.class_embed = nn.Parameter(torch.zeros(n_classes, 2 * c))

    def forward(self, labels: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(mean, logs), broadcastable to (n, c, h, w); None where zero."""
        mean = logs = None
        if hasattr(self, "prior"):
            p = self.prior.permute(2, 0, 1)[None]
            mean, logs = p[:, 0::2], p[:, 1::2]
        if hasattr(self, "class_embed"):
            e = self.class_embed[labels][:, :, None, None]
            em, el = e[:, 0::2], e[:, 1::2]
            mean = em if mean is None else mean + em
            logs = el if logs is None else logs + el
        return mean, logs


class _Classifier(nn.Module):
    """``logits = mean_hw(z_top) W + b``, ``W[c][n_classes]``."""

    def __init__(self, c: int, n_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(c, n_classes))
        self.bias = nn.Parameter(torch.zeros(n_classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.mean((2, 3)) @ self.weight + self.bias


# ---- the model -------------------------------------------------------------------


class Glow(nn.Module):
    """A libglow model as a ``torch.nn.Module``, with the library's numerics.

    Construction:

    - ``Glow(config)`` or ``Glow(height=28, width=28, ...)``: a new model
      from a :class:`glow.Config` and/or its fields, with the initial weights
      and fixed permutations the library gives the same configuration (it
      creates them: the same seed, the same model);
    - ``Glow(model)`` or :meth:`from_model`: a copy of a :class:`glow.Model`;
    - :meth:`load`: a model file (checked by the library).

    ``device`` and ``dtype`` place the new module (as ``.to()`` would).
    ``state_dict()`` keys and shapes are the model file's tensors
    (docs/format.md): parameters, and the fixed buffers ``invconv.perm``,
    ``invconv.sign`` or ``permute.index``.  :meth:`save` writes a file that
    ``glow_model_load`` reads.

    Images are tensors ``(n, height, width, channels)`` (NHWC) of the
    module's dtype, latents ``(n, dim)`` in libglow's layout; labels
    (``n`` integers in ``[0, n_classes)``) are required by a conditional
    model and refused by an unconditional one, as in C.  Methods mirror the
    C API: :meth:`forward`, :meth:`inverse`, :meth:`logdet`,
    :meth:`log_prob`, :meth:`bits_per_dim`, :meth:`loss` (exactly
    ``glow_backward``'s loss), :meth:`sample`, :meth:`data_init`,
    :meth:`classify`, :meth:`preprocess`, :meth:`postprocess`.
    """

    def __init__(
        self,
        config: Config | Model | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **fields: Any,
    ) -> None:
        super().__init__()
        if isinstance(config, Model):
            if fields:
                raise TypeError("configuration fields cannot be combined with a glow.Model")
            data = config.to_bytes()
        else:
            with Model(config, **fields) as model:
                data = model.to_bytes()
        meta, tensors = _modelfile.read(data)
        cfg = _modelfile.config_from_meta(meta)
        self._fields = {k: getattr(cfg, k) for k in Config.field_names() if k != "size"}
        #: Whether the actnorms were set from data (:meth:`data_init`), as
        #: ``glow.initialized`` in a model file; saved with the model.
        #: ``glow_backward`` refuses a model without it.
        self.initialized = meta["glow.initialized"] == "1"
        self._shapes = _level_shapes(cfg)
        self.level = nn.ModuleList(
            _Level(c, cfg, top=l == cfg.levels - 1) for l, (_, _, c) in enumerate(self._shapes))
        h, w, c = self._shapes[-1]
        self.top = _Top(h, w, c, bool(cfg.learn_top), cfg.n_classes)
        if cfg.n_classes > 0:
            self.classifier = _Classifier(c, cfg.n_classes)
        self.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    @classmethod
    def from_model(
        cls, model: Model, *, device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> "Glow":
        """A copy of the C model ``model``: parameters, fixed buffers and
        the initialised flag."""
        return cls(model, device=device, dtype=dtype)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> "Glow":
        """Read a model file, validated by ``glow_model_load``."""
        with Model.load(path) as model:
            return cls(model, device=device, dtype=dtype)

    def to_bytes(self) -> bytes:
        """The bytes of this model's file, as ``glow_model_save`` would
        write them (float32 values, the library's layout)."""
        tensors = {}
        for name, t in self.state_dict().items():
            tensors[name] = t.detach().to("cpu", torch.float32).numpy()
        # Parameters first, then the fixed buffers, each in model order.
        fixed = {k for k, _ in self.named_buffers()}
        ordered = {k: v for k, v in tensors.items() if k not in fixed}
        ordered.update((k, v) for k, v in tensors.items() if k in fixed)
        version = lib.glow_version_string().decode("ascii")
        meta = _modelfile.meta_from_config(self.config, self.initialized, version)
        return _modelfile.write(meta, ordered)

    def to_model(self) -> Model:
        """This model as a :class:`glow.Model` in C (through its file bytes,
        which the library validates)."""
        return Model.from_bytes(self.to_bytes())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a model file that ``glow_model_load`` reads; atomically, by
        the library (``glow_model_save``), after it has validated the bytes."""
        with self.to_model() as model:
            model.save(path)

    # ---- description ----------------------------------------------------------

    @property
    def config(self) -> Config:
        """A copy of the configuration (a :class:`glow.Config`)."""
        return Config(**self._fields)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(height, width, channels)`` of one image."""
        f = self._fields
        return f["height"], f["width"], f["channels"]

    @property
    def dim(self) -> int:
        """D = height * width * channels, the length of a latent row."""
        return math.prod(self.image_shape)

    @property
    def n_classes(self) -> int:
        """Number of classes of a conditional model; 0 if unconditional."""
        return int(self._fields["n_classes"])

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the parameters, and so of images and latents."""
        return self.level[0].step[0].actnorm.bias.dtype

    @property
    def device(self) -> torch.device:
        """The device of the parameters."""
        return self.level[0].step[0].actnorm.bias.device

    def latent_levels(self) -> list[tuple[int, int, int, int]]:
        """``(h, w, c, offset)`` of each level's block of a latent row, as
        ``glow.Model.latent_levels`` (``glow_latent_layout``)."""
        out, offset = [], 0
        for l, (h, w, c) in enumerate(self._shapes):
            zc = c if l == len(self._shapes) - 1 else c // 2
            out.append((h, w, zc, offset))
            offset += h * w * zc
        return out

    def extra_repr(self) -> str:
        f = self._fields
        return (f"{f['height']}x{f['width']}x{f['channels']}, levels={f['levels']}, "
                f"depth={f['depth']}, hidden={f['hidden']}, "
                f"coupling={Coupling(f['coupling']).name.lower()}, "
                f"permutation={Permutation(f['permutation']).name.lower()}, "
                f"n_classes={f['n_classes']}, learn_top={f['learn_top']}, "
                f"initialized={self.initialized}")

    # ---- argument checks ------------------------------------------------------

    def _check(self, t: Any, name: str, shape: tuple[int, ...], what: str) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor ({what}), got {type(t).__name__}")
        if t.dim() != 1 + len(shape) or tuple(t.shape[1:]) != shape or t.shape[0] < 1:
            dims = ", ".join(["n", *map(str, shape)])
            raise ValueError(f"{name} must have shape ({dims}) with n >= 1 ({what}), "
                             f"got {tuple(t.shape)}")
        if t.dtype != self.dtype:
            raise TypeError(f"{name} is {t.dtype} but the model is {self.dtype}: "
                            f"pass {name}.to({self.dtype}) or convert the model")
        return t

    def _images(self, x: Any) -> torch.Tensor:
        return self._check(x, "x", self.image_shape, "NHWC images")

    def _labels(self, labels: Labels, n: int) -> torch.Tensor | None:
        """Labels as a long tensor on the model's device (the checks of
        ``GLOW_ERR_LABEL``, raised as ValueError)."""
        k = self.n_classes
        if labels is None:
            if k > 0:
                raise ValueError(f"the model is conditional on {k} classes and needs labels")
            return None
        if k == 0:
            raise ValueError("labels given to an unconditional model (pass None)")
        t = torch.as_tensor(labels, device=self.device)
        if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
            raise TypeError(f"labels must be integers, got {t.dtype}")
        if tuple(t.shape) != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(t.shape)}")
        if bool(((t < 0) | (t >= k)).any()):
            raise ValueError(f"labels must lie in [0, {k})")
        return t.long()

    # ---- the flow -----------------------------------------------------------------

    def _encode(
        self, x: torch.Tensor, labels: torch.Tensor | None, init: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(eps (n, dim), logdet (n,), the top latent z (n, c, h, w))."""
        z = x.permute(0, 3, 1, 2)
        n = x.shape[0]
        logdet = x.new_zeros(n)
        blocks = []
        for l, level in enumerate(self.level):
            h, w, _ = self._shapes[l]
            z = _squeeze(z)
            pixel = x.new_zeros(())  # log|det| per pixel, the same for every image
            for step in level.step:
                z, step_pixel, coupling_ld = step(z, init)
                pixel = pixel + step_pixel
                if coupling_ld is not None:
                    logdet = logdet + coupling_ld
            logdet = logdet + h * w * pixel
            if hasattr(level, "prior"):
                z, z2 = z.chunk(2, 1)
                mean, logs = level.prior(z).chunk(2, 1)
                blocks.append(_nchw_rows((z2 - mean) * torch.exp(-logs)))
                logdet = logdet - logs.sum((1, 2, 3))
            else:
                mean, logs = self.top(labels)
                e = z if mean is None else z - mean
                if logs is not None:
                    e = e * torch.exp(-logs)
                    logdet = logdet - logs.expand_as(z).sum((1, 2, 3))
                blocks.append(_nchw_rows(e))
        return torch.cat(blocks, 1), logdet, z

    def forward(self, x: torch.Tensor, labels: Labels = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(n, H, W, C)`` to latents (``glow_forward``).  Returns
        ``(eps, logdet)``: ``eps`` ``(n, dim)`` in libglow's latent layout,
        ``logdet`` ``(n,)`` = log|det d eps/dx| in nats."""
        x = self._images(x)
        eps, logdet, _ = self._encode(x, self._labels(labels, x.shape[0]))
        return eps, logdet

    def inverse(self, eps: torch.Tensor, labels: Labels = None) -> torch.Tensor:
        """Latents ``(n, dim)`` back to images ``(n, H, W, C)``
        (``glow_inverse``)."""
        eps = self._check(eps, "eps", (self.dim,), "latents")
        n = eps.shape[0]
        labels = self._labels(labels, n)
        z = None
        for l in reversed(range(len(self.level))):
            level = self.level[l]
            bh, bw, bc, offset = self.latent_levels()[l]
            e = eps[:, offset : offset + bh * bw * bc].reshape(n, bh, bw, bc).permute(0, 3, 1, 2)
            if hasattr(level, "prior"):
                mean, logs = level.prior(z).chunk(2, 1)
                z = torch.cat([z, mean + torch.exp(logs) * e], 1)
            else:
                mean, logs = self.top(labels)
                z = e if logs is None else torch.exp(logs) * e
                z = z if mean is None else mean + z
            for step in reversed(level.step):
                z = step.inverse(z)
            z = _unsqueeze(z)
        return z.permute(0, 2, 3, 1).contiguous()

    def logdet(self, x: torch.Tensor, labels: Labels = None) -> torch.Tensor:
        """log|det d eps/dx| per image, ``(n,)`` (``glow_logdet``)."""
        return self.forward(x, labels)[1]

    def _log_prob(self, eps: torch.Tensor, logdet: torch.Tensor) -> torch.Tensor:
        return -0.5 * eps.square().sum(1) - 0.5 * _LOG_2PI * self.dim + logdet

    def _bits(self, logp: torch.Tensor) -> torch.Tensor:
        d = self.dim
        return (-logp + d * self._fields["n_bits"] * _LN_2) / (d * _LN_2)

    def log_prob(self, x: torch.Tensor, labels: Labels = None) -> torch.Tensor:
        """Log density of each image in nats, ``(n,)``:
        ``sum log N(eps; 0, 1) + logdet`` (``glow_log_prob``)."""
        return self._log_prob(*self.forward(x, labels))

    def bits_per_dim(self, x: torch.Tensor, labels: Labels = None) -> torch.Tensor:
        """Bits per dimension of each image, ``(n,)``, under the discretised
        model of n_bits data: ``(-log p(x) + D n_bits ln 2) / (D ln 2)``
        (``glow_bits_per_dim``)."""
        return self._bits(self.log_prob(x, labels))

    def loss(self, x: torch.Tensor, labels: Labels = None) -> torch.Tensor:
        """The training loss of ``glow_backward``, a scalar: the batch mean
        of bits/dim, plus for a conditional model ``class_weight`` times
        the classifier's mean cross-entropy in bits (the classifier reads
        the top latent before standardisation)."""
        x = self._images(x)
        labels = self._labels(labels, x.shape[0])
        eps, logdet, z = self._encode(x, labels)
        loss = self._bits(self._log_prob(eps, logdet)).mean()
        if self.n_classes > 0:
            ce = F.cross_entropy(self.classifier(z), labels)
            loss = loss + self._fields["class_weight"] * ce / _LN_2
        return loss

    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class prediction of a conditional model (``glow_classify``):
        ``(logits, probs)``, each ``(n, n_classes)``.  No labels needed."""
        if self.n_classes == 0:
            raise ValueError("an unconditional model has no classifier")
        x = self._images(x)
        # The steps do not read labels; only the top prior does, after z.
        z = x.permute(0, 3, 1, 2)
        for level in self.level:
            z = _squeeze(z)
            for step in level.step:
                z = step(z)[0]
            if hasattr(level, "prior"):
                z = z.chunk(2, 1)[0]
        logits = self.classifier(z)
        return logits, torch.softmax(logits, 1)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        labels: Labels = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``n`` images ``(n, H, W, C)`` at ``temperature``: the inverse of
        ``temperature * eps`` with ``eps ~ N(0, I)`` drawn from
        ``generator`` (torch's default generator if None; one on the
        model's device).  As ``glow_sample``, an image whose inverse is not
        finite (far in the tails at high temperature) is redrawn, up to 16
        times.  The noise is torch's, so the images differ from
        ``glow_sample``'s."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        temperature = float(temperature)
        if not (math.isfinite(temperature) and temperature >= 0.0):
            raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
        labels = self._labels(labels, n)

        def draw(count: int) -> torch.Tensor:
            return temperature * torch.randn(count, self.dim, generator=generator,
                                              device=self.device, dtype=self.dtype)

        x = self.inverse(draw(n), labels)
        for _ in range(_SAMPLE_REDRAWS):
            bad = ~torch.isfinite(x.reshape(n, -1)).all(1)
            if not bool(bad.any()):
                return x
            rows = bad.nonzero().flatten()
            x[rows] = self.inverse(draw(len(rows)), None if labels is None else labels[rows])
        if not bool(torch.isfinite(x).all()):
            raise FloatingPointError(
                f"sampling at temperature {temperature}: an image is not finite "
                f"after {_SAMPLE_REDRAWS} draws")
        return x

    @torch.no_grad()
    def data_init(self, x: torch.Tensor, labels: Labels = None) -> None:
        """Data-dependent initialisation (``glow_data_init``): one forward
        pass in which every actnorm (each step's, and the two in each
        coupling network), in data order, first sets ``bias = -mean`` and
        ``logs = log(1 / (std + 1e-6))`` from its own input on this batch.
        Sets :attr:`initialized`.  If the pass is not finite, the
        parameters are restored and FloatingPointError is raised."""
        x = self._images(x)
        labels = self._labels(labels, x.shape[0])
        saved = {k: v.clone() for k, v in self.state_dict().items()}
        eps, logdet, _ = self._encode(x, labels, init=True)
        if not bool(torch.isfinite(eps).all() and torch.isfinite(logdet).all()):
            self.load_state_dict(saved)
            raise FloatingPointError("data_init: the forward pass is not finite")
        self.initialized = True

    # ---- pixels ------------------------------------------------------------------

    def preprocess(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """8-bit NHWC pixels (uint8 tensor) to model input, as
        ``glow_preprocess``: keep the top n_bits, scale to [-0.5, 0.5) and add
        uniform dequantisation noise ``U(0, 2^-n_bits)`` from ``generator``
        (on the model's device and dtype)."""
        if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8:
            raise TypeError("pixels must be a torch.uint8 tensor (n, H, W, C)")
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != self.image_shape:
            raise ValueError(f"pixels must have shape (n, {', '.join(map(str, self.image_shape))})")
        n_bits = self._fields["n_bits"]
        bins = float(1 << n_bits)
        binned = (pixels.to(self.device) >> (8 - n_bits)).to(self.dtype)
        noise = torch.rand(pixels.shape, generator=generator, device=self.device, dtype=self.dtype)
        return (binned + noise) / bins - 0.5

    def postprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Model input or output back to uint8 pixels (``glow_postprocess``):
        the n_bits bin x falls in, clipped, scaled to 0..255; non-finite
        values give 0."""
        n_bits = self._fields["n_bits"]
        bins = 1 << n_bits
        v = (x + 0.5) * bins
        b = torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0).floor().clamp(0, bins - 1)
        return (b.to(torch.int32) << (8 - n_bits)).to(torch.uint8)


def _level_shapes(cfg: Config) -> list[tuple[int, int, int]]:
    """(h, w, c) that each level's steps work on, after its squeeze."""
    shapes, (h, w, c) = [], (cfg.height, cfg.width, cfg.channels)
    for _ in range(cfg.levels):
        h, w, c = h // 2, w // 2, c * 4
        shapes.append((h, w, c))
        c //= 2
    return shapes

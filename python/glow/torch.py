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
from typing import Any

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
from . import _torch_layers as layers
from ._config import Config, Coupling, Permutation
from ._library import lib
from ._model import Model

__all__ = ["Glow"]

_LN_2 = math.log(2.0)
_LOG_2PI = math.log(2.0 * math.pi)
#: glow_sample redraws an image whose inverse is not finite this often.
_SAMPLE_REDRAWS = 16

Labels = Any  # a tensor, array or sequence of n integers, or None


# ---- the model -------------------------------------------------------------


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
        top = cfg.levels - 1
        self.level = nn.ModuleList(
            layers.Level(c, cfg, top=l == top) for l, (_, _, c) in enumerate(self._shapes))
        h, w, c = self._shapes[-1]
        self.top = layers.Top(h, w, c, bool(cfg.learn_top), cfg.n_classes)
        if cfg.n_classes > 0:
            self.classifier = layers.Classifier(c, cfg.n_classes)
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
            z = layers.squeeze(z)
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
                blocks.append(layers.nchw_rows((z2 - mean) * torch.exp(-logs)))
                logdet = logdet - logs.sum((1, 2, 3))
            else:
                mean, logs = self.top(labels)
                e = z if mean is None else z - mean
                if logs is not None:
                    e = e * torch.exp(-logs)
                    logdet = logdet - logs.expand_as(z).sum((1, 2, 3))
                blocks.append(layers.nchw_rows(e))
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
            z = layers.unsqueeze(z)
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
            z = layers.squeeze(z)
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

    def preprocess(
        self, pixels: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """8-bit NHWC pixels (uint8 tensor) to model input, as
        ``glow_preprocess``: keep the top n_bits, scale to [-0.5, 0.5) and add
        uniform dequantisation noise ``U(0, 2^-n_bits)`` from ``generator``
        (on the model's device and dtype)."""
        if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8:
            raise TypeError("pixels must be a torch.uint8 tensor (n, H, W, C)")
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != self.image_shape:
            dims = ", ".join(map(str, self.image_shape))
            raise ValueError(f"pixels must have shape (n, {dims})")
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

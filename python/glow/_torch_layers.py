"""The layers of :class:`glow.torch.Glow`, one ``torch.nn.Module`` each, with
libglow's numerics (docs/architecture.md, lib/*.c).

Every parameter is kept in its model-file shape (docs/format.md), so that
module attribute paths are the file's tensor names: convolution kernels
HWIO (``[ky][kx][in][out]``), 1x1 weights ``[in][out]``, and the interleaved
outputs of the affine coupling's last convolution and of the priors
(shift/raw and mean/logs at channels 2k and 2k+1).  Activations are NCHW
tensors inside the flow (a permuted NHWC batch, so channels-last in memory).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._config import Config, Coupling, Permutation

#: Output scale of the zero-initialised convolutions: exp(3 * logs).
ZCONV_LOGSCALE = 3.0
#: The affine coupling's scale is sigmoid(raw + 2).
COUPLING_SHIFT = 2.0


def _deinterleave(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Channels 0, 2, 4, ... then 1, 3, 5, ... along ``dim``."""
    n = t.shape[dim]
    order = torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2)]).to(t.device)
    return t.index_select(dim, order)


def _kernel(w: torch.Tensor) -> torch.Tensor:
    """A convolution kernel for F.conv2d from a 3x3 HWIO kernel or a 1x1
    ``[in][out]`` weight: OIHW, channels-last in memory like the
    activations (so that oneDNN and cuDNN run their fast NHWC kernels, and
    their outputs stay channels-last)."""
    oihw = w.permute(3, 2, 0, 1) if w.dim() == 4 else w.t()[:, :, None, None]
    return oihw.contiguous(memory_format=torch.channels_last)


def _per_channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) -> (n, 4c, h/2, w/2), output channel 4 c + 2 dy + dx.
    Works on the NHWC view, so that the result is channels-last in memory
    (the format oneDNN's convolutions prefer)."""
    n, c, h, w = x.shape
    y = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
    y = y.permute(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, 4 * c)
    return y.permute(0, 3, 1, 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """The inverse of squeeze, channels-last as well."""
    n, c4, h, w = x.shape
    y = x.permute(0, 2, 3, 1).reshape(n, h, w, c4 // 4, 2, 2)
    y = y.permute(0, 1, 4, 2, 5, 3).reshape(n, 2 * h, 2 * w, c4 // 4)
    return y.permute(0, 3, 1, 2)


def nchw_rows(z: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) -> (n, h*w*c), the block row-major in (h, w, c)."""
    return z.permute(0, 2, 3, 1).reshape(z.shape[0], -1)


class ActNorm(nn.Module):
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


class Conv3x3(nn.Module):
    """3x3 convolution, zero "same" padding, no bias; weight HWIO."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3, 3, cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, _kernel(self.weight), padding=1)


class Conv1x1(nn.Module):
    """1x1 convolution ``y = x W`` per pixel, ``W[in][out]``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, _kernel(self.weight))


class ZeroConv(nn.Module):
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
        y = F.conv2d(x, _kernel(w), padding=1)
        return (y + _per_channel(b)) * _per_channel(torch.exp(ZCONV_LOGSCALE * s))


class InvConv(nn.Module):
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
        return F.conv2d(x, _kernel(w.to(x.dtype))), logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        inv = torch.linalg.inv(self.weight64()[0])
        return F.conv2d(y, _kernel(inv.to(y.dtype)))


class InvConvLU(InvConv):
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
        diagonal = torch.diag(self.sign.to(f64) * torch.exp(log_s))
        upper = torch.triu(self.upper.to(f64), 1) + diagonal
        a = lower @ upper
        w = torch.empty_like(a).index_copy(0, self.perm, a)  # W[perm[i]] = (L U)[i]
        return w, log_s.sum()


class Permute(nn.Module):
    """A fixed channel permutation ``y[j] = x[index[j]]`` (reverse or
    shuffle); log-determinant 0."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.register_buffer("index", torch.arange(c))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x.index_select(1, self.index), None

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.index_select(1, torch.argsort(self.index))


class CouplingLayer(nn.Module):
    """Affine or additive coupling: x1 passes and drives
    ``NN = conv3x3 -> actnorm -> ReLU -> conv1x1 -> actnorm -> ReLU -> zconv``;
    affine ``y2 = (x2 + shift) * sigmoid(raw + 2)``, additive ``y2 = x2 + NN``."""

    def __init__(self, c: int, hidden: int, affine: bool) -> None:
        super().__init__()
        self.conv1 = Conv3x3(c // 2, hidden)
        self.actnorm1 = ActNorm(hidden)
        self.conv2 = Conv1x1(hidden, hidden)
        self.actnorm2 = ActNorm(hidden)
        self.conv3 = ZeroConv(hidden, c if affine else c // 2, interleaved=affine)
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

    def forward(
        self, x: torch.Tensor, init: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x1, x2 = x.chunk(2, 1)
        out = self.network(x1, init)
        if not self.affine:
            return torch.cat([x1, x2 + out], 1), None
        shift, raw = out.chunk(2, 1)
        raw = raw + COUPLING_SHIFT
        y2 = (x2 + shift) * torch.sigmoid(raw)
        return torch.cat([x1, y2], 1), F.logsigmoid(raw).sum((1, 2, 3))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = y.chunk(2, 1)
        out = self.network(y1)
        if not self.affine:
            return torch.cat([y1, y2 - out], 1)
        shift, raw = out.chunk(2, 1)
        return torch.cat([y1, y2 / torch.sigmoid(raw + COUPLING_SHIFT) - shift], 1)


class Step(nn.Module):
    """One flow step: actnorm, channel mixing, coupling."""

    def __init__(self, c: int, hidden: int, coupling: int, permutation: int) -> None:
        super().__init__()
        self.actnorm = ActNorm(c)
        if permutation == Permutation.CONV1X1:
            self.invconv = InvConv(c)
        elif permutation == Permutation.CONV1X1_LU:
            self.invconv = InvConvLU(c)
        else:
            self.permute = Permute(c)
        self.coupling = CouplingLayer(c, hidden, coupling == Coupling.AFFINE)

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


class Level(nn.Module):
    """K steps; then, below the top, the split prior: a zero-initialised
    conv of the kept half gives the factored half's mean and logs."""

    def __init__(self, c: int, cfg: Config, top: bool) -> None:
        super().__init__()
        self.step = nn.ModuleList(
            Step(c, cfg.hidden, cfg.coupling, cfg.permutation) for _ in range(cfg.depth))
        if not top:
            self.prior = ZeroConv(c // 2, c, interleaved=True)


class Top(nn.Module):
    """The top latent's prior: a learned ``(h, w, 2c)`` tensor (``learn_top``)
    plus, for a conditional model, a per-class ``(n_classes, 2c)`` offset;
    means at channels 2k, log-scales at 2k+1."""

    def __init__(self, h: int, w: int, c: int, learn_top: bool, n_classes: int) -> None:
        super().__init__()
        if learn_top:
            self.prior = nn.Parameter(torch.zeros(h, w, 2 * c))
        if n_classes > 0:
            self.class_embed = nn.Parameter(torch.zeros(n_classes, 2 * c))

    def forward(
        self, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
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


class Classifier(nn.Module):
    """``logits = mean_hw(z_top) W + b``, ``W[c][n_classes]``."""

    def __init__(self, c: int, n_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(c, n_classes))
        self.bias = nn.Parameter(torch.zeros(n_classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.mean((2, 3)) @ self.weight + self.bias

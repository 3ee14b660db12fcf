#!/usr/bin/python3
"""torch_glow.py -- a PyTorch implementation of libglow's Glow, for checking
and for timing libglow against PyTorch.  A development tool: neither the
library nor its test suite depends on it (or on PyTorch).

Same architecture and numerics as libglow (docs/architecture.md,
docs/format.md); NHWC images and libglow's latent layout at the interfaces,
NCHW tensors inside (channels_last memory format by default, which oneDNN
convolutions prefer; --memory-format nchw for plain NCHW):

  per level l: squeeze 2x2 (channel c*4 + 2*dy + dx) ->
    K x [actnorm y = (x + b) exp(logs);
         invertible 1x1 conv y = x W, W[in][out] (plain, or LU:
           W = P L (U + diag(sign exp(log_s))), P[perm[j]][j] = 1), or a fixed
           permutation y[j] = x[index[j]];
         coupling: NN(x1) = conv3x3 (no bias, zero 'same' padding) -> actnorm
           -> ReLU -> conv1x1 -> actnorm -> ReLU -> zconv3x3 (with bias, output
           scale exp(3 logs)); affine y2 = (x2 + NN[2k]) sigmoid(NN[2k+1] + 2),
           additive y2 = x2 + NN]
    -> split (l < L-1: zconv3x3 of the kept half gives interleaved mean/logs
       of the factored half) or top prior (learned [h, w, 2c] tensor, plus a
       class embedding row for a conditional model);
  eps = (z - mean) exp(-logs); bits/dim = (-log p(x) + D n_bits ln 2) / (D ln 2);
  loss = mean bits/dim (+ class_weight * CE / ln 2 of the classifier
  mean_hw(z_top) W + b, for a conditional model).

It loads a libglow model file (safetensors, read with json + struct + numpy;
the `safetensors` package is not needed) into tensors named as in the file;
convolution weights become OIHW, and the interleaved outputs of the affine
coupling's last conv and of the priors (shift/raw, mean/logs at channels
2k/2k+1) are de-interleaved at load time, so that torch.chunk splits them
without strided copies (grads_file_layout() maps gradients back).

Usage (with Debian's PyTorch: /usr/bin/python3, package python3-torch):
  torch_glow.py check [--lib build/libglow.so.0]
      Build small models with the libglow Python binding (python/glow) over
      several configurations, perturb their parameters, save them, load them
      here and compare eps, bits/dim, the inverse, the training loss and the
      gradients with libglow's.  Exit status 1 if an error exceeds its
      tolerance.
  torch_glow.py bench MODEL --config NAME --batch N --op OP [--seconds S]
      [--min-calls N] [--threads T] [--memory-format channels_last|nchw]
      [--json]
      Time one op (forward, inverse, sample, train) of the model file MODEL
      (e.g. written by `bench CONFIG --save-model MODEL`) on the same
      synthetic batch as bench/bench.c; print images/s and peak memory.
  torch_glow.py gemm [--threads T] [--size N]
      Single-precision GEMM rate of torch.matmul, GFLOP/s.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np

LOG_2PI = math.log(2.0 * math.pi)
LN_2 = math.log(2.0)

# torch is imported lazily (main()), so that `--help` works without it.
torch = None
F = None


def _import_torch():
    global torch, F
    if torch is None:
        try:
            import torch as _torch
            import torch.nn.functional as _F
        except ImportError:
            sys.exit("torch_glow.py: PyTorch is not installed for %s; install "
                     "Debian's package: apt-get install -y python3-torch, and "
                     "run with /usr/bin/python3" % sys.executable)
        torch, F = _torch, _F
    return torch


# ---- Model files -----------------------------------------------------------

def read_safetensors(path):
    """(metadata dict, {name: float32 numpy array}) of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, t in header.items():
        if t["dtype"] != "F32":
            raise ValueError("%s: dtype %s, expected F32" % (name, t["dtype"]))
        b, e = t["data_offsets"]
        a = np.frombuffer(data, dtype="<f4", count=(e - b) // 4, offset=b)
        tensors[name] = a.reshape(t["shape"]).astype(np.float32)
    return meta, tensors


class Config:
    """The model configuration of a file's glow.config.* metadata."""

    INT_KEYS = ("height", "width", "channels", "levels", "depth", "hidden",
                "n_bits", "n_classes", "learn_top")

    def __init__(self, meta):
        g = {k[len("glow.config."):]: v for k, v in meta.items()
             if k.startswith("glow.config.")}
        for k in self.INT_KEYS:
            setattr(self, k, int(g[k]))
        self.coupling = g["coupling"]          # "affine" | "additive"
        self.permutation = g["permutation"]    # conv1x1 | conv1x1_lu | reverse | shuffle
        self.class_weight = float(g["class_weight"])
        self.dim = self.height * self.width * self.channels

    def level_shape(self, l):
        """(h, w, c) a level works on, after its squeeze."""
        return (self.height >> (l + 1), self.width >> (l + 1),
                self.channels << (l + 2))


# Conversions between a file's layout and the layout used here: convolution
# weights OIHW; and every output that libglow interleaves (the affine
# coupling's shift/raw, the priors' mean/logs) de-interleaved, first half
# shift (mean), second half raw (logs), so that torch.chunk splits it
# without strided copies.
def _deinterleave_index(n):
    return np.concatenate([np.arange(0, n, 2), np.arange(1, n, 2)])


def _interleaved_axis(name, cfg):
    """The axis of a file tensor that interleaves two outputs, or None."""
    if ".prior." in name or (cfg.coupling == "affine" and ".coupling.conv3." in name):
        return 3 if name.endswith(".weight") else 0    # [3,3,I,O] / [O]
    if name == "top.prior":
        return 2                                       # [h, w, 2c]
    if name == "top.class_embed":
        return 1                                       # [n_classes, 2c]
    return None


def _to_torch_layout(name, a, cfg):
    """File tensor -> the tensor this implementation keeps (contiguous)."""
    ax = _interleaved_axis(name, cfg)
    if ax is not None:
        a = a.index_select(ax, torch.from_numpy(_deinterleave_index(a.shape[ax])))
    if name.endswith((".conv1.weight", ".conv3.weight", "prior.weight")):
        a = a.permute(3, 2, 0, 1)                      # [3,3,I,O] -> [O,I,3,3]
    elif name.endswith(".conv2.weight"):
        a = a.t()[:, :, None, None]                    # [I,O] -> [O,I,1,1]
    elif name == "top.prior":
        a = a.permute(2, 0, 1)                         # [h,w,2c] -> [2c,h,w]
    return a.contiguous()


def _to_file_layout(name, a, cfg):
    """Inverse of _to_torch_layout (for comparing gradients)."""
    if name.endswith((".conv1.weight", ".conv3.weight", "prior.weight")):
        a = a.permute(2, 3, 1, 0)
    elif name.endswith(".conv2.weight"):
        a = a[:, :, 0, 0].t()
    elif name == "top.prior":
        a = a.permute(1, 2, 0)
    ax = _interleaved_axis(name, cfg)
    if ax is not None:
        inv = np.argsort(_deinterleave_index(a.shape[ax]))
        a = a.index_select(ax, torch.from_numpy(inv))
    return a.contiguous()


# ---- The model -------------------------------------------------------------

class TorchGlow:
    """libglow's model in PyTorch.  `params` maps libglow's tensor names to
    leaf tensors (requires_grad) in this implementation's layout;
    `buffers` holds the fixed permutations and signs."""

    def __init__(self, path, dtype=None, channels_last=True):
        """channels_last: keep activations and 3x3/1x1 conv weights in
        torch.channels_last (NHWC) memory format, which oneDNN prefers;
        otherwise plain NCHW."""
        _import_torch()
        self.dtype = dtype or torch.float32
        self.channels_last = channels_last
        mf = torch.channels_last if channels_last else torch.contiguous_format
        meta, tensors = read_safetensors(path)
        self.cfg = Config(meta)
        self.params, self.buffers = {}, {}
        for name, a in tensors.items():
            t = torch.from_numpy(a)
            if name.endswith((".permute.index", ".invconv.perm")):
                self.buffers[name] = t.to(torch.int64)
            elif name.endswith(".invconv.sign"):
                self.buffers[name] = t.to(torch.float64)
            else:
                p = _to_torch_layout(name, t, self.cfg).to(self.dtype)
                if p.dim() == 4 and name.endswith(".weight"):
                    p = p.contiguous(memory_format=mf)
                self.params[name] = p.requires_grad_(True)
        c = self.cfg
        self._masks = {}
        for l in range(c.levels):
            ch = c.level_shape(l)[2]
            self._masks[ch] = (torch.tril(torch.ones(ch, ch, dtype=torch.float64), -1),
                               torch.triu(torch.ones(ch, ch, dtype=torch.float64), 1),
                               torch.eye(ch, dtype=torch.float64))

    # -- layers ---------------------------------------------------------------
    def p(self, name):
        return self.params[name]

    def squeeze(self, x):
        """(n, c, h, w) -> (n, 4c, h/2, w/2), channel c*4 + 2*dy + dx."""
        n, c, h, w = x.shape
        if self.channels_last:                         # work on the NHWC view
            y = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
            y = y.permute(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, 4 * c)
            return y.permute(0, 3, 1, 2)
        x = x.reshape(n, c, h // 2, 2, w // 2, 2)
        return x.permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)

    def unsqueeze(self, x):
        n, c4, h, w = x.shape
        c = c4 // 4
        if self.channels_last:
            y = x.permute(0, 2, 3, 1).reshape(n, h, w, c, 2, 2)
            y = y.permute(0, 1, 4, 2, 5, 3).reshape(n, 2 * h, 2 * w, c)
            return y.permute(0, 3, 1, 2)
        x = x.reshape(n, c, 2, 2, h, w)
        return x.permute(0, 1, 4, 2, 5, 3).reshape(n, c, 2 * h, 2 * w)

    def actnorm(self, pre, x):
        b, s = self.p(pre + ".bias"), self.p(pre + ".logs")
        return (x + b.view(1, -1, 1, 1)) * torch.exp(s).view(1, -1, 1, 1)

    def actnorm_inverse(self, pre, x):
        b, s = self.p(pre + ".bias"), self.p(pre + ".logs")
        return x * torch.exp(-s).view(1, -1, 1, 1) - b.view(1, -1, 1, 1)

    def weight(self, pre, c):
        """The 1x1 weight W [in][out] in double, and log|det W| (double)."""
        if self.cfg.permutation == "conv1x1":
            w = self.p(pre + ".weight").double()
            return w, torch.linalg.slogdet(w)[1]
        lower, upper, eye = self._masks[c]
        log_s = self.p(pre + ".log_s").double()
        L = self.p(pre + ".lower").double() * lower + eye
        U = (self.p(pre + ".upper").double() * upper
             + torch.diag(self.buffers[pre + ".sign"] * torch.exp(log_s)))
        perm = self.buffers[pre + ".perm"]
        P = torch.zeros(c, c, dtype=torch.float64)
        P[perm, torch.arange(c)] = 1.0
        return P @ L @ U, log_s.sum()

    def permute(self, pre, x, inverse=False):
        """Returns (y, log|det| per pixel (a double scalar) or None)."""
        c = x.shape[1]
        if self.cfg.permutation in ("reverse", "shuffle"):
            idx = self.buffers[pre.replace(".invconv", ".permute") + ".index"]
            if inverse:
                idx = torch.argsort(idx)
            return x[:, idx], None
        w, logdet = self.weight(pre, c)
        if inverse:
            w = torch.linalg.inv(w)
        k = w.to(x.dtype).t().reshape(c, c, 1, 1)      # y = x W: out x in
        if self.channels_last:
            k = k.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, k), logdet

    def zconv(self, pre, x):
        y = F.conv2d(x, self.p(pre + ".weight"), padding=1)
        return ((y + self.p(pre + ".bias").view(1, -1, 1, 1))
                * torch.exp(3.0 * self.p(pre + ".logs")).view(1, -1, 1, 1))

    def network(self, pre, x1):
        h = F.conv2d(x1, self.p(pre + ".conv1.weight"), padding=1)
        h = F.relu(self.actnorm(pre + ".actnorm1", h), inplace=True)
        h = F.conv2d(h, self.p(pre + ".conv2.weight"))
        h = F.relu(self.actnorm(pre + ".actnorm2", h), inplace=True)
        return self.zconv(pre + ".conv3", h)

    def coupling(self, pre, x, inverse=False):
        """Returns (y, per-image logdet or None)."""
        x1, x2 = x.chunk(2, 1)
        nn = self.network(pre, x1)
        if self.cfg.coupling == "additive":
            y2 = x2 - nn if inverse else x2 + nn
            return torch.cat([x1, y2], 1), None
        shift, raw = nn.chunk(2, 1)                    # de-interleaved at load
        raw = raw + 2.0
        s = torch.sigmoid(raw)
        if inverse:
            return torch.cat([x1, x2 / s - shift], 1), None
        y2 = (x2 + shift) * s
        return torch.cat([x1, y2], 1), F.logsigmoid(raw).sum((1, 2, 3))

    # -- the flow -------------------------------------------------------------
    def top_prior(self, labels, n):
        c = self.cfg
        h, w, ch = c.level_shape(c.levels - 1)
        mean = torch.zeros(1, ch, h, w, dtype=self.dtype)
        logs = torch.zeros(1, ch, h, w, dtype=self.dtype)
        if c.learn_top:
            mean, logs = self.p("top.prior")[None].chunk(2, 1)
        if c.n_classes > 0:
            em, el = self.p("top.class_embed")[labels].chunk(2, 1)   # (n, c) each
            mean = mean + em[:, :, None, None]
            logs = logs + el[:, :, None, None]
        return mean, logs

    def forward(self, x, labels=None):
        """x: (n, H, W, C) NHWC.  Returns (eps (n, D) in libglow's latent
        layout, logdet (n,) double, top latent z (n, c, h, w))."""
        c = self.cfg
        n = x.shape[0]
        z = x.permute(0, 3, 1, 2)
        ld = torch.zeros(n, dtype=torch.float64)
        shared = torch.zeros((), dtype=torch.float64)   # equal for every image
        blocks = []
        for l in range(c.levels):
            h, w, ch = c.level_shape(l)
            z = self.squeeze(z)
            for k in range(c.depth):
                pre = "level.%d.step.%d" % (l, k)
                z = self.actnorm(pre + ".actnorm", z)
                shared = shared + h * w * self.p(pre + ".actnorm.logs").double().sum()
                z, pld = self.permute(pre + ".invconv", z)
                if pld is not None:
                    shared = shared + h * w * pld
                z, cld = self.coupling(pre + ".coupling", z)
                if cld is not None:
                    ld = ld + cld.double()
            if l < c.levels - 1:
                z1, z2 = z.chunk(2, 1)
                mean, logs = self.zconv("level.%d.prior" % l, z1).chunk(2, 1)
                blocks.append(((z2 - mean) * torch.exp(-logs)).permute(0, 2, 3, 1).reshape(n, -1))
                ld = ld - logs.sum((1, 2, 3)).double()
                z = z1
            else:
                mean, logs = self.top_prior(labels, n)
                blocks.append(((z - mean) * torch.exp(-logs)).permute(0, 2, 3, 1).reshape(n, -1))
                ld = ld - logs.expand_as(z).sum((1, 2, 3)).double()
        return torch.cat(blocks, 1), ld + shared, z

    def inverse(self, eps, labels=None, temperature=1.0):
        """eps: (n, D) -> images (n, H, W, C)."""
        c = self.cfg
        n = eps.shape[0]
        offs, off = [], 0
        for l in range(c.levels):
            h, w, ch = c.level_shape(l)
            zc = ch if l == c.levels - 1 else ch // 2
            offs.append((off, h, w, zc))
            off += h * w * zc
        z = None
        for l in range(c.levels - 1, -1, -1):
            off, h, w, zc = offs[l]
            e = eps[:, off:off + h * w * zc].reshape(n, h, w, zc).permute(0, 3, 1, 2)
            if temperature != 1.0:
                e = e * temperature
            if l == c.levels - 1:
                mean, logs = self.top_prior(labels, n)
                z = mean + torch.exp(logs) * e
            else:
                mean, logs = self.zconv("level.%d.prior" % l, z).chunk(2, 1)
                z = torch.cat([z, mean + torch.exp(logs) * e], 1)
            for k in range(c.depth - 1, -1, -1):
                pre = "level.%d.step.%d" % (l, k)
                z, _ = self.coupling(pre + ".coupling", z, inverse=True)
                z, _ = self.permute(pre + ".invconv", z, inverse=True)
                z = self.actnorm_inverse(pre + ".actnorm", z)
            z = self.unsqueeze(z)
        return z.permute(0, 2, 3, 1).contiguous()

    def sample(self, n, temperature=0.7, labels=None, generator=None):
        eps = torch.randn(n, self.cfg.dim, dtype=self.dtype, generator=generator)
        return self.inverse(eps, labels, temperature)

    def bits_per_dim(self, x, labels=None):
        eps, ld, z = self.forward(x, labels)
        return self._bpd(eps, ld), eps, z

    def _bpd(self, eps, ld):
        D = self.cfg.dim
        logp = -0.5 * (eps.double() ** 2).sum(1) - 0.5 * LOG_2PI * D + ld
        return (-logp + D * self.cfg.n_bits * LN_2) / (D * LN_2)

    def loss(self, x, labels=None):
        """libglow's training loss (glow_backward): mean bits/dim, plus
        class_weight * mean cross-entropy / ln 2 for a conditional model."""
        eps, ld, z = self.forward(x, labels)
        loss = self._bpd(eps, ld).mean()
        if self.cfg.n_classes > 0:
            logits = z.mean((2, 3)) @ self.p("classifier.weight") + self.p("classifier.bias")
            ce = F.cross_entropy(logits.double(), labels)
            loss = loss + self.cfg.class_weight * ce / LN_2
        return loss

    def zero_grad(self):
        for p in self.params.values():
            p.grad = None

    def grads_file_layout(self):
        return {k: _to_file_layout(k, p.grad, self.cfg).numpy() if p.grad is not None
                else np.zeros(tuple(_to_file_layout(k, p.detach(), self.cfg).shape),
                              np.float32)
                for k, p in self.params.items()}


# ---- check ---------------------------------------------------------------------

CHECK_CONFIGS = [
    # name, fields of glow.Config, batch
    ("affine conv1x1 L=1", dict(height=8, width=8, channels=1, levels=1, depth=3,
                                hidden=16, coupling=0, permutation=0), 4),
    ("affine conv1x1_lu L=2", dict(height=16, width=16, channels=3, levels=2, depth=3,
                                   hidden=16, coupling=0, permutation=1), 4),
    ("additive conv1x1 L=3", dict(height=16, width=16, channels=3, levels=3, depth=2,
                                  hidden=24, coupling=1, permutation=0), 4),
    ("additive conv1x1_lu L=2", dict(height=8, width=16, channels=2, levels=2, depth=2,
                                     hidden=16, coupling=1, permutation=1), 4),
    ("affine conv1x1 L=2 conditional", dict(height=16, width=16, channels=3, levels=2,
                                            depth=2, hidden=16, coupling=0, permutation=0,
                                            n_classes=5, class_weight=0.5), 6),
    ("affine conv1x1_lu L=3 conditional", dict(height=16, width=16, channels=1, levels=3,
                                               depth=2, hidden=8, coupling=0, permutation=1,
                                               n_classes=3, class_weight=0.01), 6),
    ("additive conv1x1 L=2 conditional no learn_top", dict(
        height=8, width=8, channels=3, levels=2, depth=2, hidden=8, coupling=1,
        permutation=0, n_classes=4, learn_top=0, class_weight=1.0), 4),
    ("affine reverse L=2", dict(height=8, width=8, channels=3, levels=2, depth=2,
                                hidden=16, coupling=0, permutation=2), 4),
    ("affine shuffle L=2 n_bits=5", dict(height=8, width=8, channels=3, levels=2, depth=2,
                                         hidden=16, coupling=0, permutation=3, n_bits=5), 4),
    ("fashion shape (28x28x1 L=2 K=8 hidden 128)", dict(
        height=28, width=28, channels=1, levels=2, depth=8, hidden=128), 4),
]

TOL = {"eps": 1e-4, "bpd": 1e-4, "inverse": 1e-4, "loss": 1e-4, "grad": 1e-3,
       "grad-rc": 1e-3, "grad-rc-relu": 5e-2}

# Recompute mode rebuilds each step's input through the step inverses, so
# its network activations differ from the forward's by rounding, and a
# pre-activation within rounding of zero can land on the other side of the
# coupling network's first ReLU.  That switches its gradient on or off:
# the tensors before that ReLU (conv1, actnorm1) then differ by one term of
# their sum, which on the 28x28 K=8 model was up to 1.4e-2 of the largest.
# They are held to "grad-rc-relu"; every other tensor to "grad-rc".


def _before_first_relu(name):
    return ".coupling.conv1." in name or ".coupling.actnorm1." in name


def _import_glow(lib):
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    sys.path.insert(0, os.path.join(root, "python"))
    if lib:
        os.environ["GLOW_LIBRARY"] = os.path.abspath(lib)
    elif "GLOW_LIBRARY" not in os.environ:
        for d in ("build-bench", "build"):
            cand = os.path.join(root, d, "libglow.so.0")
            if os.path.exists(cand):
                os.environ["GLOW_LIBRARY"] = cand
                break
    import glow
    return glow


def check(args):
    _import_torch()
    torch.set_num_threads(args.threads)
    glow = _import_glow(args.lib)
    import tempfile
    print("libglow %s (%s) against PyTorch %s: max abs errors "
          "(grad: max |diff| / max |grad| over each tensor, worst tensor)"
          % (glow.version(), glow.library_path, torch.__version__))
    print("tolerances: %s" % ", ".join("%s %.0e" % kv for kv in TOL.items()))
    hdr = "%-62s %9s %9s %9s %9s %9s %9s %9s" % (
        "config", "eps", "bits/dim", "inverse", "loss", "grad", "grad-rc",
        "rc-relu")
    print(hdr)
    failed = 0
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, fields, n) in enumerate(CHECK_CONFIGS):
            if args.quick and i == len(CHECK_CONFIGS) - 1:
                continue
            fields = dict(fields, seed=11 + i)
            model = glow.Model(**fields)
            H, W, C = model.image_shape
            pixels = rng.integers(0, 256, size=(max(n, 16), H, W, C), dtype=np.uint8)
            xi = model.preprocess(pixels, seed=3)
            ncls = fields.get("n_classes", 0)
            init_labels = rng.integers(0, ncls, size=len(xi)) if ncls else None
            model.data_init(xi, init_labels)
            # Perturb every parameter, so that the zero-initialised convs and
            # priors and the class tables take part.
            # Weight matrices get less noise the more inputs they have, and
            # deep models less than shallow ones (std perturb *
            # min(1, 8 / sqrt(fan_in)) * min(1, 3 / depth)), so that every
            # model stays well-conditioned (its inverse accurate to float
            # rounding; at 0.05 unscaled, K = 8 at hidden 128 is not).
            depth_scale = min(1.0, 3.0 / fields["depth"])
            for t in model.tensors():
                v = model.param(t.name)
                fan_in = int(np.prod(t.shape[:-1])) if (
                    len(t.shape) >= 2 and t.name.endswith(".weight")) else 1
                std = args.perturb * min(1.0, 8.0 / math.sqrt(fan_in)) * depth_scale
                v += (std * rng.standard_normal(v.shape)).astype(np.float32)
            x = np.ascontiguousarray(xi[:n])
            labels = init_labels[:n].astype(np.int32) if ncls else None
            eps_g, ld_g = model.forward(x, labels)
            bpd_g = model.bits_per_dim(x, labels)
            back_g = model.inverse(eps_g, labels)
            # Gradients in store mode: the forward's own activations.
            # (Recompute mode rebuilds them through the inverse, which adds
            # the model's round-trip error; compared as "grad-rc".)
            grads_g = {}
            for mode in (glow.BackwardMode.STORE, glow.BackwardMode.RECOMPUTE):
                model.set_option(glow.Option.BACKWARD_MODE, mode)
                model.zero_grad()
                loss_g = model.backward(x, labels)
                grads_g[mode] = {t.name: np.array(model.grad(t.name))
                                 for t in model.tensors()}
            path = os.path.join(tmp, "m%d.safetensors" % i)
            model.save(path)

            xt = torch.from_numpy(x)
            lt = torch.from_numpy(labels.astype(np.int64)) if ncls else None
            roundtrip = float(np.abs(back_g - x).max())
            for fmt in ("channels_last", "nchw"):
                tg = TorchGlow(path, channels_last=fmt == "channels_last")
                with torch.no_grad():
                    bpd_t, eps_t, _ = tg.bits_per_dim(xt, lt)
                    back = tg.inverse(torch.from_numpy(eps_g), lt)
                loss_t = tg.loss(xt, lt)
                loss_t.backward()
                grads_t = tg.grads_file_layout()
                err = {
                    "eps": float(np.abs(eps_t.numpy() - eps_g).max()),
                    "bpd": float(np.abs(bpd_t.numpy() - bpd_g).max()),
                    "inverse": float(np.abs(back.numpy() - back_g).max()),
                    "loss": abs(float(loss_t) - loss_g),
                }
                worst = {}
                for key, mode in (("grad", glow.BackwardMode.STORE),
                                  ("grad-rc", glow.BackwardMode.RECOMPUTE)):
                    for k, g in grads_g[mode].items():
                        scale = max(float(np.abs(g).max()), 1e-12)
                        e = float(np.abs(grads_t[k] - g).max()) / scale
                        col = key + ("-relu" if key == "grad-rc" and
                                     _before_first_relu(k) else "")
                        if e >= err.get(col, 0.0):
                            err[col], worst[col] = e, k
                bad = [k for k, v in err.items() if not v <= TOL[k]]
                failed += bool(bad)
                print("%-62s %9.2e %9.2e %9.2e %9.2e %9.2e %9.2e %9.2e  %s" % (
                    "%s [%s]" % (name, fmt), err["eps"], err["bpd"], err["inverse"],
                    err["loss"], err["grad"], err["grad-rc"], err["grad-rc-relu"],
                    ("FAIL: " + ", ".join(bad)) if bad else "ok"))
                if args.verbose:
                    print("    bits/dim libglow %s torch %s; libglow round trip %.1e; "
                          "worst grad tensor %s (store), %s (recompute)"
                          % (np.round(bpd_g[:3], 5), np.round(bpd_t.numpy()[:3], 5),
                             roundtrip, worst.get("grad"), worst.get("grad-rc")))
            model.close()
    print("check: %s" % ("FAILED (%d config/layout pairs)" % failed if failed
                         else "all configs agree, in both memory formats"))
    return 1 if failed else 0


# ---- timing --------------------------------------------------------------------

def _proc_status_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                        # VmHWM := current VmRSS
    except OSError:
        pass


def synthetic_batch(cfg, n):
    """bench.c's synthetic images, dequantized with torch's generator (the
    values only need to be plausible images, not libglow's exact ones)."""
    d = cfg.dim
    i = np.arange(n * d, dtype=np.float64)
    px = (128 + 100 * np.sin(0.05 * i)).astype(np.uint8).astype(np.float32)
    bins = float(1 << cfg.n_bits)
    if cfg.n_bits < 8:
        px = np.floor(px / (1 << (8 - cfg.n_bits)))
    u = np.random.default_rng(1).random(n * d, dtype=np.float32)
    x = (px + u) / bins - 0.5
    return torch.from_numpy(x.reshape(n, cfg.height, cfg.width, cfg.channels).astype(np.float32))


def bench(args):
    _import_torch()
    torch.set_num_threads(args.threads)
    torch.backends.mkldnn.enabled = True
    tg = TorchGlow(args.model, channels_last=args.memory_format == "channels_last")
    cfg = tg.cfg
    n = args.batch
    x = synthetic_batch(cfg, n)
    labels = (torch.arange(n) % cfg.n_classes) if cfg.n_classes > 0 else None
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        eps0, _, _ = tg.forward(x, labels)

    def op_forward():
        with torch.inference_mode():
            tg.forward(x, labels)

    def op_inverse():
        with torch.inference_mode():
            tg.inverse(eps0, labels)

    def op_sample():
        with torch.inference_mode():
            tg.sample(n, 0.7, labels, gen)

    def op_train():
        tg.zero_grad()
        loss = tg.loss(x, labels)
        loss.backward()

    fn = {"forward": op_forward, "inverse": op_inverse, "sample": op_sample,
          "train": op_train}[args.op]
    setup = _proc_status_mib("VmRSS")
    total0 = _proc_status_mib("VmHWM")
    _reset_peak()
    fn()                                      # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < 256 and (len(times) < args.min_calls
                                or time.perf_counter() - start < args.seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    peak = _proc_status_mib("VmHWM")
    rec = {"impl": "torch", "version": torch.__version__, "config": args.config,
           "op": args.op, "batch": n, "median_s": med, "images_per_s": n / med,
           "calls": len(times), "threads": torch.get_num_threads(),
           "memory_format": args.memory_format,
           "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
           "setup_rss_mib": round(setup, 1), "peak_rss_mib": round(peak, 1),
           "peak_rss_total_mib": round(max(peak, total0), 1)}
    if args.json:
        print(json.dumps(rec))
    else:
        print("%s %s: %.1f images/s (%.1f ms per batch), peak RSS %.1f MiB"
              % (args.config, args.op, n / med, 1e3 * med, peak))
    return 0


def gemm(args):
    _import_torch()
    torch.set_num_threads(args.threads)
    m = args.size
    a = torch.randn(m, m)
    b = torch.randn(m, m)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(args.reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    g = 2.0 * m ** 3 / best / 1e9
    if args.json:
        print(json.dumps({"impl": "torch.matmul", "size": m, "threads": args.threads,
                          "gflops": g}))
    else:
        print("torch.matmul %dx%d, %d threads: %.1f GFLOP/s" % (m, m, args.threads, g))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare with libglow on small models")
    c.add_argument("--lib", help="libglow.so.0 to test (default: build-bench/ or build/)")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--perturb", type=float, default=0.05,
                   help="std of the noise added to every parameter")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--quick", action="store_true", help="skip the fashion-sized config")
    c.add_argument("-v", "--verbose", action="store_true")
    b = sub.add_parser("bench", help="time one op of a model file")
    b.add_argument("model")
    b.add_argument("--config", default="?", help="a name for the output")
    b.add_argument("--batch", type=int, required=True)
    b.add_argument("--op", choices=("forward", "inverse", "sample", "train"), required=True)
    b.add_argument("--seconds", type=float, default=3.0)
    b.add_argument("--min-calls", type=int, default=3)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--memory-format", choices=("channels_last", "nchw"),
                   default="channels_last")
    b.add_argument("--json", action="store_true")
    g = sub.add_parser("gemm", help="torch.matmul GFLOP/s")
    g.add_argument("--threads", type=int, default=2)
    g.add_argument("--size", type=int, default=2048)
    g.add_argument("--reps", type=int, default=5)
    g.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    return {"check": check, "bench": bench, "gemm": gemm}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())

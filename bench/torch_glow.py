#!/usr/bin/python3
"""torch_glow.py -- a PyTorch implementation of libglow's Glow, for checking
and for timing libglow against PyTorch.  A development tool: neither the
library nor its test suite depends on it (or on PyTorch).

Same architecture and numerics as libglow (docs/architecture.md,
docs/format.md); NHWC images and libglow's latent layout at the interfaces,
NCHW tensors inside (channels_last memory format by default, which oneDNN
convolutions prefer; plain NCHW in the -nchw variants):

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
  torch_glow.py check [--lib build/libglow.so.0] [--variants LIST|SET|none]
      Build small models with the libglow Python binding (python/glow) over
      several configurations, perturb their parameters, save them, load them
      here and compare eps, bits/dim, the inverse, the training loss and the
      gradients with libglow's; then hold every op's outputs and gradients
      of each variant (default: the kept ones) to eager-cl's.  Exit
      status 1 if an error exceeds its tolerance.
  torch_glow.py bench MODEL --config NAME --batch N --op OP [--variant V]
      [--seconds S] [--min-calls N] [--warmup N] [--threads T] [--json]
      Time one op (forward, inverse, sample, train) of the model file MODEL
      (e.g. written by `bench CONFIG --save-model MODEL`) on the same
      synthetic batch as bench/bench.c, run the variant's way (default
      eager-cl; see "Variants" below); print images/s and peak memory.
  torch_glow.py tune MODEL --config NAME --batch N --op OP
      [--variants LIST|default|latency|all] [--rounds R] [--seconds S] [--quiet]
      [--max-foreign CORES]
      Time every variant of an op, each measurement a `bench` process, in
      interleaved rounds (A, B, C, A, B, C, ...); print JSON with every
      variant's median images/s over the rounds and the fastest.  --quiet
      waits for an idle machine before each measurement; --max-foreign
      repeats a measurement during which other processes were busy.
  torch_glow.py variants [default|latency|kept|all]
      List a set of variants: default (what bench/compare and tune time),
      latency (for batch 1), kept (both; what check checks) or all.
  torch_glow.py gemm [--threads T] [--size N]
      Single-precision GEMM rate of torch.matmul, GFLOP/s.

Variants (how PyTorch runs an op; the comment above VARIANT_TOKENS has the
details): eager or jit (torch.jit.trace at the fixed batch, frozen for
inference; jitopt adds torch.jit.optimize_for_inference), channels_last
(cl) or NCHW memory format, and optional tokens
nomkldnn, nograd, t1 (one thread), glibc / jemalloc / tcmalloc (allocator);
e.g. eager-cl, jit-nchw, eager-cl-jemalloc.  Every variant but glibc's
runs glibc malloc with M_MMAP_THRESHOLD 32 MiB and M_TRIM_THRESHOLD 1 GiB:
with glibc's defaults each call's activations are unmapped when freed and
page-faulted in again on the next call, which made PyTorch several times
slower on this machine.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import struct
import subprocess
import sys
import time

try:
    import numpy as np
except ImportError:     # bench/compare imports this module for its variants only
    np = None

OPS = ("forward", "inverse", "sample", "train")
LOG_2PI = math.log(2.0 * math.pi)
LN_2 = math.log(2.0)

# torch is imported lazily (main()), so that `--help` works without it.
torch = None
F = None


def _import_torch():
    global torch, F
    if np is None:
        sys.exit("torch_glow.py: numpy is not installed for %s; run with "
                 "/usr/bin/python3 (Debian's python3-torch brings python3-numpy)"
                 % sys.executable)
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
    `buffers` holds the fixed permutations and signs.

    With autograd off (torch.no_grad / torch.inference_mode) the layers
    work in place on the activations they produced themselves (never on a
    caller's tensor), which saves an allocation and a pass over memory per
    element-wise op; with autograd on they are out of place where autograd
    needs it.  Either way they compute the same function with the same
    parameters: the coupling networks' actnorm biases are passed as the
    bias of the convolution before them (conv(x) + b, added by the
    convolution), and the ReLU is applied before the actnorm's scale
    exp(logs) (relu(y) exp(logs) == relu(y exp(logs)) exactly, exp(logs) >
    0); exp(logs), the 1x1 weights, their log-determinants and inverses are
    computed once per call, for all steps of a level together."""

    def __init__(self, path, dtype=None, channels_last=True):
        """channels_last: keep activations and 3x3/1x1 conv weights in
        torch.channels_last (NHWC) memory format, which oneDNN prefers;
        otherwise plain NCHW."""
        _import_torch()
        self.dtype = dtype or torch.float32
        self.channels_last = channels_last
        self.inplace = True
        # (level, inverse) -> level_weights(), computed once ahead of the
        # calls (by a traced module that holds them as constants)
        self.fixed_weights = {}
        mf = torch.channels_last if channels_last else torch.contiguous_format
        meta, tensors = read_safetensors(path)
        self.cfg = Config(meta)
        self.params, self.buffers = {}, {}
        for name, a in tensors.items():
            t = torch.from_numpy(a)
            if name.endswith(".permute.index"):
                self.buffers[name] = t.to(torch.int64)
                self.buffers[name + ".inverse"] = torch.argsort(t.to(torch.int64))
            elif name.endswith(".invconv.perm"):
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
        self._rows = {}
        for l in range(c.levels):
            ch = c.level_shape(l)[2]
            self._masks[ch] = (torch.tril(torch.ones(ch, ch, dtype=torch.float64), -1),
                               torch.triu(torch.ones(ch, ch, dtype=torch.float64), 1),
                               torch.eye(ch, dtype=torch.float64))
            if c.permutation == "conv1x1_lu":
                # W = P L U with P[perm[j]][j] = 1: row i of W is row
                # argsort(perm)[i] of L U (a row permutation, exact).
                rows = torch.stack([torch.argsort(self.buffers[self._step(l, k)
                                                               + ".invconv.perm"])
                                    for k in range(c.depth)])
                self._rows[l] = rows[:, :, None].expand(c.depth, ch, ch).contiguous()

    # -- layers ---------------------------------------------------------------
    def p(self, name):
        return self.params[name]

    @staticmethod
    def _step(l, k):
        return "level.%d.step.%d" % (l, k)

    def _inplace(self):
        """Whether the layers may overwrite the activations they made."""
        return self.inplace and not torch.is_grad_enabled()

    def _channel(self, v):
        return v.view(1, -1, 1, 1)

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
        """y = (x + b) exp(logs); x is not overwritten."""
        b, s = self.p(pre + ".bias"), self.p(pre + ".logs")
        y = x + self._channel(b)
        e = self._channel(torch.exp(s))
        return y.mul_(e) if self._inplace() else y * e

    def actnorm_inverse(self, pre, x):
        """x exp(-logs) - b; overwrites x when autograd is off."""
        b, s = self.p(pre + ".bias"), self.p(pre + ".logs")
        e, b = self._channel(torch.exp(-s)), self._channel(b)
        if self._inplace():
            return x.mul_(e).sub_(b)
        return x * e - b

    def level_weights(self, l, inverse=False):
        """The invertible 1x1 convs of level l's steps, computed together:
        (a list of conv kernels (c, c, 1, 1) for y = x W, or for x = y W^-1
        if inverse; the sum over the steps of log|det W| (double) or None for
        a fixed permutation).  W is formed, inverted and its determinant
        taken in double, as before."""
        cfg = self.cfg
        if cfg.permutation in ("reverse", "shuffle"):
            return None, None
        if (l, inverse) in self.fixed_weights:
            return self.fixed_weights[(l, inverse)]
        c = cfg.level_shape(l)[2]
        pres = [self._step(l, k) + ".invconv" for k in range(cfg.depth)]
        if cfg.permutation == "conv1x1":
            w = torch.stack([self.p(p + ".weight") for p in pres]).double()
            logdet = torch.linalg.slogdet(w)[1].sum()
        else:
            lower, upper, eye = self._masks[c]
            log_s = torch.stack([self.p(p + ".log_s") for p in pres]).double()
            sign = torch.stack([self.buffers[p + ".sign"] for p in pres])
            L = torch.stack([self.p(p + ".lower") for p in pres]).double() * lower + eye
            U = (torch.stack([self.p(p + ".upper") for p in pres]).double() * upper
                 + torch.diag_embed(sign * torch.exp(log_s)))
            w = torch.gather(L @ U, 1, self._rows[l])
            logdet = log_s.sum()
        if inverse:
            w = torch.linalg.inv(w)
        mf = torch.channels_last if self.channels_last else torch.contiguous_format
        k = w.to(self.dtype).transpose(1, 2)           # y = x W: out x in
        return [kk.reshape(c, c, 1, 1).contiguous(memory_format=mf)
                for kk in k.unbind(0)], logdet

    def permute(self, pre, x, kernel, inverse=False):
        """y = x W (kernel from level_weights) or the fixed permutation."""
        if kernel is None:
            idx = self.buffers[pre.replace(".invconv", ".permute") + ".index"
                               + (".inverse" if inverse else "")]
            return x[:, idx]
        return F.conv2d(x, kernel)

    def zconv(self, pre, x):
        """(conv3x3(x) + b) exp(3 logs), the bias added by the convolution."""
        y = F.conv2d(x, self.p(pre + ".weight"), self.p(pre + ".bias"), padding=1)
        e = self._channel(torch.exp(3.0 * self.p(pre + ".logs")))
        return y.mul_(e) if self._inplace() else y * e

    def _conv_actnorm_relu(self, x, wname, pre, padding):
        """relu(conv(x) + b) exp(logs) == relu((conv(x) + b) exp(logs))."""
        h = F.conv2d(x, self.p(wname), self.p(pre + ".bias"), padding=padding)
        h = F.relu(h, inplace=True)
        e = self._channel(torch.exp(self.p(pre + ".logs")))
        return h.mul_(e) if self._inplace() else h * e

    def network(self, pre, x1):
        h = self._conv_actnorm_relu(x1, pre + ".conv1.weight", pre + ".actnorm1", 1)
        h = self._conv_actnorm_relu(h, pre + ".conv2.weight", pre + ".actnorm2", 0)
        return self.zconv(pre + ".conv3", h)

    def coupling(self, pre, x, inverse=False):
        """Returns (y, per-image logdet or None).  With autograd off, y is x
        overwritten."""
        x1, x2 = x.chunk(2, 1)
        nn = self.network(pre, x1)
        inplace = self._inplace()
        if self.cfg.coupling == "additive":
            if inplace:
                (x2.sub_ if inverse else x2.add_)(nn)
                return x, None
            y2 = x2 - nn if inverse else x2 + nn
            return torch.cat([x1, y2], 1), None
        shift, raw = nn.chunk(2, 1)                    # de-interleaved at load
        raw = raw.add_(2.0) if inplace else raw + 2.0
        s = torch.sigmoid(raw)
        if inverse:
            if inplace:
                x2.div_(s).sub_(shift)
                return x, None
            return torch.cat([x1, x2 / s - shift], 1), None
        ld = F.logsigmoid(raw).sum((1, 2, 3))
        if inplace:
            x2.add_(shift).mul_(s)
            return x, ld
        return torch.cat([x1, (x2 + shift) * s], 1), ld

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
            kernels, pld = self.level_weights(l)
            an = torch.stack([self.p(self._step(l, k) + ".actnorm.logs")
                              for k in range(c.depth)]).double().sum()
            shared = shared + h * w * (an if pld is None else an + pld)
            for k in range(c.depth):
                pre = self._step(l, k)
                z = self.actnorm(pre + ".actnorm", z)
                z = self.permute(pre + ".invconv", z,
                                 kernels[k] if kernels is not None else None)
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
            kernels, _ = self.level_weights(l, inverse=True)
            for k in range(c.depth - 1, -1, -1):
                pre = self._step(l, k)
                z, _ = self.coupling(pre + ".coupling", z, inverse=True)
                z = self.permute(pre + ".invconv", z,
                                 kernels[k] if kernels is not None else None,
                                 inverse=True)
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


# ---- variants ------------------------------------------------------------------
#
# A variant is how PyTorch runs an op: dash-separated tokens, e.g. eager-cl,
# jit-nchw, nomkldnn-eager-cl, jit-cl-jemalloc.
#   eager | jit    eager: the TorchGlow methods above, op by op.  jit: the op
#                  traced with torch.jit.trace at the fixed batch; for the
#                  inference ops (forward, inverse, sample) then frozen with
#                  torch.jit.freeze(optimize_numerics=False) (the parameters
#                  become constants, so everything derived from them alone --
#                  exp(logs), the 1x1 weights, their determinants and
#                  inverses -- is computed once, when freezing, not per
#                  call; optimize_numerics=False leaves out the passes that
#                  fold adds and multiplies into convolution weights); for
#                  train the traced forward+loss, run with autograd.
#   jitopt         jit plus torch.jit.optimize_for_inference (oneDNN weight
#                  prepacking, conv+relu fusion); inference ops only.
#   cl | nchw      channels_last (NHWC) or plain NCHW memory format.
#   nomkldnn       torch.backends.mkldnn.enabled = False (convolutions on
#                  PyTorch's own im2col + BLAS path instead of oneDNN).
#   nograd         inference under torch.no_grad() instead of
#                  torch.inference_mode().
#   t1             torch.set_num_threads(1) instead of --threads (2).
#   glibc | jemalloc | tcmalloc
#                  the allocator: glibc's malloc left at its defaults; or
#                  jemalloc (libjemalloc2) / tcmalloc (libtcmalloc-minimal4)
#                  through LD_PRELOAD (the process re-executes itself), with
#                  their release of free memory to the system turned off.
#                  Without one of these, glibc's malloc with
#                  M_MMAP_THRESHOLD 32 MiB and M_TRIM_THRESHOLD 1 GiB
#                  (mallopt): freed activations stay in the heap and are
#                  reused, instead of being unmapped and page-faulted in
#                  again on every call, which cost up to 10x here.

VARIANT_TOKENS = {
    "exec": ("eager", "jit", "jitopt"),
    "format": ("cl", "nchw"),
    "flags": ("nomkldnn", "nograd", "t1"),
    "malloc": ("glibc", "jemalloc", "tcmalloc"),
}

# The variants `tune`, `check` and bench/compare use by default: those that
# were fastest at bench/compare's batches here (fashion 64, cifar 16; 2
# cores, AVX-512).  Channels_last beat NCHW there by 5-20% for every op;
# the traced module beat eager by a few percent for inference (within the
# noise for cifar), eager won training (the traced forward+loss ran 10-25%
# slower); jemalloc and tcmalloc were within the noise of the tuned glibc
# malloc; inference_mode and no_grad the same; one thread, oneDNN off,
# glibc's malloc defaults and optimize_for_inference were all slower.  At
# batch 1 the traced module wins by more (less Python per call), on one
# thread for fashion (jit-cl-t1) and in NCHW for cifar (jit-nchw).
# `tune --variants all` times the larger set.
DEFAULT_VARIANTS = ("eager-cl", "jit-cl")
# Batch-1 latency (forward): `tune --variants latency`.
LATENCY_VARIANTS = ("eager-cl", "jit-cl", "jit-nchw", "jit-cl-t1", "jit-nchw-t1")
ALL_VARIANTS = (
    "eager-cl", "eager-nchw", "jit-cl", "jit-nchw", "jitopt-cl", "jitopt-nchw",
    "nomkldnn-eager-cl", "nomkldnn-eager-nchw", "nomkldnn-jit-nchw",
    "eager-cl-nograd", "jit-cl-nograd", "eager-cl-t1", "jit-cl-t1", "jit-nchw-t1",
    "eager-nchw-t1", "eager-cl-glibc", "eager-nchw-glibc",
    "eager-cl-jemalloc", "eager-cl-tcmalloc", "jit-cl-jemalloc", "jit-nchw-jemalloc",
)

MALLOC_LIBS = {"jemalloc": ("libjemalloc.so.2", "libjemalloc2",
                            {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}),
               "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4",
                            {"TCMALLOC_RELEASE_RATE": "0"})}


class Variant:
    def __init__(self, name):
        self.name = name
        toks = name.split("-")
        self.exec = "eager"
        self.format = "cl"
        self.malloc = "tuned"
        self.flags = set()
        for t in toks:
            if t in VARIANT_TOKENS["exec"]:
                self.exec = t
            elif t in VARIANT_TOKENS["format"]:
                self.format = t
            elif t in VARIANT_TOKENS["flags"]:
                self.flags.add(t)
            elif t in VARIANT_TOKENS["malloc"]:
                self.malloc = t
            else:
                raise ValueError("variant %s: unknown token %r (known: %s)" % (
                    name, t, ", ".join(x for v in VARIANT_TOKENS.values() for x in v)))
        self.channels_last = self.format == "cl"
        self.mkldnn = "nomkldnn" not in self.flags
        self.jit = self.exec != "eager"

    def applies_to(self, op):
        if op == "train":
            return self.exec != "jitopt" and "nograd" not in self.flags
        return True

    def grad_context(self):
        return torch.no_grad() if "nograd" in self.flags else torch.inference_mode()

    def threads(self, default):
        return 1 if "t1" in self.flags else default


def _mallopt_tuned():
    """glibc malloc: keep freed memory in the heap (see the variants)."""
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    ok = libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1
    ok &= libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1
    return bool(ok)


def _preloaded(lib):
    return any(os.path.basename(p) == lib
               for p in os.environ.get("LD_PRELOAD", "").replace(":", " ").split())


def setup_allocator(variant):
    """Make this process run with the variant's allocator; for jemalloc and
    tcmalloc that means re-executing it with LD_PRELOAD.  Returns a
    description, for the JSON output."""
    if variant.malloc == "glibc":
        return "glibc (defaults)"
    if variant.malloc == "tuned":
        return ("glibc (M_MMAP_THRESHOLD 32 MiB, M_TRIM_THRESHOLD 1 GiB)"
                if _mallopt_tuned() else "glibc (mallopt failed: defaults)")
    lib, pkg, env = MALLOC_LIBS[variant.malloc]
    if _preloaded(lib):
        return "%s (LD_PRELOAD, %s)" % (variant.malloc, " ".join(
            "%s=%s" % kv for kv in env.items()))
    if os.environ.get("TORCH_GLOW_REEXEC"):
        sys.exit("torch_glow.py: %s did not load through LD_PRELOAD" % lib)
    import ctypes.util
    if ctypes.util.find_library(lib.split(".so")[0][3:]) is None:
        sys.exit("torch_glow.py: variant %s needs %s: apt-get install -y %s"
                 % (variant.name, lib, pkg))
    new_env = dict(os.environ, TORCH_GLOW_REEXEC="1", **env)
    new_env["LD_PRELOAD"] = (lib + " " + os.environ.get("LD_PRELOAD", "")).strip()
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, new_env)


def _jit_module_class():
    class JitOp(torch.nn.Module):
        """Holds a TorchGlow's tensors as parameters and buffers (so that the
        tracer sees them as module state, and freezing makes them constants)
        and calls fn."""

        def __init__(self, tg, fn, fixed_weights=False):
            super().__init__()
            self.fn = fn
            for i, (k, p) in enumerate(list(tg.params.items())):
                prm = torch.nn.Parameter(p.detach(), requires_grad=p.requires_grad)
                self.register_parameter("p%d" % i, prm)
                tg.params[k] = prm
            for i, (k, b) in enumerate(list(tg.buffers.items())):
                self.register_buffer("b%d" % i, b)
            if fixed_weights:
                # The 1x1 kernels and log-determinants, computed once here
                # (they become constants when the module is frozen).
                for l in range(tg.cfg.levels):
                    for inv in (False, True):
                        with torch.no_grad():
                            ks, ld = tg.level_weights(l, inverse=inv)
                        if ks is None:
                            continue
                        for k, kk in enumerate(ks):
                            self.register_buffer("w%d_%d_%d" % (l, inv, k), kk)
                        self.register_buffer("ld%d_%d" % (l, inv), ld)
                        tg.fixed_weights[(l, inv)] = (ks, ld)

        def forward(self, *inputs):
            return self.fn(*inputs)
    return JitOp


def _trace(tg, fn, inputs, variant, inference):
    import warnings
    if variant.exec == "jitopt":
        # optimize_for_inference's oneDNN conversion mishandles the in-place
        # updates of tensor views (x2.add_ on a chunk of x): trace it out of
        # place.
        tg.inplace = False
    mod = _jit_module_class()(tg, fn, fixed_weights=inference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if inference:
            with torch.no_grad():
                traced = torch.jit.trace(mod, inputs, check_trace=False)
            traced = torch.jit.freeze(traced.eval(), optimize_numerics=False)
            if variant.exec == "jitopt":
                traced = torch.jit.optimize_for_inference(traced)
        else:
            traced = torch.jit.trace(mod, inputs, check_trace=False)
    return traced


def make_op(tg, variant, op, x, labels, eps=None, generator=None, temperature=0.7):
    """A callable that runs op (forward, inverse, sample or train) of tg the
    variant's way on the batch x (labels: None or (n,) int64) and returns
    its outputs: forward (eps, logdet); inverse, sample: images; train: the
    loss (gradients in tg.params[*].grad).  Inverse decodes eps; sample
    draws from generator."""
    n = x.shape[0]
    lab = () if labels is None else (labels,)
    if op == "train":
        if variant.jit:
            f = _trace(tg, lambda a, *l: tg.loss(a, l[0] if l else None), (x,) + lab,
                       variant, inference=False)
        else:
            def f(a, *l):
                return tg.loss(a, l[0] if l else None)

        def run():
            tg.zero_grad()
            loss = f(x, *lab)
            loss.backward()
            return loss
        return run
    if op == "forward":
        def fn(a, *l):
            e, ld, _ = tg.forward(a, l[0] if l else None)
            return e, ld
        example = x
    else:
        def fn(a, *l):
            return tg.inverse(a, l[0] if l else None,
                              temperature if op == "sample" else 1.0)
        example = eps if eps is not None else torch.zeros(n, tg.cfg.dim, dtype=tg.dtype)
    if variant.jit:
        fn = _trace(tg, fn, (example,) + lab, variant, inference=True)
    ctx = variant.grad_context

    if op == "forward":
        def run():
            with ctx():
                return fn(x, *lab)
    elif op == "inverse":
        def run():
            with ctx():
                return fn(eps, *lab)
    else:
        def run():
            with ctx():
                e = torch.randn(n, tg.cfg.dim, dtype=tg.dtype, generator=generator)
                return fn(e, *lab)
    return run


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


VARIANT_TOL = {"out": 1e-5, "grad": 1e-4}


def _rel(a, b):
    """max |a - b| / max |b|."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-30)


def _run_variant(path, name, x, labels, eps, threads):
    """Outputs of every op of variant `name` on a model file: {key: tensor}
    and the gradients {param name: tensor}."""
    v = Variant(name)
    torch.set_num_threads(v.threads(threads))
    torch.backends.mkldnn.enabled = v.mkldnn
    try:
        out, grads = {}, {}
        for op in OPS:
            if not v.applies_to(op):
                continue
            tg = TorchGlow(path, channels_last=v.channels_last)
            gen = torch.Generator().manual_seed(5)
            r = make_op(tg, v, op, x, labels, eps=eps, generator=gen)()
            if op == "forward":
                out["eps"], out["logdet"] = r
            elif op == "train":
                out["loss"] = r.reshape(1)
                grads = {k: q.grad for k, q in tg.params.items() if q.grad is not None}
            else:
                out[op] = r
        return out, grads
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = True


def check_variants(path, x, labels, eps, variants, threads):
    """Hold each variant's outputs and gradients to eager-cl's (relative
    to the largest magnitude).  Returns {variant: (worst output error,
    worst gradient error, what)}."""
    ref, ref_g = _run_variant(path, "eager-cl", x, labels, eps, threads)
    res = {}
    for name in variants:
        out, g = _run_variant(path, name, x, labels, eps, threads)
        eo = max(((_rel(out[k], ref[k]), k) for k in out), default=(0.0, "-"))
        eg = max(((_rel(g[k], ref_g[k]), k) for k in g), default=(0.0, "-"))
        res[name] = (eo, eg)
    return res


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
    failed = failed_v = 0
    worst_v = {}
    # The allocator does not change what is computed (and cannot change
    # inside this process): allocator variants are checked as their base.
    variants = []
    for v in ([] if args.variants == "none" else variant_list(args.variants)):
        base = "-".join(t for t in v.split("-") if t not in VARIANT_TOKENS["malloc"])
        if base != "eager-cl" and base not in variants:
            variants.append(base)
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
            if variants:
                vres = check_variants(path, xt, lt, torch.from_numpy(eps_g), variants,
                                      args.threads)
                for vname, ((eo, ko), (eg, kg)) in vres.items():
                    bad = eo > VARIANT_TOL["out"] or eg > VARIANT_TOL["grad"]
                    failed_v += bad
                    worst_v[vname] = max(worst_v.get(vname, (0.0, 0.0)), (eo, eg))
                    if bad or args.verbose:
                        print("    variant %-20s vs eager-cl: outputs %.2e (%s), "
                              "gradients %.2e (%s)  %s" % (
                                  vname, eo, ko, eg, kg, "FAIL" if bad else "ok"))
            model.close()
    if variants:
        print("variants against eager-cl (max |diff| / max |eager-cl| over every "
              "config; tolerances: outputs %.0e, gradients %.0e):"
              % (VARIANT_TOL["out"], VARIANT_TOL["grad"]))
        for vname, (eo, eg) in worst_v.items():
            print("  %-22s outputs %.2e  gradients %.2e" % (vname, eo, eg))
    print("check: %s" % ("FAILED (%d config/layout pairs, %d config/variant pairs)"
                         % (failed, failed_v) if failed or failed_v
                         else "all configs agree, in both memory formats"
                         + (", and every variant with eager-cl" if variants else "")))
    return 1 if failed or failed_v else 0


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
    variant = Variant(args.variant)
    if not variant.applies_to(args.op):
        sys.exit("torch_glow.py: variant %s does not apply to %s" % (variant.name, args.op))
    malloc = setup_allocator(variant)          # may re-execute this process
    _import_torch()
    torch.set_num_threads(variant.threads(args.threads))
    torch.backends.mkldnn.enabled = variant.mkldnn
    tg = TorchGlow(args.model, channels_last=variant.channels_last)
    cfg = tg.cfg
    n = args.batch
    x = synthetic_batch(cfg, n)
    labels = (torch.arange(n) % cfg.n_classes) if cfg.n_classes > 0 else None
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        eps0, _, _ = tg.forward(x, labels)
    t0 = time.perf_counter()
    fn = make_op(tg, variant, args.op, x, labels, eps=eps0, generator=gen)
    prepare_s = time.perf_counter() - t0
    setup = _proc_status_mib("VmRSS")
    total0 = _proc_status_mib("VmHWM")
    _reset_peak()
    for _ in range(args.warmup):
        fn()
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
           "op": args.op, "batch": n, "variant": variant.name, "median_s": med,
           "images_per_s": n / med, "calls": len(times), "warmup": args.warmup,
           "prepare_s": round(prepare_s, 3), "threads": torch.get_num_threads(),
           "memory_format": "channels_last" if variant.channels_last else "nchw",
           "mkldnn": bool(torch.backends.mkldnn.is_available()
                          and torch.backends.mkldnn.enabled),
           "malloc": malloc,
           "setup_rss_mib": round(setup, 1), "peak_rss_mib": round(peak, 1),
           "peak_rss_total_mib": round(max(peak, total0), 1)}
    if args.json:
        print(json.dumps(rec))
    else:
        print("%s %s [%s]: %.1f images/s (%.2f ms per batch), peak RSS %.1f MiB"
              % (args.config, args.op, variant.name, n / med, 1e3 * med, peak))
    return 0


# ---- tune ----------------------------------------------------------------------

def _busy_cpu_s():
    """CPU seconds the whole machine has spent busy since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(max_cores=0.1, span=2.0, timeout=300.0):
    """Wait until the machine has run less than max_cores busy cores on
    average over span seconds (or timeout); returns the seconds waited."""
    t_start = time.time()
    while time.time() - t_start < timeout:
        b0, t0 = _busy_cpu_s(), time.time()
        time.sleep(span)
        if (_busy_cpu_s() - b0) / (time.time() - t0) < max_cores:
            break
    return time.time() - t_start


def measure(cmd, env=None, quiet=False, max_foreign=None, retries=0, what="",
            quiet_timeout=300.0):
    """Run cmd (which prints one JSON record) and return the record, with
    "foreign_cores": the average number of cores the rest of the machine
    kept busy meanwhile (all busy CPU time but cmd's own, over the wall
    time).  quiet: wait for an idle machine first; max_foreign: measure
    again (up to retries times) while others used more than that."""
    for attempt in range(retries + 1):
        waited = wait_quiet(timeout=quiet_timeout) if quiet else 0.0
        b0, c0, t0 = _busy_cpu_s(), _children_cpu_s(), time.time()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        foreign = max(0.0, (_busy_cpu_s() - b0) - (_children_cpu_s() - c0)) / wall
        if p.returncode != 0:
            raise RuntimeError("%s failed (exit %d): %s\n%s" % (
                what, p.returncode, " ".join(cmd), p.stderr))
        rec = None
        for line in reversed(p.stdout.splitlines()):
            if line.strip().startswith("{"):
                rec = json.loads(line)
                break
        if rec is None:
            raise RuntimeError("%s printed no JSON: %s" % (what, p.stdout + p.stderr))
        rec["foreign_cores"] = round(foreign, 3)
        rec["waited_s"] = round(waited, 1)
        rec["attempts"] = attempt + 1
        if max_foreign is None or foreign <= max_foreign:
            break
    return rec


def variant_list(spec, op=None):
    if spec in (None, "", "default"):
        names = list(DEFAULT_VARIANTS)
    elif spec == "latency":
        names = list(LATENCY_VARIANTS)
    elif spec == "kept":
        names = list(dict.fromkeys(DEFAULT_VARIANTS + LATENCY_VARIANTS))
    elif spec == "all":
        names = list(ALL_VARIANTS)
    else:
        names = [v for v in spec.split(",") if v]
    vs = [Variant(v) for v in names]                # raises on unknown tokens
    return [v.name for v in vs if op is None or v.applies_to(op)]


def tune(args):
    variants = variant_list(args.variants, args.op)
    me = os.path.abspath(__file__)
    res = {v: [] for v in variants}
    log = (lambda m: None) if args.silent else (lambda m: print(m, file=sys.stderr,
                                                               flush=True))
    t_start = time.time()
    rounds = 0
    for r in range(args.rounds):
        elapsed = time.time() - t_start
        if args.time_limit and r and elapsed + elapsed / r > args.time_limit:
            log("tune: stopping after %d rounds (--time-limit %.0f s)" % (r, args.time_limit))
            break
        done = {}
        for v in variants:
            if args.time_limit and r and time.time() - t_start > args.time_limit:
                break
            cmd = [sys.executable, me, "bench", args.model, "--config", args.config,
                   "--batch", str(args.batch), "--op", args.op, "--variant", v,
                   "--seconds", str(args.seconds), "--min-calls", str(args.min_calls),
                   "--threads", str(args.threads), "--warmup", str(args.warmup), "--json"]
            rec = measure(cmd, quiet=args.quiet, max_foreign=args.max_foreign,
                          retries=args.retries, what="bench %s" % v,
                          quiet_timeout=args.quiet_timeout)
            rec["round"] = r
            done[v] = rec
            log("tune: round %d %-22s %9.2f images/s %9.2f ms  (others: %.2f cores%s)"
                % (r, v, rec["images_per_s"], 1e3 * rec["median_s"],
                   rec["foreign_cores"], ", waited %.0f s" % rec["waited_s"]
                   if rec["waited_s"] >= 3 else ""))
        if len(done) < len(variants):
            log("tune: round %d left incomplete (--time-limit %.0f s): not counted"
                % (r, args.time_limit))
            break
        rounds += 1
        for v, rec in done.items():
            res[v].append(rec)
    if not rounds:
        sys.exit("tune: no round completed")
    summary = {}
    for v, recs in res.items():
        ips = [x["images_per_s"] for x in recs]
        m = statistics.median(ips)
        summary[v] = {"median_images_per_s": round(m, 3),
                      "median_ms_per_batch": round(1e3 * args.batch / m, 3),
                      "images_per_s": [round(x, 3) for x in ips],
                      "foreign_cores": [x["foreign_cores"] for x in recs],
                      "peak_rss_mib": max(x["peak_rss_mib"] for x in recs),
                      "prepare_s": statistics.median(x["prepare_s"] for x in recs)}
    ranking = sorted(summary, key=lambda v: -summary[v]["median_images_per_s"])
    out = {"model": args.model, "config": args.config, "op": args.op,
           "batch": args.batch, "rounds": rounds, "seconds": args.seconds,
           "fastest": ranking[0], "ranking": ranking, "variants": summary,
           "records": res if args.records else None}
    if out["records"] is None:
        del out["records"]
    if not args.silent:
        for v in ranking:
            s = summary[v]
            log("tune: %-22s median %9.2f images/s %9.2f ms per batch"
                % (v, s["median_images_per_s"], s["median_ms_per_batch"]))
        log("tune: fastest %s" % ranking[0])
    print(json.dumps(out, indent=1 if args.pretty else None))
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


def variants_cmd(args):
    for v in variant_list(args.set):
        print(v)
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
    c.add_argument("--variants", default="kept",
                   help="variants to hold to the eager-cl results (default 'kept': "
                        "the default and latency ones; 'all', a list, or 'none')")
    c.add_argument("-v", "--verbose", action="store_true")
    # What bench and tune time: an op of a model file at a batch.
    timed = argparse.ArgumentParser(add_help=False)
    timed.add_argument("model")
    timed.add_argument("--config", default="?", help="a name for the output")
    timed.add_argument("--batch", type=int, required=True)
    timed.add_argument("--op", choices=OPS, required=True)
    b = sub.add_parser("bench", parents=[timed], help="time one op of a model file")
    b.add_argument("--variant", default="eager-cl",
                   help="how PyTorch runs it (default eager-cl; see `variants`)")
    b.add_argument("--seconds", type=float, default=3.0)
    b.add_argument("--min-calls", type=int, default=3)
    b.add_argument("--warmup", type=int, default=2,
                   help="untimed calls first (default 2: a traced module "
                        "profiles its first call and optimises on the next)")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--json", action="store_true")
    t = sub.add_parser("tune", parents=[timed],
                       help="time every variant of an op, interleaved")
    t.add_argument("--variants", default="default",
                   help="comma-separated variants, 'default' (%s), 'latency' "
                        "(%s) or 'all'" % (",".join(DEFAULT_VARIANTS),
                                           ",".join(LATENCY_VARIANTS)))
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--seconds", type=float, default=2.0)
    t.add_argument("--min-calls", type=int, default=3)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--quiet", action="store_true",
                   help="before each measurement wait until the machine is idle "
                        "(< 0.1 busy cores over 2 s)")
    t.add_argument("--quiet-timeout", type=float, default=300.0,
                   help="with --quiet: wait at most this long (default 300 s)")
    t.add_argument("--max-foreign", type=float, default=None,
                   help="measure again when other processes kept more than this "
                        "many cores busy on average during a measurement")
    t.add_argument("--retries", type=int, default=3,
                   help="with --max-foreign: at most this many repeats")
    t.add_argument("--time-limit", type=float, default=None,
                   help="start no round that would end after this many seconds "
                        "(estimated from the rounds so far), and drop a round "
                        "still running then")
    t.add_argument("--records", action="store_true",
                   help="include every measurement's record in the JSON")
    t.add_argument("--pretty", action="store_true", help="indented JSON")
    t.add_argument("--silent", action="store_true", help="no progress on stderr")
    v = sub.add_parser("variants", help="list a set of variants")
    v.add_argument("set", nargs="?", default="default",
                   help="default (bench/compare's), latency, kept (both) or all")
    g = sub.add_parser("gemm", help="torch.matmul GFLOP/s")
    g.add_argument("--threads", type=int, default=2)
    g.add_argument("--size", type=int, default=2048)
    g.add_argument("--reps", type=int, default=5)
    g.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    return {"check": check, "bench": bench, "tune": tune, "gemm": gemm,
            "variants": variants_cmd}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())

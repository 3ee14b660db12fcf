"""glow.torch against the C library: the same model gives the same numbers
in both directions.

Models of a spread of configurations (every coupling, permutation, top
prior and class conditioning; one to three levels) get data_init and
random perturbations of every parameter, so that the zero-initialised
convolutions, priors and class tables all take part, and run on real
Fashion-MNIST images.  Errors are relative to the largest magnitude of
the C result (per tensor for gradients); the C gradients are those of
GLOW_BACKWARD_STORE, the exact gradients of the forward pass.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import glow
from conftest import REPO, fashion_mnist

torch = pytest.importorskip("torch")
import glow.torch as gt  # noqa: E402  (needs torch)

pytestmark = pytest.mark.torch

#: Tolerances of the equivalence (relative to the largest C magnitude).
TOL_VALUES = 1e-5  # eps, logdet, log p, bits/dim, loss, inverse, logits
TOL_GRADS = 1e-4  # loss gradients, per tensor

A, ADD = glow.Coupling.AFFINE, glow.Coupling.ADDITIVE
P = glow.Permutation
CONFIGS = {
    "affine-conv1x1-28x28": dict(height=28, width=28, channels=1, levels=2, depth=2,
                                 hidden=16, coupling=A, permutation=P.CONV1X1, seed=1),
    "additive-lu-3ch": dict(height=16, width=16, channels=3, levels=2, depth=2, hidden=8,
                            coupling=ADD, permutation=P.CONV1X1_LU, seed=2),
    "affine-lu-3levels-conditional": dict(height=16, width=16, channels=1, levels=3, depth=2,
                                          hidden=8, coupling=A, permutation=P.CONV1X1_LU,
                                          n_classes=10, class_weight=0.5, seed=3),
    "affine-reverse-5bits": dict(height=8, width=8, channels=2, levels=2, depth=2, hidden=8,
                                 coupling=A, permutation=P.REVERSE, n_bits=5, seed=4),
    "additive-shuffle-conditional-notop": dict(height=8, width=8, channels=3, levels=1,
                                               depth=3, hidden=8, coupling=ADD,
                                               permutation=P.SHUFFLE, n_classes=10,
                                               learn_top=0, class_weight=1.0, seed=5),
    "affine-conv1x1-notop-12x8": dict(height=12, width=8, channels=1, levels=2, depth=2,
                                      hidden=12, coupling=A, permutation=P.CONV1X1,
                                      learn_top=0, seed=6),
}
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def fashion_batch(model: glow.Model, n: int, offset: int = 0, classes: int | None = None):
    """n Fashion-MNIST test images fitted to the model's image shape (area
    resampling; channel k from another image), preprocessed by the library,
    with their labels (None for an unconditional model).  ``classes``
    keeps only images of that one class."""
    pixels, labels = fashion_mnist()
    if classes is not None:
        keep = labels == classes
        pixels, labels = pixels[keep], labels[keep]
    h, w, c = model.image_shape
    idx = offset + np.arange(n * c)
    t = torch.from_numpy(pixels[idx].astype(np.float32))[:, None]
    t = torch.nn.functional.adaptive_avg_pool2d(t, (h, w))[:, 0]
    t = t.reshape(n, c, h, w).permute(0, 2, 3, 1)
    px = np.ascontiguousarray(t.round().clamp(0, 255).numpy().astype(np.uint8))
    x = model.preprocess(px, seed=offset)
    cond = model.config.n_classes > 0
    return x, (np.ascontiguousarray(labels[idx[::c]]) if cond else None)


def perturbed(name: str, n_init: int = 32, scale: float = 0.05) -> glow.Model:
    """A C model of CONFIGS[name] after data_init on Fashion-MNIST, with
    Gaussian noise on every parameter: std ``scale``, less for weights
    with many inputs and for deep models, so that every model stays well
    conditioned (its inverse accurate to float rounding)."""
    fields = CONFIGS[name]
    model = glow.Model(**fields)
    x, labels = fashion_batch(model, n_init, offset=1000)
    model.data_init(x, labels)
    rng = np.random.default_rng(fields["seed"])
    depth_scale = min(1.0, 3.0 / fields["depth"])
    for t in model.tensors():
        fan_in = math.prod(t.shape[:-1]) if t.name.endswith(".weight") and len(t.shape) > 1 else 1
        std = scale * min(1.0, 8.0 / math.sqrt(fan_in)) * depth_scale
        v = model.param(t.name)
        v += (std * rng.standard_normal(v.shape)).astype(np.float32)
    return model


def rel(torch_value, c_value) -> float:
    """max |torch - C| / max |C|."""
    a = torch_value.detach().cpu().to(torch.float64).numpy()
    b = np.asarray(c_value, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def as_torch(a: np.ndarray | None, dtype=None):
    if a is None:
        return None
    t = torch.from_numpy(np.array(a))
    return t if dtype is None else t.to(dtype)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_numbers_as_c(name, dtype, record_property):
    """forward (eps, logdet), log_prob, bits/dim, inverse, classify, the
    loss and every parameter's loss gradient agree with libglow."""
    model = perturbed(name)
    x, labels = fashion_batch(model, 8)
    eps, logdet = model.forward(x, labels)
    model.set_option(glow.Option.BACKWARD_MODE, glow.BackwardMode.STORE)
    model.zero_grad()
    loss = model.backward(x, labels)

    dt = DTYPES[dtype]
    net = gt.Glow.from_model(model, dtype=dt)
    xt, lt = as_torch(x, dt), as_torch(labels)
    err = {}
    eps_t, logdet_t = net(xt, lt)
    err["eps"] = rel(eps_t, eps)
    err["logdet"] = rel(logdet_t, logdet)
    err["log_prob"] = rel(net.log_prob(xt, lt), model.log_prob(x, labels))
    err["bits_per_dim"] = rel(net.bits_per_dim(xt, lt), model.bits_per_dim(x, labels))
    err["inverse"] = rel(net.inverse(as_torch(eps, dt), lt), model.inverse(eps, labels))
    if labels is not None:
        err["logits"] = rel(net.classify(xt)[0], model.classify(x)[0])
    loss_t = net.loss(xt, lt)
    err["loss"] = rel(loss_t, loss)
    loss_t.backward()
    grads = {}
    for tname, p in net.named_parameters():
        c_grad = model.grad(tname)
        assert np.abs(c_grad).max() > 0, f"{tname}: no gradient to compare"
        grads[tname] = rel(p.grad, c_grad)
    worst = max(grads, key=grads.get)
    err["grad"] = grads[worst]
    record_property("errors", err)
    print(f"\n{name} [{dtype}]: " + ", ".join(f"{k} {v:.1e}" for k, v in err.items())
          + f" (worst gradient: {worst})")
    for key, value in err.items():
        assert value <= (TOL_GRADS if key == "grad" else TOL_VALUES), (key, value)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_model_file_bytes_and_state_dict(name, tmp_path):
    """A copy of a C model writes the very bytes libglow writes, its
    state_dict is the file's tensors (names, shapes, values), and a file
    saved from PyTorch loads in C as the same model."""
    model = perturbed(name)
    net = gt.Glow.from_model(model)
    data = model.to_bytes()
    assert net.to_bytes() == data
    state = net.state_dict()
    params = {t.name: t.shape for t in model.tensors()}
    fixed = {k for k, _ in net.named_buffers()}
    assert {k: tuple(v.shape) for k, v in state.items() if k not in fixed} == params
    assert {k for k, _ in net.named_parameters()} == set(params)
    for tname in params:
        assert np.array_equal(state[tname].numpy(), model.param(tname)), tname
    permutation = CONFIGS[name]["permutation"]
    suffixes = {P.CONV1X1: set(), P.CONV1X1_LU: {"invconv.perm", "invconv.sign"},
                P.REVERSE: {"permute.index"}, P.SHUFFLE: {"permute.index"}}[permutation]
    assert {k.split(".", 4)[4] for k in fixed} == suffixes
    path = tmp_path / "from_torch.safetensors"
    net.save(path)
    assert path.read_bytes() == data
    back = gt.Glow.load(path, dtype=torch.float64)
    assert back.to_bytes() == data and back.initialized


def test_data_init_matches_c():
    """data_init sets every actnorm as glow_data_init does, on the same
    batch (statistics in float64 on both sides)."""
    fields = CONFIGS["affine-lu-3levels-conditional"]
    model = glow.Model(**fields)
    net = gt.Glow.from_model(model, dtype=torch.float64)
    assert not net.initialized
    x, labels = fashion_batch(model, 32)
    model.data_init(x, labels)
    net.data_init(as_torch(x, torch.float64), as_torch(labels))
    assert net.initialized
    changed = 0
    for tname, p in net.named_parameters():
        c_value = model.param(tname)
        if ".actnorm" in tname:
            # Behind a standardizing actnorm and a rotation the means are
            # zero up to rounding: the scale of a bias is the input's unit
            # standard deviation, not its own size.
            changed += 1
            scale = max(1.0, float(np.abs(c_value).max()))
            err = float(np.abs(p.detach().numpy() - c_value).max()) / scale
            assert err <= TOL_VALUES, (tname, err)
        else:
            assert np.array_equal(p.detach().numpy(), c_value), tname
    assert changed == 6 * fields["levels"] * fields["depth"]


@pytest.mark.parametrize("name", ["affine-lu-3levels-conditional", "additive-lu-3ch"])
def test_sample_at_temperature_zero_is_cs_mode(name):
    """At temperature 0 both sample the mode, the inverse of eps = 0, which
    does not depend on the noise: the same images as glow_sample's."""
    model = perturbed(name)
    n = 4
    labels = None if model.config.n_classes == 0 else np.arange(n, dtype=np.int32)
    net = gt.Glow.from_model(model, dtype=torch.float64)
    assert rel(net.sample(n, 0.0, as_torch(labels)), model.sample(n, 0.0, 7, labels)) <= TOL_VALUES


def test_sample_uses_the_generator():
    """The same generator seed gives the same images, another seed others;
    the samples are what inverse makes of the generator's normal draws."""
    net = gt.Glow.from_model(perturbed("affine-conv1x1-notop-12x8"))
    a = net.sample(3, 0.7, generator=torch.Generator().manual_seed(5))
    b = net.sample(3, 0.7, generator=torch.Generator().manual_seed(5))
    c = net.sample(3, 0.7, generator=torch.Generator().manual_seed(6))
    assert a.shape == (3, 12, 8, 1) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    eps = 0.7 * torch.randn(3, net.dim, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, net.inverse(eps))


def test_sample_redraws_images_that_are_not_finite(monkeypatch):
    """As glow_sample: a row whose inverse is not finite is drawn again
    (only that row), and after 16 draws the call fails."""
    net = gt.Glow.from_model(perturbed("affine-conv1x1-notop-12x8"))
    inverse = net.inverse
    calls = []

    def overflowing_once(eps, labels=None):
        x = inverse(eps, labels)
        if not calls:
            x[1] = float("inf")
        calls.append(len(eps))
        return x

    monkeypatch.setattr(net, "inverse", overflowing_once)
    x = net.sample(3, 0.5, generator=torch.Generator().manual_seed(2))
    assert calls == [3, 1] and bool(torch.isfinite(x).all())
    gen = torch.Generator().manual_seed(2)
    first = 0.5 * torch.randn(3, net.dim, generator=gen)
    again = 0.5 * torch.randn(1, net.dim, generator=gen)
    assert torch.equal(x[[0, 2]], inverse(first)[[0, 2]])
    assert torch.equal(x[1], inverse(again)[0])
    monkeypatch.setattr(net, "inverse", lambda eps, labels=None: inverse(eps) / 0.0)
    with pytest.raises(FloatingPointError, match="16 draws"):
        net.sample(2, 0.5)


def test_pixels_like_c():
    """preprocess keeps libglow's bins (only the noise differs) and
    postprocess gives libglow's pixels."""
    model = glow.Model(**CONFIGS["affine-reverse-5bits"])
    net = gt.Glow.from_model(model)
    px = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 2), dtype=np.uint8)
    x = net.preprocess(torch.from_numpy(px), generator=torch.Generator().manual_seed(1))
    assert x.dtype == torch.float32 and float(x.min()) >= -0.5 and float(x.max()) < 0.5
    assert np.array_equal(model.postprocess(x.numpy()), px & 0xF8)
    assert np.array_equal(net.postprocess(x).numpy(), px & 0xF8)
    wild = np.array([-3, -0.5, -0.49, 0, 0.2, 0.4999, 0.5, 7, np.inf, -np.inf, np.nan],
                    dtype=np.float32)
    wild = np.resize(wild, (1, 8, 8, 2)).astype(np.float32)
    assert np.array_equal(net.postprocess(torch.from_numpy(wild)).numpy(), model.postprocess(wild))


def adam_steps(net, params, batches, lr=1e-3):
    """Adam on the glow.torch loss over ``batches``; the losses."""
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for x, labels in batches:
        opt.zero_grad()
        loss = net.loss(x, labels)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def test_trained_in_torch_runs_in_c(tmp_path):
    """50 Adam steps in PyTorch from a fresh model, saved: the C library
    loads the file and gives the same bits/dim, to 1e-5, on held-out
    images, and the same loss."""
    net = gt.Glow(height=28, width=28, channels=1, levels=2, depth=3, hidden=16,
                  permutation=P.CONV1X1_LU, n_classes=10, seed=21)
    probe = glow.Model(net.config)
    x, labels = fashion_batch(probe, 512, offset=2000)
    xt, lt = as_torch(x), as_torch(labels)
    net.data_init(xt[:256], lt[:256])
    batches = [(xt[(16 * i) % 512 :][:16], lt[(16 * i) % 512 :][:16]) for i in range(50)]
    losses = adam_steps(net, net.parameters(), batches)
    assert np.mean(losses[-10:]) < losses[0] - 0.5, losses
    path = tmp_path / "torch.safetensors"
    net.save(path)
    model = glow.Model.load(path)
    held, held_labels = fashion_batch(model, 16, offset=5000)
    with torch.no_grad():
        bpd_t = net.bits_per_dim(as_torch(held), as_torch(held_labels))
    bpd_c = model.bits_per_dim(held, held_labels)
    print(f"\ntrained in torch: C bits/dim {bpd_c.mean():.4f}, torch {float(bpd_t.mean()):.4f}, "
          f"relative difference {rel(bpd_t, bpd_c):.1e}")
    assert rel(bpd_t, bpd_c) <= TOL_VALUES
    assert math.isclose(model.backward(held, held_labels), float(net.loss(as_torch(held),
                        as_torch(held_labels))), rel_tol=TOL_VALUES)


def test_trained_in_c_continues_in_torch():
    """A model trained by glow_backward and a numpy Adam continues in
    PyTorch: it starts from C's loss, and training lowers it further."""
    fields = dict(height=28, width=28, channels=1, levels=2, depth=2, hidden=16,
                  coupling=ADD, permutation=P.SHUFFLE, seed=31)
    model = glow.Model(**fields)
    x, _ = fashion_batch(model, 384, offset=3000)
    model.data_init(x[:128])
    params, grads = model.params, model.grads
    m, v = np.zeros_like(params), np.zeros_like(params)
    for t in range(1, 31):
        model.zero_grad()
        model.backward(x[(16 * t) % 384 :][:16])
        m = 0.9 * m + 0.1 * grads
        v = 0.999 * v + 0.001 * grads**2
        params -= 1e-3 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    eval_x = x[:64]
    c_loss = model.backward(eval_x)
    net = gt.Glow.from_model(model)
    assert net.initialized
    xt = as_torch(x)
    assert math.isclose(float(net.loss(as_torch(eval_x))), c_loss, rel_tol=TOL_VALUES)
    adam_steps(net, net.parameters(), [(xt[(16 * t) % 384 :][:16], None) for t in range(40)])
    with torch.no_grad():
        after = float(net.loss(as_torch(eval_x)))
    assert after < c_loss - 0.05, (c_loss, after)
    assert math.isclose(net.to_model().backward(eval_x), after, rel_tol=TOL_VALUES)


def test_float64_and_device_follow_the_parameters():
    """.to() moves everything: outputs follow the parameters' dtype (and
    device, where CUDA exists); the fixed buffers keep their values."""
    model = perturbed("additive-lu-3ch")
    net = gt.Glow.from_model(model)
    assert net.dtype == torch.float32 and net.device.type == "cpu"
    net = net.to(torch.float64)
    x, _ = fashion_batch(model, 2)
    eps, logdet = net(as_torch(x, torch.float64))
    assert eps.dtype == logdet.dtype == torch.float64
    assert net.to_bytes() == model.to_bytes()
    if torch.cuda.is_available():
        cuda = net.to("cuda")
        eps_cuda, _ = cuda(as_torch(x, torch.float64).to("cuda"))
        assert eps_cuda.device.type == "cuda"
        assert rel(eps_cuda, eps.numpy()) <= TOL_VALUES
        assert cuda.sample(2, 0.5).device.type == "cuda"


def test_arguments_are_checked():
    """The checks of the C API, as Python exceptions."""
    cond = gt.Glow.from_model(perturbed("additive-shuffle-conditional-notop"))
    x = torch.zeros(2, 8, 8, 3)
    with pytest.raises(ValueError, match="needs labels"):
        cond(x)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        cond(x, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="shape"):
        cond(x, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integers"):
        cond(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="float64"):
        cond(x.double(), [0, 1])
    with pytest.raises(ValueError, match=r"\(n, 8, 8, 3\)"):
        cond(torch.zeros(2, 3, 8, 8), [0, 1])
    with pytest.raises(ValueError, match="unconditional"):
        gt.Glow(height=8, width=8, channels=1, levels=1, depth=1, hidden=4)(
            torch.zeros(1, 8, 8, 1), [0])
    with pytest.raises(ValueError, match="temperature"):
        cond.sample(2, -1.0, [0, 1])
    with pytest.raises(glow.GlowError):
        gt.Glow(height=7, width=8, channels=1)  # the library's check


def test_import_glow_without_torch():
    """``import glow`` works where PyTorch is missing; ``glow.torch`` then
    fails with an ImportError that says what to install."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import glow; glow.Model(height=4, width=4, channels=1, levels=1)\n"
            "try:\n    import glow.torch\nexcept ImportError as e:\n"
            "    assert 'python3-torch' in str(e), e; print('ok')\n")
    env = dict(os.environ)
    package_dir = str(Path(glow.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_dir, env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=REPO, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

"""Training through the binding: data_init, backward, gradients in the
grads view, and a numpy Adam loop that lowers the loss."""

from __future__ import annotations

import numpy as np
import pytest

import glow
from conftest import CONFIGS, images, labels_for, skip_if_unsupported, tiny


def blobs(model: glow.Model, n: int, seed: int = 0) -> np.ndarray:
    """A small learnable data set: one Gaussian blob per image at a random
    place, as preprocessed model input."""
    h, w, c = model.image_shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    cy = rng.uniform(h / 4, 3 * h / 4, n)[:, None, None]
    cx = rng.uniform(w / 4, 3 * w / 4, n)[:, None, None]
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (h * w / 10))
    pixels = np.repeat((255 * blob).astype(np.uint8)[..., None], c, axis=3)
    return model.preprocess(np.ascontiguousarray(pixels), seed=seed)


def initialised(name: str = "affine-conv1x1", n: int = 16, **overrides):
    """A model after data_init on a batch, the batch and its labels."""
    fields = dict(CONFIGS[name])
    fields.update(overrides)
    model = glow.Model(**fields)
    x = blobs(model, n)
    labels = labels_for(model, n)
    skip_if_unsupported(model.data_init, x, labels)
    return model, x, labels


@pytest.mark.parametrize("mode", list(glow.BackwardMode))
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_training_bit_identical_to_c(name, mode, driver, tmp_path):
    """data_init, then backward (in either backward mode): same parameters,
    loss and gradients, bit for bit, as the same calls made from C."""
    fields = CONFIGS[name]
    model = glow.Model(**fields)
    model.set_option(glow.Option.BACKWARD_MODE, mode)
    x = blobs(model, 6)
    labels = labels_for(model, 6)
    skip_if_unsupported(model.data_init, x, labels)
    loss = model.backward(x, labels)
    c = driver.run(tmp_path, fields, x=x, labels=labels, train=True, backward_mode=mode)
    assert c["status"]["data_init"] == 0 and c["status"]["backward"] == 0
    assert np.array_equal(model.params, c["params_init"])
    assert np.float32(loss) == c["loss"][0]
    assert np.array_equal(model.grads, c["grads"])
    assert model.grads.any()


def test_data_init_normalises_the_first_actnorm():
    """After data_init the first actnorm maps the squeezed batch to zero mean
    and unit variance per channel (docs/architecture.md)."""
    model, x, _ = initialised(n=32)
    n, h, w, c = x.shape
    # squeeze: output channel c*4 + 2*dy + dx
    z = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    z = z.reshape(n, h // 2, w // 2, 4 * c).astype(np.float64)
    bias = model.param("level.0.step.0.actnorm.bias").astype(np.float64)
    logs = model.param("level.0.step.0.actnorm.logs").astype(np.float64)
    y = (z + bias) * np.exp(logs)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1, rtol=1e-3)


def test_backward_requires_data_init():
    model = tiny()
    x = images(model, 2)
    with pytest.raises(glow.GlowError) as info:
        model.backward(x)
    if info.value.status == glow.Status.ERR_UNSUPPORTED:
        pytest.skip(f"libglow reports GLOW_ERR_UNSUPPORTED: {info.value.message}")
    assert info.value.status == glow.Status.ERR_STATE
    assert "glow_data_init" in info.value.message
    assert not model.grads.any()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_loss_is_mean_bits_per_dim(name):
    model, x, labels = initialised(name, n=8)
    loss = model.backward(x, labels)
    mean_bpd = float(model.bits_per_dim(x, labels).astype(np.float64).mean())
    if model.config.n_classes == 0:
        assert loss == pytest.approx(mean_bpd, rel=1e-5)
    else:  # plus class_weight * cross-entropy / ln 2, which is positive
        assert loss > mean_bpd + 1e-4


def test_gradients_accumulate_and_zero():
    model, x, labels = initialised(n=8)
    model.backward(x, labels)
    grads = model.grads
    once = grads.copy()
    assert np.count_nonzero(once) > model.param_count // 2
    model.backward(x, labels)
    assert np.array_equal(grads, 2 * once)  # added, and deterministic
    model.zero_grad()
    assert not grads.any()
    model.backward(x, labels)
    assert np.array_equal(grads, once)


def test_gradient_matches_finite_differences():
    """The gradient in the grads view is the derivative of the loss with
    respect to the parameter written through the params view."""
    model, x, _ = initialised(n=16)
    model.backward(x)
    grads, params = model.grads.copy(), model.params
    rng = np.random.default_rng(0)
    largest = np.argsort(-np.abs(grads))[:6]
    chosen = np.concatenate([largest, rng.choice(np.flatnonzero(np.abs(grads) > 1e-2), 4)])
    h = 1e-2
    for i in chosen:
        old = params[i]
        params[i] = old + h
        up = model.bits_per_dim(x).astype(np.float64).mean()
        params[i] = old - h
        down = model.bits_per_dim(x).astype(np.float64).mean()
        params[i] = old
        assert (up - down) / (2 * h) == pytest.approx(grads[i], rel=2e-3, abs=2e-5), i


def test_adam_lowers_the_loss():
    """A few steps of Adam in numpy, updating the params view in place from
    the grads view, lower the loss well below its start."""
    model, x, _ = initialised(n=32, channels=1, n_bits=5)
    params, grads = model.params, model.grads
    m = np.zeros(model.param_count)
    v = np.zeros(model.param_count)
    beta1, beta2, lr = 0.9, 0.999, 2e-3
    losses = []
    for t in range(1, 41):
        model.zero_grad()
        losses.append(model.backward(x))
        m = beta1 * m + (1 - beta1) * grads
        v = beta2 * v + (1 - beta2) * grads.astype(np.float64) ** 2
        step = lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + 1e-8)
        params -= step.astype(np.float32)
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 1.0
    assert max(losses[-5:]) < min(losses[:5])
    # the views are the model: its own score agrees with the last loss
    final = float(model.bits_per_dim(x).astype(np.float64).mean())
    assert final < losses[0] - 1.0

"""Latent arithmetic and class prediction through the binding."""

from __future__ import annotations

import numpy as np
import pytest

import glow
from conftest import CONFIGS, images, labels_for, tiny


def _perturbed(name: str) -> glow.Model:
    """A model whose zero-initialised parts (classifier, priors) are not zero."""
    model = glow.Model(**CONFIGS[name])
    rng = np.random.default_rng(2)
    model.params[:] += rng.normal(0, 0.05, model.param_count).astype(np.float32)
    return model


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_latent_arithmetic_bit_identical_to_c(name, driver, tmp_path):
    model = glow.Model(**CONFIGS[name])
    x = images(model, 4, seed=8)
    labels = labels_for(model, 4)
    c = driver.run(tmp_path, CONFIGS[name], x=x, labels=labels)
    eps, _ = model.forward(x, labels)
    assert np.array_equal(glow.latent_lerp(eps[0], eps[1], 0.3), c["lerp"])
    assert np.array_equal(glow.latent_slerp(eps[0], eps[1], 0.3), c["slerp"])
    direction = glow.latent_direction(eps[:1], eps[1:])
    assert np.array_equal(direction, c["direction"])
    assert np.array_equal(glow.latent_shift(eps, direction, 1.5).ravel(), c["shift"])


def test_latent_arithmetic_formulas():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 300)).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    np.testing.assert_allclose(glow.latent_lerp(a, b, 0.25), 0.75 * a64 + 0.25 * b64,
                               rtol=1e-6, atol=1e-6)
    # slerp: the ends are the inputs, the norm is interpolated linearly, and
    # the direction stays in the plane of a and b
    np.testing.assert_allclose(glow.latent_slerp(a, b, 0.0), a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(glow.latent_slerp(a, b, 1.0), b, rtol=1e-5, atol=1e-6)
    mid = glow.latent_slerp(a, b, 0.5).astype(np.float64)
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    assert np.linalg.norm(mid) == pytest.approx(0.5 * (na + nb), rel=1e-5)
    cos = lambda u, v: u @ v / (np.linalg.norm(u) * np.linalg.norm(v))  # noqa: E731
    assert cos(mid, a64) == pytest.approx(cos(mid, b64), rel=1e-4)
    coef, *_ = np.linalg.lstsq(np.stack([a64, b64], 1), mid, rcond=None)
    np.testing.assert_allclose(np.stack([a64, b64], 1) @ coef, mid, atol=1e-4)
    # direction and shift
    with_attr = rng.normal(size=(5, 300)).astype(np.float32)
    without_attr = rng.normal(size=(7, 300)).astype(np.float32)
    d = glow.latent_direction(with_attr, without_attr)
    np.testing.assert_allclose(d, with_attr.mean(0, dtype=np.float64)
                               - without_attr.mean(0, dtype=np.float64), atol=1e-6)
    np.testing.assert_allclose(glow.latent_shift(with_attr, d, -2.0),
                               with_attr - 2.0 * d.astype(np.float64), atol=1e-5)


def test_latent_arithmetic_errors():
    a = np.ones(8, np.float32)
    for call, status in (
        (lambda: glow.latent_slerp(a, -a, 0.5), glow.Status.ERR_ARG),       # opposite
        (lambda: glow.latent_slerp(a, 0 * a, 0.5), glow.Status.ERR_ARG),    # zero vector
        (lambda: glow.latent_lerp(a, a, float("nan")), glow.Status.ERR_ARG),
        (lambda: glow.latent_lerp(a[:0], a[:0], 0.5), glow.Status.ERR_ARG),  # dim 0
        (lambda: glow.latent_shift(a[None], a, float("inf")), glow.Status.ERR_ARG),
        (lambda: glow.latent_direction(a[None][:0], a[None]), glow.Status.ERR_BATCH),
        (lambda: glow.latent_shift(a[None][:0], a, 1.0), glow.Status.ERR_BATCH),
    ):
        with pytest.raises(glow.GlowError) as info:
            call()
        assert info.value.status == status and info.value.message
    with pytest.raises(ValueError, match="shape"):
        glow.latent_lerp(a, np.ones(9, np.float32), 0.5)
    with pytest.raises(ValueError, match="shape"):
        glow.latent_lerp(a[None], a, 0.5)
    with pytest.raises(ValueError, match="shape"):
        glow.latent_direction(np.ones((2, 8), np.float32), np.ones((2, 9), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        glow.latent_lerp(np.ones(16, np.float32)[::2], a, 0.5)
    with pytest.raises(TypeError, match="float32"):
        glow.latent_lerp(a.astype(np.float64), a, 0.5)
    with pytest.raises(TypeError):
        glow.latent_lerp(list(a), a, 0.5)
    with pytest.raises(TypeError, match="real number"):
        glow.latent_lerp(a, a, "0.5")


def test_classify_bit_identical_to_c(driver, tmp_path):
    name = "shuffle-conditional"
    model = _perturbed(name)
    x = images(model, 5)
    labels = labels_for(model, 5)
    path = tmp_path / "m.glow"
    model.save(path)
    c = driver.run(tmp_path / "c", load=path, x=x, labels=labels)
    logits, probs = model.classify(x)
    assert np.array_equal(logits.ravel(), c["logits"])
    assert np.array_equal(probs.ravel(), c["probs"])


def test_classify_gives_logits_and_their_softmax():
    model = _perturbed("shuffle-conditional")
    x = images(model, 6)
    logits, probs = model.classify(x)
    k = model.config.n_classes
    assert logits.shape == probs.shape == (6, k)
    assert np.ptp(logits, axis=1).min() > 0  # not all equal: a real classifier
    e = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)


def test_classify_errors():
    with pytest.raises(glow.GlowError) as info:
        tiny().classify(images(tiny(), 2))
    assert info.value.status == glow.Status.ERR_STATE
    model = glow.Model(**CONFIGS["shuffle-conditional"])
    with pytest.raises(glow.GlowError) as info:
        model.classify(np.empty((0, *model.image_shape), np.float32))
    assert info.value.status == glow.Status.ERR_BATCH
    with pytest.raises(TypeError):
        model.classify(images(model, 2).astype(np.float64))

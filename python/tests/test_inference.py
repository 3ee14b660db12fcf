"""Inference through the binding: exact agreement with the same calls made
from C, the round trip, and the relations between the scores."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import glow
from conftest import CONFIGS, images, labels_for, tiny


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bit_identical_to_c(name, driver, tmp_path):
    """Every inference call gives the same bits through the binding as
    through a C program given the same inputs."""
    fields = CONFIGS[name]
    model = glow.Model(**fields)
    n = 5
    x = images(model, n, seed=42)
    labels = labels_for(model, n)
    c = driver.run(tmp_path, fields, x=x, labels=labels, temperature=0.75,
                   sample_seed=99, pre_seed=17)
    assert c["status"]["create"] == 0

    assert np.array_equal(model.params, c["params"])
    eps, logdet = model.forward(x, labels)
    assert np.array_equal(eps.ravel(), c["eps"])
    assert np.array_equal(logdet, c["logdet"])
    assert np.array_equal(model.logdet(x, labels), c["logdet2"])
    assert np.array_equal(model.log_prob(x, labels), c["logp"])
    assert np.array_equal(model.bits_per_dim(x, labels), c["bpd"])
    assert np.array_equal(model.inverse(eps, labels).ravel(), c["inverse"])
    pixels = model.postprocess(x)
    assert np.array_equal(pixels.ravel(), c["pixels"])
    assert np.array_equal(model.preprocess(pixels, seed=17).ravel(), c["pre"])
    sample = model.sample(n, temperature=0.75, seed=99, labels=labels)
    assert np.array_equal(sample.ravel(), c["sample"])
    # and the outputs have the documented shapes
    assert eps.shape == (n, model.dim) and logdet.shape == (n,)
    assert sample.shape == pixels.shape == (n, *model.image_shape)
    assert pixels.dtype == np.uint8 and sample.dtype == np.float32


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip(name):
    model = glow.Model(**CONFIGS[name])
    x = images(model, 4, seed=1)
    labels = labels_for(model, 4)
    eps, _ = model.forward(x, labels)
    back = model.inverse(eps, labels)
    assert back.shape == x.shape
    np.testing.assert_allclose(back, x, rtol=0, atol=1e-4)
    assert not np.array_equal(eps.ravel(), x.ravel())  # not the identity


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_scores_agree_with_forward(name):
    """log_prob = sum log N(eps; 0, 1) + logdet, and bits/dim follows from it
    (a second path to the same numbers, computed here in float64)."""
    model = glow.Model(**CONFIGS[name])
    x = images(model, 6, seed=2)
    labels = labels_for(model, 6)
    eps, logdet = model.forward(x, labels)
    assert np.array_equal(model.logdet(x, labels), logdet)
    e = eps.astype(np.float64)
    logp = -0.5 * (e * e).sum(axis=1) - 0.5 * model.dim * math.log(2 * math.pi) + logdet
    got = model.log_prob(x, labels)
    np.testing.assert_allclose(got, logp, rtol=1e-5)
    d, bits = model.dim, model.config.n_bits
    bpd = (-got.astype(np.float64) + d * bits * math.log(2)) / (d * math.log(2))
    np.testing.assert_allclose(model.bits_per_dim(x, labels), bpd, rtol=1e-5)


def test_sample_is_seeded_and_tempered():
    model = tiny()
    a = model.sample(3, temperature=0.8, seed=5)
    assert np.array_equal(a, model.sample(3, temperature=0.8, seed=5))
    assert not np.array_equal(a, model.sample(3, temperature=0.8, seed=6))
    # sample(T) is inverse(T * eps) for some eps: its latent divided by T
    # is a standard normal draw, and T = 0 gives the mode, inverse(0).
    mode = model.sample(2, temperature=0.0, seed=5)
    zero = np.zeros((2, model.dim), dtype=np.float32)
    np.testing.assert_allclose(mode, model.inverse(zero), rtol=0, atol=1e-6)
    big = model.sample(64, temperature=1.0, seed=7)
    eps, _ = model.forward(big)
    assert abs(float(eps.mean())) < 0.05 and abs(float(eps.std()) - 1.0) < 0.05


def test_preprocess_postprocess():
    model = tiny(n_bits=5)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(4, *model.image_shape), dtype=np.uint8)
    x = model.preprocess(pixels, seed=3)
    assert x.dtype == np.float32 and x.shape == pixels.shape
    assert x.min() >= -0.5 and x.max() <= 0.5
    assert np.array_equal(x, model.preprocess(pixels, seed=3))
    assert not np.array_equal(x, model.preprocess(pixels, seed=4))
    # 5 bits: each pixel falls in its bin of width 2^-5 ...
    bins = (pixels >> 3).astype(np.float64)
    offset = (x.astype(np.float64) + 0.5) * 32 - bins
    assert offset.min() >= 0 and offset.max() <= 1
    # ... and postprocess gives the bin back, scaled to 0..255
    assert np.array_equal(model.postprocess(x), (pixels >> 3) << 3)


def test_labels_accept_integer_sequences():
    model = glow.Model(**CONFIGS["shuffle-conditional"])
    # the class table starts at zero; perturb every parameter so that the
    # label changes the density
    rng = np.random.default_rng(0)
    model.params[:] += rng.normal(0, 0.01, model.param_count).astype(np.float32)
    x = images(model, 3)
    want = model.log_prob(x, np.array([0, 2, 1], dtype=np.int32))
    assert np.array_equal(model.log_prob(x, [0, 2, 1]), want)
    assert np.array_equal(model.log_prob(x, np.array([0, 2, 1], dtype=np.uint8)), want)
    changed = model.log_prob(x, [1, 2, 1])
    assert changed[0] != want[0] and np.array_equal(changed[1:], want[1:])


def test_concurrent_inference_matches_serial():
    """ctypes drops the GIL; concurrent calls on one model stay exact."""
    model = tiny()
    batches = [images(model, 3, seed=s) for s in range(8)]
    want = [model.forward(b)[0] for b in batches]
    got = [None] * len(batches)

    def work(i):
        got[i] = model.forward(batches[i])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))

"""Every error path: library failures become GlowError with the library's
status and message; misuse caught in Python is a TypeError or ValueError;
no failure corrupts the model."""

from __future__ import annotations

import math

import numpy as np
import pytest

import glow
from conftest import CONFIGS, images, skip_if_unsupported, tiny

S = glow.Status


def _raises(status: glow.Status, fn, *args, **kwargs) -> glow.GlowError:
    """Call fn, expect GlowError with ``status``, check what it carries."""
    with pytest.raises(glow.GlowError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert err.status == status and isinstance(err.status, glow.Status)
    assert err.message and err.message == glow.last_error()
    assert err.message in str(err) and f"GLOW_{status.name}" in str(err)
    assert err.description == glow.status_string(status)
    return err


# ---- library errors ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "status", "text"),
    [
        (dict(height=12, levels=3), S.ERR_SHAPE, "divisible"),
        (dict(channels=0), S.ERR_SHAPE, "shape"),
        (dict(depth=0), S.ERR_CONFIG, "depth"),
        (dict(coupling=7), S.ERR_CONFIG, "coupling"),
        (dict(n_bits=9), S.ERR_CONFIG, "n_bits"),
        (dict(class_weight=math.nan), S.ERR_CONFIG, "class_weight"),
        (dict(size=4), S.ERR_CONFIG_SIZE, "size"),
    ],
)
def test_create_errors(fields, status, text):
    base = dict(height=8, width=8, channels=1, levels=2, depth=1, hidden=4)
    base.update(fields)
    err = _raises(status, glow.Model, **base)
    assert text in err.message


def test_label_errors():
    plain = tiny()
    x = images(plain, 2)
    assert "unconditional" in _raises(S.ERR_LABEL, plain.forward, x, [0, 0]).message
    cond = glow.Model(**CONFIGS["shuffle-conditional"])
    xc = images(cond, 2)
    _raises(S.ERR_LABEL, cond.log_prob, xc)
    _raises(S.ERR_LABEL, cond.inverse, np.zeros((2, cond.dim), np.float32))
    _raises(S.ERR_LABEL, cond.sample, 2)
    assert "labels[1] = 3" in _raises(S.ERR_LABEL, cond.bits_per_dim, xc, [0, 3]).message
    _raises(S.ERR_LABEL, cond.forward, xc, [-1, 0])


def test_batch_errors():
    model = tiny()
    empty = np.empty((0, *model.image_shape), np.float32)
    _raises(S.ERR_BATCH, model.forward, empty)
    _raises(S.ERR_BATCH, model.log_prob, empty)
    _raises(S.ERR_BATCH, model.inverse, np.empty((0, model.dim), np.float32))
    _raises(S.ERR_BATCH, model.postprocess, empty)
    _raises(S.ERR_BATCH, model.preprocess, empty.astype(np.uint8))
    _raises(S.ERR_BATCH, model.sample, 0)
    _raises(S.ERR_BATCH, model.sample, -3)


def test_argument_errors():
    model = tiny()
    _raises(S.ERR_ARG, model.sample, 1, temperature=-0.5)
    _raises(S.ERR_ARG, model.sample, 1, temperature=math.nan)
    _raises(S.ERR_ARG, model.sample, 1, temperature=math.inf)
    assert "level 2" in _raises(S.ERR_ARG, model.latent_layout, 2).message
    _raises(S.ERR_ARG, model.latent_layout, -1)


def test_numeric_errors():
    model = tiny()
    x = images(model, 2)
    x[1, 0, 0, 0] = np.nan
    _raises(S.ERR_NUMERIC, model.forward, x)
    _raises(S.ERR_NUMERIC, model.log_prob, x)
    eps = np.zeros((2, model.dim), np.float32)
    eps[0, 0] = np.inf
    _raises(S.ERR_NUMERIC, model.inverse, eps)


def test_file_errors(tmp_path):
    model = tiny()
    probe = tmp_path / "probe.glow"
    skip_if_unsupported(model.save, probe)
    skip_if_unsupported(glow.Model.load, probe)
    _raises(S.ERR_IO, glow.Model.load, tmp_path / "missing.glow")
    _raises(S.ERR_IO, glow.Model.load, tmp_path)  # a directory
    _raises(S.ERR_IO, model.save, tmp_path / "no" / "such" / "dir.glow")
    garbage = tmp_path / "garbage.glow"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    _raises(S.ERR_FORMAT, glow.Model.load, garbage)
    short = tmp_path / "short.glow"
    short.write_bytes(b"\x01\x02")
    _raises(S.ERR_FORMAT, glow.Model.load, short)


def test_training_call_errors():
    model = tiny()
    x = images(model, 2)
    skip_if_unsupported(model.data_init, x)
    params = model.params.copy()
    _raises(S.ERR_LABEL, model.backward, x, [0, 1])
    _raises(S.ERR_LABEL, model.data_init, x, [0, 1])
    _raises(S.ERR_BATCH, model.backward, x[:0])
    _raises(S.ERR_BATCH, model.data_init, x[:0])
    bad = x.copy()
    bad[0, 1, 2, 0] = np.nan
    _raises(S.ERR_NUMERIC, model.data_init, bad)
    _raises(S.ERR_NUMERIC, model.backward, bad)
    assert np.array_equal(model.params, params) and not model.grads.any()


def test_failures_leave_the_model_unchanged():
    model = tiny()
    x = images(model, 3)
    eps, logdet = model.forward(x)
    params = model.params.copy()
    bad = x.copy()
    bad[0, 0, 0, 0] = np.inf
    for call in (
        lambda: model.forward(bad),
        lambda: model.forward(x, [0, 0, 0]),
        lambda: model.sample(1, temperature=-1.0),
        lambda: model.data_init(bad),
        lambda: model.backward(x, [1, 1, 1]),
    ):
        with pytest.raises(glow.GlowError):
            call()
    assert np.array_equal(model.params, params) and not model.grads.any()
    again, logdet_again = model.forward(x)
    assert np.array_equal(again, eps) and np.array_equal(logdet_again, logdet)


def test_error_objects():
    err = glow.GlowError(-99, "")
    assert err.status == -99 and not isinstance(err.status, glow.Status)
    assert err.description == glow.status_string(-99) == "unknown status"
    assert "-99" in str(err)
    assert glow.status_string(S.OK) == "ok"
    assert all(glow.status_string(s) != "unknown status" for s in S)
    assert issubclass(glow.GlowError, Exception)


# ---- errors caught in Python -------------------------------------------------


def test_wrong_dtype_is_type_error():
    model = tiny()
    x = images(model, 2)
    for bad in (x.astype(np.float64), x.astype(np.float16), x.astype(">f4"), x.tolist(),
                x.astype(np.int32)):
        with pytest.raises(TypeError):
            model.forward(bad)
    with pytest.raises(TypeError, match="dtype"):
        model.inverse(np.zeros((1, model.dim), np.float64))
    with pytest.raises(TypeError, match="uint8"):
        model.preprocess(x)
    cond = glow.Model(**CONFIGS["shuffle-conditional"])
    with pytest.raises(TypeError, match="labels"):
        cond.forward(images(cond, 2), [0.0, 1.0])
    with pytest.raises(TypeError, match="labels"):
        cond.forward(images(cond, 2), [True, False])
    with pytest.raises(TypeError):
        model.sample(2.0)
    with pytest.raises(TypeError):
        model.sample(1, seed=1.5)
    with pytest.raises(TypeError, match="temperature"):
        model.sample(1, temperature="0.5")
    with pytest.raises(TypeError):
        model.latent_layout(0.0)


def test_wrong_shape_is_value_error():
    model = tiny()
    x = images(model, 2)
    h, w, c = model.image_shape
    for bad in (x[0], x.reshape(2, w, h * c), x.reshape(2, -1), x[None], x[..., :1].copy()):
        with pytest.raises(ValueError, match="shape"):
            model.forward(bad)
    with pytest.raises(ValueError, match="shape"):
        model.inverse(np.zeros((2, model.dim + 1), np.float32))
    with pytest.raises(ValueError, match="shape"):
        model.inverse(np.zeros(model.dim, np.float32))
    cond = glow.Model(**CONFIGS["shuffle-conditional"])
    with pytest.raises(ValueError, match="labels"):
        cond.forward(images(cond, 2), [0, 1, 2])
    with pytest.raises(ValueError, match="labels"):
        cond.forward(images(cond, 2), [[0, 1]])
    with pytest.raises(ValueError, match="int32"):
        cond.forward(images(cond, 2), [0, 2**40])


def test_non_contiguous_is_value_error():
    model = tiny()
    wide = images(model, 4)
    assert model.image_shape[0] == model.image_shape[1]  # so the transpose fits
    for bad in (wide[::2], np.asfortranarray(wide), wide.transpose(0, 2, 1, 3)):
        with pytest.raises(ValueError, match="contiguous"):
            model.forward(bad)
    eps = np.zeros((2, 2 * model.dim), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="contiguous"):
        model.inverse(eps)
    # a misaligned buffer
    raw = np.zeros(4 * model.dim * 2 + 1, np.uint8)[1:].view(np.float32)
    with pytest.raises(ValueError, match="aligned"):
        model.inverse(raw.reshape(2, model.dim))


def test_scalar_range_is_value_error():
    model = tiny()
    for seed in (-1, 2**64):
        with pytest.raises(ValueError, match="seed"):
            model.sample(1, seed=seed)
        with pytest.raises(ValueError, match="seed"):
            model.preprocess(np.zeros((1, *model.image_shape), np.uint8), seed=seed)
    with pytest.raises(ValueError, match="int32"):
        model.sample(2**31)
    with pytest.raises(ValueError, match="int32"):
        model.latent_layout(2**31)
    with pytest.raises(ValueError, match="NUL"):
        model.save("bad\0name")
    with pytest.raises(ValueError, match="NUL"):
        glow.Model.load("bad\0name")

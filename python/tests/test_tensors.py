"""Named parameter tensors and run-time options."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import glow
from conftest import CONFIGS, images, tiny


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_tensor_table_matches_c(name, driver, tmp_path):
    model = glow.Model(**CONFIGS[name])
    c = driver.run(tmp_path, CONFIGS[name])
    assert model.tensors() == c["tensors"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_tensors_tile_the_parameter_buffer(name):
    model = glow.Model(**CONFIGS[name])
    tensors = model.tensors()
    assert len({t.name for t in tensors}) == len(tensors)
    offset = 0
    for t in tensors:
        assert t.offset == offset and 1 <= len(t.shape) <= 4 and t.count > 0
        offset += t.count
    assert offset == model.param_count
    assert tensors[0].name == "level.0.step.0.actnorm.bias"
    for t in tensors:
        assert model.tensor(t.name) == t


def test_tensor_shapes_follow_the_config():
    """docs/architecture.md: level 0 of an 8x8x3 image works on 4x4x12."""
    model = tiny()  # 8x8x3, hidden 16
    c, hidden = 12, 16
    assert model.tensor("level.0.step.0.actnorm.logs").shape == (c,)
    assert model.tensor("level.0.step.1.invconv.weight").shape == (c, c)
    assert model.tensor("level.0.step.0.coupling.conv1.weight").shape == (3, 3, c // 2, hidden)
    assert model.tensor("level.0.step.0.coupling.conv2.weight").shape == (hidden, hidden)
    assert model.tensor("level.0.prior.weight").shape == (3, 3, c // 2, c)


def test_param_and_grad_are_views_into_the_flat_buffers():
    model = tiny()
    t = model.tensor("level.0.step.1.coupling.conv2.weight")
    weight = model.param(t.name)
    assert weight.shape == t.shape and not weight.flags.owndata
    weight[2, 3] = 7.25
    assert model.params[t.offset + 2 * t.shape[1] + 3] == 7.25
    grad = model.grad(t.name)
    model.grads[t.offset : t.offset + t.count] = 1.5
    assert (grad == 1.5).all()
    # a named view keeps the model alive as the flat ones do
    handle = weakref.ref(model._handle)
    del model
    gc.collect()
    assert handle() is not None and weight[2, 3] == 7.25
    del weight, grad
    gc.collect()
    assert handle() is None


def test_unknown_tensor_name():
    model = tiny()
    with pytest.raises(glow.GlowError) as info:
        model.param("level.0.step.0.nothing")
    assert info.value.status == glow.Status.ERR_ARG
    assert "level.0.step.0.nothing" in info.value.message
    with pytest.raises(TypeError):
        model.tensor(b"level.0.step.0.actnorm.bias")
    with pytest.raises(ValueError, match="NUL"):
        model.tensor("level.0\0")


def test_option_defaults_and_bounds():
    model = tiny()
    assert model.get_option(glow.Option.BACKWARD_MODE) == glow.BackwardMode.RECOMPUTE
    assert model.get_option(glow.Option.KEEP_WORKSPACE) == 1
    assert glow.option_bounds(glow.Option.BACKWARD_MODE) == (0, 1)
    assert glow.option_bounds(glow.Option.KEEP_WORKSPACE) == (0, 1)
    assert model.get_option(glow.Option.THREADS) == 0
    assert model.get_option(glow.Option.GEMM) == glow.Gemm.AUTO
    assert glow.option_bounds(glow.Option.THREADS) == (0, 256)
    assert glow.option_bounds(glow.Option.GEMM) == (glow.Gemm.AUTO, glow.Gemm.BLAS)
    model.set_option(glow.Option.BACKWARD_MODE, glow.BackwardMode.STORE)
    assert model.get_option(glow.Option.BACKWARD_MODE) == glow.BackwardMode.STORE
    assert tiny().get_option(glow.Option.BACKWARD_MODE) == glow.BackwardMode.RECOMPUTE


def test_option_errors():
    model = tiny()
    for call in (lambda: model.set_option(glow.Option.BACKWARD_MODE, 2),
                 lambda: model.set_option(glow.Option.KEEP_WORKSPACE, -1),
                 lambda: model.set_option(99, 0),
                 lambda: model.get_option(99),
                 lambda: glow.option_bounds(0)):
        with pytest.raises(glow.GlowError) as info:
            call()
        assert info.value.status == glow.Status.ERR_ARG and info.value.message
    assert model.get_option(glow.Option.BACKWARD_MODE) == glow.BackwardMode.RECOMPUTE
    assert model.get_option(glow.Option.KEEP_WORKSPACE) == 1
    with pytest.raises(ValueError, match="int64"):
        model.set_option(glow.Option.BACKWARD_MODE, 2**63)
    with pytest.raises(TypeError):
        model.set_option(glow.Option.BACKWARD_MODE, 1.0)


def test_options_do_not_change_results():
    """STORE gives the loss of RECOMPUTE and its gradients up to rounding;
    keeping the workspace changes nothing at all."""
    results = {}
    for mode in glow.BackwardMode:
        for keep in (0, 1):
            model = tiny()
            x = images(model, 8)
            model.data_init(x)
            model.set_option(glow.Option.BACKWARD_MODE, mode)
            model.set_option(glow.Option.KEEP_WORKSPACE, keep)
            losses = [model.backward(x), model.backward(x[:4])]
            results[mode, keep] = losses, model.grads.copy()
    for mode in glow.BackwardMode:
        assert results[mode, 0][0] == results[mode, 1][0]
        assert np.array_equal(results[mode, 0][1], results[mode, 1][1])
    (loss_r, grad_r), (loss_s, grad_s) = results[0, 0], results[1, 0]
    assert loss_r == pytest.approx(loss_s, rel=1e-6)
    np.testing.assert_allclose(grad_s, grad_r, rtol=1e-3, atol=1e-5 * np.abs(grad_r).max())

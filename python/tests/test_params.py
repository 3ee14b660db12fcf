"""Parameter and gradient views: no copies, live writes, lifetime."""

from __future__ import annotations

import ctypes
import gc
import weakref

import numpy as np
import pytest

import glow
from conftest import images, tiny


def _address(pointer) -> int:
    return ctypes.cast(pointer, ctypes.c_void_p).value


def test_views_are_the_library_buffers():
    model = tiny()
    params, grads = model.params, model.grads
    handle = model._handle.ptr
    assert params.ctypes.data == _address(glow._lib.glow_params(handle))
    assert grads.ctypes.data == _address(glow._lib.glow_grads(handle))
    for view in (params, grads):
        assert view.dtype == np.float32 and view.shape == (model.param_count,)
        assert not view.flags.owndata and view.flags.writeable and view.flags.c_contiguous
    assert not np.shares_memory(params, grads)
    # two views of one buffer see each other's writes
    other = model.params
    params[0] = 123.5
    assert other[0] == 123.5
    assert not grads.any()  # zero after creation


def test_param_writes_reach_the_next_call():
    model = tiny()
    x = images(model, 2)
    before = model.forward(x)[0]
    params = model.params
    saved = params.copy()
    params *= np.float32(1.01)
    assert not np.array_equal(model.forward(x)[0], before)
    params[:] = saved
    assert np.array_equal(model.forward(x)[0], before)


def test_views_keep_the_model_alive():
    model = tiny()
    params, grads = model.params, model.grads
    expected = params.copy()
    handle = weakref.ref(model._handle)
    del model
    gc.collect()
    assert handle() is not None
    # allocate and free other models; the views' memory stays intact
    for seed in range(5):
        tiny(seed=seed).forward(images(tiny(seed=seed), 1))
    assert np.array_equal(params, expected) and not grads.any()
    del params
    gc.collect()
    assert handle() is not None  # grads still holds it
    del grads
    gc.collect()
    assert handle() is None  # freed with the last view


def test_close_frees_once_views_are_gone():
    model = tiny()
    x = images(model, 1)
    handle = weakref.ref(model._handle)
    view = model.params
    with model:
        pass
    assert model.closed
    with pytest.raises(ValueError, match="closed"):
        model.forward(x)
    with pytest.raises(ValueError, match="closed"):
        model.params
    assert handle() is not None and np.isfinite(view).all()
    del view
    gc.collect()
    assert handle() is None
    model.close()  # closing twice is harmless


def test_model_without_views_is_freed_at_once():
    model = tiny()
    handle = weakref.ref(model._handle)
    del model
    gc.collect()
    assert handle() is None


def test_zero_grad_clears_the_view_in_place():
    model = tiny()
    grads = model.grads
    grads[:] = 1.0
    model.zero_grad()
    assert not grads.any()

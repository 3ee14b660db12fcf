"""The binding's mirror of the C API: struct layout, constants, versions,
configuration and model description."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

import glow
from conftest import CONFIGS, loaded_library_file


def test_driver_links_the_library_the_binding_loaded(driver):
    """The C comparisons are meaningful only if both sides run one file."""
    assert os.path.realpath(driver.info()["library"]) == loaded_library_file()


def test_glow_library_env_selects_the_file():
    """GLOW_LIBRARY, when set (as ctest does), is the file that is loaded."""
    path = os.environ.get(glow.LIBRARY_ENV)
    if not path:
        pytest.skip(f"{glow.LIBRARY_ENV} is not set")
    assert loaded_library_file() == os.path.realpath(path)
    assert glow.library_path == path


def _import_glow(env_changes: dict) -> subprocess.CompletedProcess:
    """Import glow in a fresh interpreter; print the file it mapped."""
    env = dict(os.environ)
    env.pop(glow.LIBRARY_ENV, None)
    env.update(env_changes)
    code = (
        "import glow, conftest; print(glow.library_path); "
        "print(conftest.loaded_library_file())"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(glow.__file__)), here])
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)


def test_default_load_is_the_soname(tmp_path):
    """Without GLOW_LIBRARY the binding loads libglow.so.<ABI_MAJOR> through
    the dynamic loader's search path."""
    (tmp_path / f"libglow.so.{glow.ABI_MAJOR}").symlink_to(loaded_library_file())
    proc = _import_glow({"LD_LIBRARY_PATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    name, mapped = proc.stdout.split()
    assert name == f"libglow.so.{glow.ABI_MAJOR}"
    assert mapped == loaded_library_file()


def test_bad_glow_library_is_import_error(tmp_path):
    proc = _import_glow({glow.LIBRARY_ENV: str(tmp_path / "nothing.so")})
    assert proc.returncode != 0
    assert "ImportError: cannot load libglow" in proc.stderr
    assert "nothing.so" in proc.stderr and glow.LIBRARY_ENV in proc.stderr


def test_config_struct_matches_c_layout(driver):
    info = driver.info()
    assert ctypes.sizeof(glow.Config) == int(info["sizeof_config"])
    for name in glow.Config.field_names():
        assert getattr(glow.Config, name).offset == int(info[f"offset_{name}"]), name
    assert len(glow.Config.field_names()) == sum(k.startswith("offset_") for k in info)


def test_constants_match_header(driver):
    info = driver.info()
    for status in glow.Status:
        assert int(info[f"GLOW_{status.name}"]) == status.value, status
    assert {k for k in info if k.startswith("GLOW_ERR_")} == {
        f"GLOW_{s.name}" for s in glow.Status if s.name.startswith("ERR_")
    }
    for member in glow.Coupling:
        assert int(info[f"GLOW_COUPLING_{member.name}"]) == member.value
    for member in glow.Permutation:
        assert int(info[f"GLOW_PERMUTE_{member.name}"]) == member.value
    assert int(info["GLOW_VERSION_MAJOR"]) == glow.ABI_MAJOR


def test_tensor_info_struct_matches_c_layout(driver):
    from glow._model import _TENSOR_MAX_DIMS, _TensorInfo

    info = driver.info()
    assert ctypes.sizeof(_TensorInfo) == int(info["sizeof_tensor_info"])
    for name, _ in _TensorInfo._fields_:
        assert getattr(_TensorInfo, name).offset == int(info[f"tensor_offset_{name}"]), name
    assert _TENSOR_MAX_DIMS == int(info["GLOW_TENSOR_MAX_DIMS"])


def test_option_constants_match_header(driver):
    info = driver.info()
    for member in glow.Option:
        assert int(info[f"GLOW_OPT_{member.name}"]) == member.value
    for member in glow.BackwardMode:
        assert int(info[f"GLOW_BACKWARD_{member.name}"]) == member.value
    for member in glow.Gemm:
        assert int(info[f"GLOW_GEMM_{member.name}"]) == member.value
    assert {k for k in info if k.startswith("GLOW_OPT_")} == {
        f"GLOW_OPT_{m.name}" for m in glow.Option
    }


def test_version_matches_c(driver):
    info = driver.info()
    assert glow.version() == info["version_string"] == glow.__version__
    assert glow.version_number() == int(info["version_number"])
    major, minor, patch = map(int, glow.version().split("."))
    assert glow.version_number() == major * 10000 + minor * 100 + patch
    assert major == glow.ABI_MAJOR


def test_config_defaults_come_from_the_library():
    cfg = glow.Config()
    assert cfg.size == ctypes.sizeof(glow.Config)
    # The contract's defaults.
    assert (cfg.height, cfg.width, cfg.channels) == (32, 32, 3)
    assert (cfg.levels, cfg.depth, cfg.hidden) == (3, 32, 512)
    assert cfg.coupling == glow.Coupling.AFFINE
    assert cfg.permutation == glow.Permutation.CONV1X1
    assert (cfg.n_bits, cfg.n_classes, cfg.learn_top, cfg.seed) == (8, 0, 1, 0)
    assert cfg.class_weight == np.float32(0.01)


def test_config_keywords_and_assignment():
    cfg = glow.Config(height=16, depth=4, seed=2**64 - 1)
    cfg.permutation = glow.Permutation.SHUFFLE
    cfg.class_weight = np.float64(0.5)
    assert (cfg.height, cfg.depth, cfg.seed) == (16, 4, 2**64 - 1)
    assert cfg.permutation == 3 and cfg.class_weight == 0.5
    copy = cfg.copy()
    assert copy == cfg and copy is not cfg
    copy.depth = 5
    assert copy != cfg and cfg.depth == 4
    assert "depth=4" in repr(cfg)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("heigth", 8, AttributeError),        # typo: not silently a new attribute
        ("height", 8.0, TypeError),
        ("height", "8", TypeError),
        ("class_weight", "0.1", TypeError),
        ("height", 2**31, ValueError),        # ctypes alone would wrap it
        ("size", -1, ValueError),
        ("seed", -1, ValueError),
        ("seed", 2**64, ValueError),
        ("class_weight", 1e39, ValueError),   # overflows a C float
    ],
)
def test_config_rejects_bad_fields(field, value, error):
    cfg = glow.Config()
    before = cfg.as_dict()
    with pytest.raises(error):
        setattr(cfg, field, value)
    with pytest.raises(error):
        glow.Config(**{field: value})
    assert cfg.as_dict() == before


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_model_config_round_trips(name):
    fields = CONFIGS[name]
    model = glow.Model(**fields)
    got = model.config
    assert got == glow.Config(**fields)
    assert got.size == ctypes.sizeof(glow.Config)
    # config is a copy: changing it does not touch the model
    got.depth = 99
    assert model.config.depth == fields["depth"]


def test_model_from_config_object_with_overrides():
    cfg = glow.Config(**CONFIGS["affine-conv1x1"])
    model = glow.Model(cfg, depth=1)
    assert model.config.depth == 1 and cfg.depth == CONFIGS["affine-conv1x1"]["depth"]
    with pytest.raises(TypeError):
        glow.Model(dict(CONFIGS["affine-conv1x1"]))


def test_dimensions_and_latent_layout():
    model = glow.Model(height=8, width=4, channels=2, levels=2, depth=1, hidden=4)
    assert model.image_shape == (8, 4, 2)
    assert model.dim == 64
    # docs/architecture.md: level l < L-1 is (H/2^(l+1), W/2^(l+1), C*2^(l+1)),
    # the top (H/2^L, W/2^L, C*2^(L+1)), blocks back to back.
    assert model.latent_levels() == [
        glow.LatentLevel(4, 2, 4, 0),
        glow.LatentLevel(2, 1, 16, 32),
    ]
    assert sum(lv.size for lv in model.latent_levels()) == model.dim


def test_split_latent_returns_views_of_each_level():
    model = glow.Model(height=8, width=4, channels=2, levels=2, depth=1, hidden=4)
    eps = np.arange(3 * model.dim, dtype=np.float32).reshape(3, model.dim)
    first, top = model.split_latent(eps)
    assert first.shape == (3, 4, 2, 4) and top.shape == (3, 2, 1, 16)
    assert np.array_equal(first.reshape(3, -1), eps[:, :32])
    assert np.array_equal(top.reshape(3, -1), eps[:, 32:])
    original = eps.copy()
    top[...] = 0
    assert not eps[:, 32:].any()
    assert np.array_equal(eps[:, :32], original[:, :32])


def test_param_count_matches_parameter_table():
    """docs/architecture.md's table, for a one-level, one-step plain model."""
    c, hidden = 4 * 2, 5  # 4x4x2 image, squeezed to 2x2x8
    model = glow.Model(height=4, width=4, channels=2, levels=1, depth=1, hidden=hidden)
    expected = (
        2 * c                              # actnorm bias, logs
        + c * c                            # 1x1 weight
        + 9 * (c // 2) * hidden            # conv1
        + 2 * hidden                       # actnorm1
        + hidden * hidden                  # conv2
        + 2 * hidden                       # actnorm2
        + 9 * hidden * c + 2 * c           # conv3 weight, bias, logs (affine: c outputs)
        + 2 * 2 * 2 * c                    # top prior (h, w, 2c)
    )
    assert model.param_count == expected
    assert model.params.shape == (expected,)

"""The package as pip installs it: its version is the library's, and an
installed package loads the installed library by itself.

tests/python_install.sh runs the whole suite against a package installed
by pip, with GLOW_TEST_INSTALLED naming the installation and
GLOW_TEST_PREFIX the prefix the library was installed into; the tests that
need them are skipped in the source tree.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

import pytest

import glow
from conftest import HERE

INSTALLED = os.environ.get("GLOW_TEST_INSTALLED")
PREFIX = os.environ.get("GLOW_TEST_PREFIX")


def load_setup_py():
    """python/setup.py as a module (it calls setup() only as a script)."""
    spec = importlib.util.spec_from_file_location("glow_setup", HERE.parent / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_package_version_is_the_headers():
    """setup.py reads the version that the library was compiled with."""
    setup = load_setup_py()
    assert setup.header_version() == glow.version()
    major, minor, patch = map(int, setup.header_version().split("."))
    assert major * 10000 + minor * 100 + patch == glow.version_number()


@pytest.mark.skipif(not INSTALLED, reason="runs against a pip-installed package")
def test_installed_package():
    """The package under test is the installed one, its metadata carries
    the library's version, and it found the library in the install prefix
    without GLOW_LIBRARY or LD_LIBRARY_PATH."""
    assert Path(glow.__file__).resolve().is_relative_to(Path(INSTALLED).resolve())
    assert importlib.metadata.version("libglow") == glow.version()
    from glow import _build_info

    assert _build_info.VERSION == glow.version()
    assert "GLOW_LIBRARY" not in os.environ and "LD_LIBRARY_PATH" not in os.environ
    assert Path(glow.library_path).resolve().is_relative_to(Path(PREFIX).resolve())

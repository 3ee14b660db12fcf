"""Build hooks of the glow package (the rest is in pyproject.toml).

- The version comes from the library's header, include/glow.h, next to this
  directory in the libglow source tree, so the two cannot drift.
- The built package records where pkg-config finds an installed libglow
  (``pkg-config --variable=libdir glow``, honouring PKG_CONFIG_PATH), so
  that it loads that libglow.so.0 without GLOW_LIBRARY or LD_LIBRARY_PATH.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HEADER = Path(__file__).resolve().parent.parent / "include" / "glow.h"


def header_version() -> str:
    """MAJOR.MINOR.PATCH from the GLOW_VERSION_* macros of include/glow.h."""
    try:
        text = HEADER.read_text(encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"glow package: cannot read {HEADER} ({exc}); build the "
                         "package from the libglow source tree") from None
    parts = []
    for part in ("MAJOR", "MINOR", "PATCH"):
        match = re.search(rf"^#define GLOW_VERSION_{part} (\d+)$", text, re.MULTILINE)
        if not match:
            raise SystemExit(f"glow package: no GLOW_VERSION_{part} in {HEADER}")
        parts.append(match.group(1))
    return ".".join(parts)


def installed_libdir() -> str | None:
    """Where pkg-config says libglow is installed, or None."""
    try:
        out = subprocess.run(["pkg-config", "--variable=libdir", "glow"],
                             capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    libdir = out.stdout.strip()
    return os.path.normpath(libdir) if out.returncode == 0 and libdir else None


class BuildPy(build_py):
    """build_py, plus glow/_build_info.py with the version and libdir."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "glow" / "_build_info.py"
        target.write_text(
            '"""Written when the package was built (setup.py)."""\n\n'
            f"#: The version of include/glow.h the package was built from.\n"
            f"VERSION = {header_version()!r}\n"
            f"#: pkg-config's libdir of libglow at build time, or None.\n"
            f"LIBDIR = {installed_libdir()!r}\n",
            encoding="utf-8")


if __name__ == "__main__":  # as pip's build backend runs it
    setup(version=header_version(), cmdclass={"build_py": BuildPy})

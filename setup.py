"""Build hook: the gRPC Python code is generated from ``protos/`` when the package is built.

``build_py`` (used by ``pip install .``, ``pip wheel`` and ``pip install -e .``) first brings
``serving/_generated/`` up to date with the ``.proto``; setuptools then packages it as
``recsys_serving._generated`` like any other package, or, for an editable install, serves it
from the source tree. Everything else about the project is in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _protogen() -> ModuleType:
    """recsys_serving.protogen, loaded by path: importing the package needs its dependencies."""
    path = ROOT / "serving" / "protogen.py"
    spec = importlib.util.spec_from_file_location("_recsys_protogen", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithProtos(build_py):
    """``build_py`` that generates the gRPC code before it lists any package's files."""

    def finalize_options(self) -> None:
        # Every command that asks for the packages' files (egg_info's file list, build,
        # editable_wheel) finalizes build_py first; the listing itself is lazy.
        _protogen().ensure_generated(ROOT / "protos", ROOT / "serving" / "_generated")
        super().finalize_options()


setup(cmdclass={"build_py": BuildPyWithProtos})

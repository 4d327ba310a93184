"""pyproject.toml's package list holds every package of the source tree, so wheels are whole."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_source_package_is_listed_for_the_wheel() -> None:
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in tool["package-dir"].items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            relative = init.parent.relative_to(root)
            if "_generated" in relative.parts:  # written by `make install`, not source
                continue
            found.add(".".join([name, *relative.parts]))
    assert "recsys.index" in found  # the walk does find subpackages
    assert sorted(found) == sorted(tool["packages"])

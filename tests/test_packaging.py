"""Packaging: every source package is in the wheel, and a built wheel installs and serves."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GENERATED = "recsys_serving._generated"
# pip without the network: no dependencies, build requirements from this venv.
OFFLINE = ["--quiet", "--no-deps", "--no-index"]
# What the installed package imports the service's code from.
WHERE = (
    "import json, recsys_serving.proto as p; print(json.dumps([p.pb2.__file__, p.SERVICE_NAME]))"
)


def _setuptools_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_source_package_is_listed_for_the_wheel() -> None:
    tool = _setuptools_config()
    found = {GENERATED}  # written by setup.py's build hook, not in git
    for name, folder in tool["package-dir"].items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            relative = init.parent.relative_to(root)
            if "_generated" in relative.parts:
                continue
            found.add(".".join([name, *relative.parts]))
    assert "recsys.index" in found  # the walk does find subpackages
    assert sorted(found) == sorted(tool["packages"])


def _build_wheel(tmp_path: Path) -> Path:
    """A wheel built from a copy of the sources without generated code, as from a clone."""
    src, dist = tmp_path / "src", tmp_path / "dist"
    ignore = shutil.ignore_patterns("_generated", ".*", "__pycache__", "generated")
    for folder in {*_setuptools_config()["package-dir"].values(), "protos"}:
        shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(REPO / name, src / name)
    # No build isolation: setuptools and grpcio-tools come from this venv, not the network.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *OFFLINE, "--no-build-isolation", "-w", dist, src],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("recsys-*.whl")
    return wheel


def _venv_with(wheel: Path, venv: Path) -> Path:
    """A new venv holding only the wheel; its dependencies are this venv's (a .pth points to
    them, so TensorFlow is not downloaded again). Returns its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv)}))
    # Every site-packages this process sees (its venv's may itself extend the path by a .pth).
    deps = [p for p in sys.path if Path(p).name == "site-packages" and Path(p) != site]
    (site / "dependencies.pth").write_text("".join(f"{p}\n" for p in deps))
    # --ignore-installed: never uninstall the recsys this venv sees through the .pth.
    subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", *OFFLINE, "--ignore-installed", wheel],
        check=True,
        timeout=300,
    )
    return site


@contextlib.contextmanager
def _serving(venv: Path, artifacts: Path, cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """``recsys serve`` of the venv on a free port, stopped (SIGTERM, exit 0) afterwards."""
    port_file, log = cwd / "port", cwd / "serve.log"
    command: list[str | Path] = [
        venv / "bin" / "recsys",
        "serve",
        "--artifacts",
        artifacts,
        "--name",
        "tiny",
    ]
    with log.open("w") as stderr:
        server = subprocess.Popen(
            [*command, "--port=0", "--port-file", port_file], cwd=cwd, env=env, stderr=stderr
        )
    try:
        deadline = time.monotonic() + 120
        while not port_file.is_file():
            assert server.poll() is None, f"recsys serve exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"recsys serve did not listen: {log.read_text()}"
            time.sleep(0.2)
        yield f"127.0.0.1:{int(port_file.read_text())}"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert server.returncode == 0, log.read_text()


@pytest.mark.slow
def test_a_built_wheel_serves_from_outside_the_source_tree(
    trained_artifact: Path, tmp_path: Path
) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"recsys_serving/_generated/{n}" for n in ("recommender_pb2.py", "STAMP")} <= names
    venv = tmp_path / "venv"
    site = _venv_with(wheel, venv)
    outside = tmp_path / "outside"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args: str | Path) -> str:
        done = subprocess.run(
            args, cwd=outside, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    module, service = json.loads(run(venv / "bin" / "python", "-c", WHERE))
    assert Path(module) == site / "recsys_serving" / "_generated" / "recommender_pb2.py"
    assert service == "recsys.v1.Recommender"

    artifacts = outside / "artifacts"
    shutil.copytree(
        trained_artifact.parent, artifacts / "tiny", ignore=shutil.ignore_patterns(".*")
    )
    with _serving(venv, artifacts, outside, env) as target:
        ask = ["recommend", "--target", target, "--wait=120", "--search", "music", "--k=3"]
        reply = run(venv / "bin" / "recsys", *ask)
    assert reply.startswith("model tiny/"), reply
    assert len(reply.splitlines()) == 2 + 3  # headline, header, one line per video

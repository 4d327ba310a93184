"""The generated gRPC code in a source checkout: generated once, checked at import, regenerated.

Each test works on a copy of ``serving/`` and ``protos/`` laid out as a checkout, imported
as ``recsys_serving`` by a subprocess, so the worktree's own generated code is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_serving import protogen

REPO = Path(__file__).resolve().parents[2]
IMPORT = "import recsys_serving.proto as p; print(p.SERVICE_NAME, p.pb2.RecommendRequest(k=3).k)"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of serving/ and protos/, with the code generated as an install does."""
    shutil.copytree(
        REPO / "serving", tmp_path / "serving", ignore=shutil.ignore_patterns("_generated*")
    )
    shutil.copytree(REPO / "protos", tmp_path / "protos")
    (tmp_path / "view").mkdir()
    (tmp_path / "view" / "recsys_serving").symlink_to(tmp_path / "serving")
    protogen.ensure_generated(tmp_path / "protos", tmp_path / "serving" / "_generated")
    return tmp_path


def _python(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python *args`` with the copy as recsys_serving (recsys itself from the worktree)."""
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        env=_env(checkout),
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _env(checkout: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{checkout / 'view'}{os.pathsep}{REPO}"}


def _edit_proto(checkout: Path) -> None:
    proto = checkout / "protos" / protogen.PROTO_FILE
    proto.write_text(proto.read_text() + "\n// an edit\n")


def test_generation_is_skipped_while_current_and_redone_after_an_edit(tmp_path: Path) -> None:
    protos = shutil.copytree(REPO / "protos", tmp_path / "protos")
    out = tmp_path / "out"
    assert not protogen.is_current(protos, out)
    assert protogen.ensure_generated(protos, out)
    assert protogen.is_current(protos, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "STAMP",
        "__init__.py",
        "recommender_pb2.py",
        "recommender_pb2.pyi",
        "recommender_pb2_grpc.py",
    ]
    grpc_module = (out / "recommender_pb2_grpc.py").read_text()
    assert "from . import recommender_pb2 as" in grpc_module
    assert "from recsys.v1 import" not in grpc_module
    assert not protogen.ensure_generated(protos, out)
    (protos / protogen.PROTO_FILE).write_text(
        (protos / protogen.PROTO_FILE).read_text() + "\n// an edit\n"
    )
    assert not protogen.is_current(protos, out)
    assert protogen.ensure_generated(protos, out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_import_refuses_code_older_than_the_proto_and_names_the_fix(checkout: Path) -> None:
    fresh = _python(checkout, "-c", IMPORT)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.split() == ["recsys.v1.Recommender", "3"]

    _edit_proto(checkout)
    stale = _python(checkout, "-c", IMPORT)
    assert stale.returncode != 0
    assert "ProtoError" in stale.stderr
    assert "older than" in stale.stderr
    assert "make proto" in stale.stderr

    regenerated = _python(checkout, "-m", "recsys_serving.protogen")
    assert regenerated.returncode == 0, regenerated.stderr
    assert _python(checkout, "-c", IMPORT).returncode == 0


def test_import_without_generated_code_names_the_fix(checkout: Path) -> None:
    shutil.rmtree(checkout / "serving" / "_generated")
    missing = _python(checkout, "-c", IMPORT)
    assert missing.returncode != 0
    assert "generated gRPC code missing" in missing.stderr
    assert "python -m recsys_serving.protogen" in missing.stderr


def test_racing_regenerations_neither_fail_nor_tear_the_code(checkout: Path) -> None:
    _edit_proto(checkout)
    racers = [
        subprocess.Popen(
            [sys.executable, "-m", "recsys_serving.protogen"],
            env=_env(checkout),
            cwd=checkout,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    errors = [r.communicate(timeout=120)[1] for r in racers]
    assert [r.returncode for r in racers] == [0, 0, 0], errors
    assert _python(checkout, "-c", IMPORT).returncode == 0
    leftovers = [p.name for p in (checkout / "serving").glob("._generated.*")]
    assert leftovers == []


def test_generation_works_in_a_process_that_has_loaded_tensorflow(tmp_path: Path) -> None:
    protos = shutil.copytree(REPO / "protos", tmp_path / "protos")
    code = (
        "import sys, tensorflow; from pathlib import Path; "
        "from recsys_serving import protogen; "
        "protogen.ensure_generated(Path(sys.argv[1]), Path(sys.argv[2]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, protos, tmp_path / "out"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert protogen.is_current(protos, tmp_path / "out")

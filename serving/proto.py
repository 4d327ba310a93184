"""The service's Python code, generated from ``protos/`` and never stale: ``pb2``, ``pb2_grpc``.

``serving/_generated/`` (git-ignored) holds the output of ``grpc_tools.protoc`` and a
``STAMP`` with the sha256 of the ``.proto`` and the generator's version. Importing this
module regenerates the code when the stamp differs; ``python -m recsys_serving.proto`` does
it ahead of time (``make install``). Generation writes a temporary folder and renames it into
place under an advisory lock on the ``.proto``, so two processes that race neither tear the
files nor import a half-written module.

protoc writes ``from recsys.v1 import recommender_pb2`` into the gRPC module, a bare import
that would resolve against our own ``recsys`` package; it is rewritten to a relative import.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

log = logging.getLogger(__name__)

PROTO_ROOT = Path(__file__).resolve().parent.parent / "protos"
PROTO_FILE = "recsys/v1/recommender.proto"
GENERATED_DIR = Path(__file__).resolve().parent / "_generated"
STAMP_FILE = "STAMP"
_MODULES = ("recommender_pb2", "recommender_pb2_grpc")
_GENERATOR_REVISION = 1  # bump when _generate's post-processing changes
_BARE_IMPORT = re.compile(r"^from recsys\.v1 import recommender_pb2 as ", re.MULTILINE)


class ProtoError(RuntimeError):
    """The service's Python code cannot be generated or imported."""


def proto_path() -> Path:
    """The service contract's ``.proto`` file."""
    return PROTO_ROOT / PROTO_FILE


def expected_stamp() -> str:
    """sha256 of the ``.proto`` plus the generators' versions: what ``STAMP`` must say."""
    path = proto_path()
    if not path.is_file():
        raise ProtoError(f"{path}: missing; recsys_serving needs the source tree's protos/")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"{digest} grpcio-tools=={version('grpcio-tools')} rev{_GENERATOR_REVISION}"


def _current_stamp() -> str | None:
    try:
        return (GENERATED_DIR / STAMP_FILE).read_text().strip()
    except OSError:
        return None


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """An exclusive advisory lock between processes (on the .proto, which always exists)."""
    with proto_path().open("rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _generate(stamp: str) -> None:
    """Run protoc into a temporary sibling folder and swap it in for ``_generated/``."""
    from grpc_tools import protoc

    parent = GENERATED_DIR.parent
    tmp = parent / f".{GENERATED_DIR.name}.tmp-{uuid.uuid4().hex[:8]}"
    old = parent / f".{GENERATED_DIR.name}.old-{uuid.uuid4().hex[:8]}"
    out = tmp / "out"
    out.mkdir(parents=True)
    try:
        include = str(Path(protoc.__file__).parent / "_proto")
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(proto_path()),
        ]
        code = protoc.main(args)
        if code != 0:
            raise ProtoError(f"protoc failed on {proto_path()} (exit code {code}); see stderr")
        produced = out / Path(PROTO_FILE).parent
        for name in ("recommender_pb2.py", "recommender_pb2.pyi"):
            shutil.move(produced / name, tmp / name)
        grpc_code = (produced / "recommender_pb2_grpc.py").read_text()
        grpc_code, count = _BARE_IMPORT.subn("from . import recommender_pb2 as ", grpc_code)
        if count != 1:
            raise ProtoError("protoc's gRPC module changed shape: cannot make its import relative")
        # protoc's gRPC module is untyped; the .pyi covers the messages.
        (tmp / "recommender_pb2_grpc.py").write_text("# mypy: ignore-errors\n" + grpc_code)
        shutil.rmtree(out)
        (tmp / "__init__.py").write_text(
            '"""Generated from protos/ by recsys_serving.proto: do not edit, do not commit."""\n'
        )
        (tmp / STAMP_FILE).write_text(stamp + "\n")  # last: marks the folder complete
        if GENERATED_DIR.exists():
            os.rename(GENERATED_DIR, old)
        os.rename(tmp, GENERATED_DIR)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    log.info("generated gRPC code from %s into %s", proto_path(), GENERATED_DIR)


def ensure_generated() -> None:
    """Generate (if stale or missing) and import the service's modules; ProtoError if not."""
    stamp = expected_stamp()
    with _locked():
        if _current_stamp() != stamp:
            if any(f"{__package__}._generated.{m}" in sys.modules for m in _MODULES):
                raise ProtoError(
                    "the .proto changed after this process imported its generated code: restart"
                )
            try:
                _generate(stamp)
            except OSError as exc:
                raise ProtoError(
                    f"cannot write {GENERATED_DIR} ({exc}); run `python -m recsys_serving.proto` "
                    "as the user who installed recsys"
                ) from exc
            importlib.invalidate_caches()
        for module in _MODULES:
            importlib.import_module(f"{__package__}._generated.{module}")


ensure_generated()

from recsys_serving._generated import recommender_pb2 as pb2  # noqa: E402
from recsys_serving._generated import recommender_pb2_grpc as pb2_grpc  # noqa: E402

SERVICE_NAME: str = pb2.DESCRIPTOR.services_by_name["Recommender"].full_name

__all__ = ["SERVICE_NAME", "ProtoError", "ensure_generated", "pb2", "pb2_grpc"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log.info("%s is up to date (%s)", GENERATED_DIR, _current_stamp())

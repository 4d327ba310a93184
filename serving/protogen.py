"""Generates the service's gRPC Python code from ``protos/`` into ``serving/_generated/``.

One generator for two callers: ``setup.py``'s build hook (``pip install .``, ``pip wheel``,
``pip install -e .``), which loads this file by path because the build environment has
``grpcio-tools`` but not recsys's own dependencies, and ``python -m recsys_serving.protogen``
(``make proto``), which regenerates an editable checkout after the ``.proto`` changes.
Standard library only: protoc (``grpcio-tools``) runs in a child process.

The folder gets a ``STAMP``: its first line is the sha256 of the ``.proto`` and the revision
of the post-processing below, what the code depends on; the second names the generator's
version. The code is written to a temporary sibling folder and renamed into place under an
advisory lock on the ``.proto``, so a racing build neither tears the files nor lets a reader
import a half-written module.

protoc writes ``from recsys.v1 import recommender_pb2`` into the gRPC module, a bare import
that would resolve against our own ``recsys`` package; it is rewritten to a relative import.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

log = logging.getLogger(__name__)

# In a source checkout (or an editable install) this file is serving/protogen.py.
SOURCE_PROTO_ROOT = Path(__file__).resolve().parent.parent / "protos"
SOURCE_GENERATED_DIR = Path(__file__).resolve().parent / "_generated"
PROTO_FILE = "recsys/v1/recommender.proto"
STAMP_FILE = "STAMP"
_REVISION = 2  # bump when generate()'s post-processing changes
_BARE_IMPORT = re.compile(r"^from recsys\.v1 import recommender_pb2 as ", re.MULTILINE)


class ProtoGenError(RuntimeError):
    """protoc failed, or its output is not what the post-processing expects."""


def source_stamp(proto_root: Path) -> str:
    """What the generated code depends on: the ``.proto``'s sha256 and our revision."""
    digest = hashlib.sha256((proto_root / PROTO_FILE).read_bytes()).hexdigest()
    return f"{digest} rev{_REVISION}"


def is_current(proto_root: Path, out_dir: Path) -> bool:
    """Whether ``out_dir`` holds complete code generated from ``proto_root``'s ``.proto``."""
    try:
        stamp = (out_dir / STAMP_FILE).read_text().splitlines()
    except OSError:
        return False
    return bool(stamp) and stamp[0] == source_stamp(proto_root)


def ensure_generated(proto_root: Path, out_dir: Path, force: bool = False) -> bool:
    """Generate ``out_dir`` from ``proto_root`` unless it is current; True if it generated."""
    with _locked(proto_root / PROTO_FILE):
        if not force and is_current(proto_root, out_dir):
            return False
        generate(proto_root, out_dir)
        return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock between processes (on the .proto, which always exists)."""
    with path.open("rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def generate(proto_root: Path, out_dir: Path) -> None:
    """Run protoc on ``proto_root``'s ``.proto`` and swap the result in for ``out_dir``."""
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
    raw = tmp / "protoc"
    raw.mkdir(parents=True)
    try:
        proto = proto_root / PROTO_FILE
        outputs = [f"--python_out={raw}", f"--pyi_out={raw}", f"--grpc_python_out={raw}"]
        # protoc in its own process: importing grpc_tools' compiler into a process that has
        # imported TensorFlow crashes it (segmentation fault), and a caller may have.
        command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}", *outputs]
        code = subprocess.run([*command, str(proto)], check=False).returncode
        if code != 0:
            raise ProtoGenError(f"protoc failed on {proto} (exit code {code}); see stderr")
        _post_process(raw / Path(PROTO_FILE).parent, tmp)
        shutil.rmtree(raw)
        (tmp / "__init__.py").write_text(
            '"""Generated from protos/ by recsys_serving.protogen: do not edit, do not commit."""\n'
        )
        tools = f"grpcio-tools=={version('grpcio-tools')}"
        (tmp / STAMP_FILE).write_text(f"{source_stamp(proto_root)}\n{tools}\n")  # last
        if out_dir.exists():
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    log.info("generated gRPC code from %s into %s", proto, out_dir)


def _post_process(produced: Path, dest: Path) -> None:
    """Move protoc's modules to ``dest``; make the gRPC module's import relative."""
    for name in ("recommender_pb2.py", "recommender_pb2.pyi"):
        shutil.move(produced / name, dest / name)
    grpc_code = (produced / "recommender_pb2_grpc.py").read_text()
    grpc_code, count = _BARE_IMPORT.subn("from . import recommender_pb2 as ", grpc_code)
    if count != 1:
        raise ProtoGenError("protoc's gRPC module changed shape: cannot make its import relative")
    # protoc's gRPC module is untyped; the .pyi covers the messages.
    (dest / "recommender_pb2_grpc.py").write_text("# mypy: ignore-errors\n" + grpc_code)


def main() -> int:
    """Regenerate a source checkout's ``serving/_generated/`` (always, even if current)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (SOURCE_PROTO_ROOT / PROTO_FILE).is_file():
        log.error("%s: missing; regeneration needs a source checkout", SOURCE_PROTO_ROOT)
        return 1
    ensure_generated(SOURCE_PROTO_ROOT, SOURCE_GENERATED_DIR, force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

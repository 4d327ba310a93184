"""Versioned model artifacts: ``artifacts/<name>/<version>/`` with a checksummed manifest.

A version folder is built under a temporary name and renamed into place when every file is
written; ``manifest.json`` records the schema version, config, data fingerprint, metrics and
a sha256 for every file; ``artifacts/<name>/LATEST`` names the current version and is
replaced atomically, last. Nothing here uses pickle: loading an artifact cannot run code.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recsys.artifact.layout import LATEST, MANIFEST
from recsys.dataset.io import sha256_file

log = logging.getLogger(__name__)

ARTIFACT_SCHEMA_VERSION = 1
_VERSION_RE = re.compile(r"^v(\d{4,})$")


class ArtifactError(Exception):
    """An artifact is missing, incomplete, corrupt or of an unknown format."""


@dataclass
class Manifest:
    """What ``manifest.json`` records about one model version."""

    name: str
    version: str
    schema_version: int = ARTIFACT_SCHEMA_VERSION
    created_at: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # dataset path, fingerprint, split
    metrics: dict[str, Any] = field(default_factory=dict)
    index: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None  # the version this one was derived from (index add/tune)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256

    def to_json(self) -> str:
        """The JSON text of ``manifest.json``."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def next_version(model_dir: Path) -> str:
    """The next free version name in ``model_dir`` (v0001, v0002, ...)."""
    numbers = [int(m.group(1)) for p in model_dir.glob("v*") if (m := _VERSION_RE.match(p.name))]
    return f"v{max(numbers, default=0) + 1:04d}"


def read_manifest(version_dir: str | Path) -> Manifest:
    """Read a version's manifest; clear errors for a missing or malformed one."""
    path = Path(version_dir) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; {version_dir} is not a complete artifact version")
    try:
        raw = json.loads(path.read_text())
        manifest = Manifest(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ArtifactError(f"{path}: malformed manifest ({exc})") from exc
    if manifest.schema_version != ARTIFACT_SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: artifact schema version {manifest.schema_version}, this recsys reads "
            f"{ARTIFACT_SCHEMA_VERSION}"
        )
    return manifest


def verify_artifact(version_dir: str | Path) -> Manifest:
    """Check every file of a version against the manifest's sha256; returns the manifest."""
    version_dir = Path(version_dir)
    manifest = read_manifest(version_dir)
    for rel, digest in manifest.files.items():
        path = version_dir / rel
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != digest:
            raise ArtifactError(f"{path}: sha256 does not match the manifest (corrupt or edited)")
    extra = {str(p.relative_to(version_dir)) for p in _files_under(version_dir)} - set(
        manifest.files
    )
    if extra:
        raise ArtifactError(f"{version_dir}: files not in the manifest: {sorted(extra)[:5]}")
    return manifest


def resolve_version(path: str | Path) -> Path:
    """A version folder from either itself or its model folder (which names it in LATEST)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    latest = path / LATEST
    if latest.is_file():
        version = latest.read_text().strip()
        if not _VERSION_RE.match(version):
            raise ArtifactError(f"{latest}: does not name a version ({version!r})")
        target = path / version
        if not target.is_dir():
            raise ArtifactError(f"{latest}: names {version}, which does not exist in {path}")
        return target
    raise ArtifactError(
        f"{path}: neither an artifact version (no {MANIFEST}) nor a model folder (no {LATEST})"
    )


def set_latest(model_dir: Path, version: str) -> None:
    """Point ``LATEST`` at ``version`` atomically (write a temporary file, then replace)."""
    tmp = model_dir / f".{LATEST}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(version + "\n")
    os.replace(tmp, model_dir / LATEST)


@contextmanager
def write_version(
    artifacts: str | Path,
    name: str,
    manifest: Manifest,
    base: Path | None = None,
    update_latest: bool = True,
) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it becomes ``artifacts/<name>/<version>``.

    With ``base``, the new folder starts as a copy of that version (copied, not hard-linked,
    so that writing a file in the new version can never change the old one). The manifest's
    sha256s are computed from what is finally there.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"model name must be letters, digits, '.', '_' or '-', got {name!r}")
    model_dir = Path(artifacts) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".tmp-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    try:
        if base is not None:
            shutil.copytree(base, tmp)
            (tmp / MANIFEST).unlink(missing_ok=True)
        else:
            tmp.mkdir()
        yield tmp
        manifest.files = {str(p.relative_to(tmp)): sha256_file(p) for p in _files_under(tmp)}
        manifest.name = name
        manifest.created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for _ in range(100):
            manifest.version = next_version(model_dir)
            (tmp / MANIFEST).write_text(manifest.to_json() + "\n")
            try:
                os.rename(tmp, model_dir / manifest.version)
                break
            except OSError:  # another job took this version number meanwhile
                continue
        else:  # pragma: no cover - would need 100 concurrent writers
            raise ArtifactError(f"{model_dir}: could not claim a version name")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if update_latest:
        set_latest(model_dir, manifest.version)
    log.info(
        "wrote artifact %s/%s (%d files) in %.1f s",
        model_dir,
        manifest.version,
        len(manifest.files),
        time.perf_counter() - started,
    )

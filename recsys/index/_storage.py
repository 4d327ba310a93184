"""Index directories on disk: an `index.json` manifest with checksums, no pickle, atomic swap."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recsys.index.base import IndexConfig, IndexLoadError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "index.json"
_HASH_CHUNK_BYTES = 1 << 22


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of the file at `path`."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def save_array(path: Path, array: np.ndarray) -> None:
    """Write `array` as .npy; object arrays are refused so that no pickle is ever written."""
    np.save(path, array, allow_pickle=False)


def ids_to_array(ids: list[str]) -> np.ndarray:
    """Return ids as a fixed-width unicode array `[n]` (storable without pickle)."""
    return np.asarray(ids, dtype=np.str_) if ids else np.empty(0, dtype="<U1")


def write_index_dir(
    directory: str | Path, manifest: dict[str, Any], write_files: Callable[[Path], None]
) -> None:
    """Write files into a temporary sibling, add `index.json` with checksums, swap into place."""
    target = Path(directory)
    if target.exists() and not _is_replaceable(target):
        raise ValueError(
            f"directory {target} exists and is not an index directory (no {MANIFEST_NAME}); "
            "refusing to replace it: pass a new or empty directory"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write_files(staging)
        files = {
            path.relative_to(staging).as_posix(): sha256_file(path)
            for path in sorted(staging.rglob("*"))
            if path.is_file()
        }
        full_manifest = {"format_version": FORMAT_VERSION, **manifest, "files": files}
        manifest_path = staging / MANIFEST_NAME
        with manifest_path.open("w", encoding="utf-8") as handle:
            json.dump(full_manifest, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        # mkdtemp makes the directory private (0700); an index is an ordinary artifact.
        staging.chmod(0o755)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("saved %s index to %s (%d files)", manifest.get("kind"), target, len(files))


def _is_replaceable(target: Path) -> bool:
    return target.is_dir() and (not any(target.iterdir()) or (target / MANIFEST_NAME).is_file())


def _swap_into_place(staging: Path, target: Path) -> None:
    # Two renames: a reader sees the old complete index or the new one, never a half-written one.
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _read_manifest_json(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise IndexLoadError(directory, "no such directory")
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise IndexLoadError(
            manifest_path, "missing file: not an index directory (save() writes it)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexLoadError(manifest_path, f"unreadable JSON: {error}") from error
    if not isinstance(manifest, dict):
        raise IndexLoadError(manifest_path, "expected a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexLoadError(
            manifest_path, f"format version {version!r}; this code reads version {FORMAT_VERSION}"
        )
    return manifest


def read_kind(directory: str | Path) -> str:
    """Return the index kind recorded in `directory/index.json`."""
    directory = Path(directory)
    kind = _read_manifest_json(directory).get("kind")
    if kind not in ("exact", "scann"):
        raise IndexLoadError(directory / MANIFEST_NAME, f"unknown index kind {kind!r}")
    return str(kind)


def read_manifest(
    directory: str | Path, kind: str, expected_dim: int | None
) -> tuple[dict[str, Any], IndexConfig]:
    """Check version, kind, dim and every file's sha256; return the manifest and config."""
    directory = Path(directory)
    manifest = _read_manifest_json(directory)
    manifest_path = directory / MANIFEST_NAME
    if manifest.get("kind") != kind:
        raise IndexLoadError(
            manifest_path,
            f"holds a {manifest.get('kind')!r} index, not {kind!r}: use load_index() to load "
            "any kind",
        )
    dim = manifest.get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise IndexLoadError(manifest_path, f"dim must be a positive int: got {dim!r}")
    if expected_dim is not None and dim != expected_dim:
        raise IndexLoadError(
            manifest_path,
            f"wrong dim: the index has dimension {dim} but {expected_dim} was expected",
        )
    count = manifest.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise IndexLoadError(manifest_path, f"count must be a non-negative int: got {count!r}")
    try:
        config = IndexConfig.from_dict(manifest.get("config") or {})
    except (TypeError, ValueError) as error:
        raise IndexLoadError(manifest_path, f"bad config: {error}") from error
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise IndexLoadError(manifest_path, "has no 'files' table of checksums")
    _verify_files(directory, files)
    return manifest, config


def _verify_files(directory: Path, files: dict[str, Any]) -> None:
    root = directory.resolve()
    for name, expected in sorted(files.items()):
        path = directory / name
        if not path.resolve().is_relative_to(root) or not isinstance(expected, str):
            raise IndexLoadError(directory / MANIFEST_NAME, f"bad files entry {name!r}")
        if not path.is_file():
            raise IndexLoadError(path, "missing file listed in index.json")
        actual = sha256_file(path)
        if actual != expected:
            raise IndexLoadError(
                path,
                f"checksum mismatch: sha256 {actual[:12]}..., index.json expects "
                f"{expected[:12]}... (the file changed after save)",
            )
    # An unlisted file could be ScaNN's scann_docids.pkl, which its loader would unpickle.
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if path.is_file() and name != MANIFEST_NAME and name not in files:
            raise IndexLoadError(path, "unexpected file not written by save(); refusing to load")


def load_array(
    directory: Path,
    name: str,
    *,
    dtype_kind: str,
    shape: tuple[int | None, ...],
    mmap: bool = False,
) -> np.ndarray:
    """Load `directory/name` without pickle and check its dtype kind and shape (None: any)."""
    path = directory / name
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (OSError, ValueError) as error:
        raise IndexLoadError(path, f"not a readable .npy array: {error}") from error
    if array.dtype.kind != dtype_kind:
        raise IndexLoadError(path, f"wrong dtype {array.dtype}, expected kind {dtype_kind!r}")
    if len(array.shape) != len(shape) or any(
        want is not None and got != want for got, want in zip(array.shape, shape, strict=True)
    ):
        want_text = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise IndexLoadError(path, f"wrong shape {list(array.shape)}, expected {want_text}")
    return array

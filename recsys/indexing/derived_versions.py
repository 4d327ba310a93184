"""An artifact version's catalog and index, read and checked; new versions derived from it.

The layer under :mod:`recsys.indexing.operations`. A version is opened only after its files match
its
manifest's sha256s, so that a corrupt file is never copied into, and re-signed by, a derived
version. ``items.parquet`` and ``item_embeddings.npy`` are row-aligned, and the index's live
ids are exactly the items.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.artifact.versions import (
    ArtifactError,
    Manifest,
    read_manifest,
    resolve_version,
    verify_artifact,
    write_version,
)
from recsys.index.base import Index, IndexLoadError
from recsys.index.registry import load_index
from recsys.index.scann_index import ScannIndex

logger = logging.getLogger(__name__)

# The artifact layout of recsys_training.export (not imported: it would pull in training).
ITEMS_FILE = "items.parquet"
EMBEDDINGS_FILE = "item_embeddings.npy"
CONFIG_FILE = "config.json"
INDEX_DIR = "index"
CANDIDATE_MODEL_DIR = "candidate_model"
_MAX_LISTED = 5


class ArtifactIndexError(ArtifactError, ValueError):
    """An artifact's index, items or embeddings are missing, inconsistent or corrupt."""


@dataclasses.dataclass(frozen=True)
class ArtifactVersion:
    """A verified artifact version: its folder, manifest and ``config.json``."""

    path: Path
    manifest: Manifest
    settings: dict[str, Any]

    @property
    def embedding_dim(self) -> int:
        """Length of the item embeddings (config.json ``embedding_dim``)."""
        return int(self.settings["embedding_dim"])

    @property
    def content_dim(self) -> int | None:
        """Length of the content embedding input, or None when the model uses none."""
        value = self.settings.get("content_dim")
        return None if value is None else int(value)

    @property
    def reference_time(self) -> int:
        """Unix seconds at which item embeddings are computed (upload age measured to it)."""
        return int(self.settings["reference_time"])


@dataclasses.dataclass(frozen=True)
class Catalog:
    """items.parquet and item_embeddings.npy, row-aligned: `embeddings: [num_items, dim]`."""

    items: pa.Table
    embeddings: np.ndarray

    @property
    def ids(self) -> list[str]:
        """Item ids in row order."""
        return [str(value) for value in self.items.column("item_id").to_pylist()]


def listed(values: Sequence[str]) -> str:
    """At most five values quoted and joined, for error messages."""
    shown = ", ".join(repr(value) for value in values[:_MAX_LISTED])
    more = len(values) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def positive_int(value: object, name: str) -> int:
    """Return `value` as an int when it is a positive integer; raise ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name} must be a positive integer: got {value!r}")
    return int(value)


@contextmanager
def artifact_errors(where: Path) -> Iterator[None]:
    """Turn index and artifact errors into ArtifactIndexError (a ValueError the CLI reports)."""
    try:
        yield
    except ArtifactIndexError:
        raise
    except IndexLoadError as error:
        raise ArtifactIndexError(f"{where}: {error}") from error
    except ArtifactError as error:
        raise ArtifactIndexError(str(error)) from error


def open_version(artifact: str | Path) -> ArtifactVersion:
    """Resolve `artifact` (model or version folder), verify its checksums, read config.json."""
    started = time.perf_counter()
    with artifact_errors(Path(artifact)):
        path = resolve_version(artifact)
        manifest = verify_artifact(path)
    config_path = path / CONFIG_FILE
    try:
        settings = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ArtifactIndexError(f"{config_path}: unreadable ({error})") from error
    if not isinstance(settings, dict):
        raise ArtifactIndexError(f"{config_path}: expected a JSON object")
    for key, may_be_none in (("embedding_dim", False), ("content_dim", True)):
        value = settings.get(key)
        if not (may_be_none and value is None) and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0
        ):
            raise ArtifactIndexError(f"{config_path}: {key} must be a positive int: {value!r}")
    reference_time = settings.get("reference_time")
    if isinstance(reference_time, bool) or not isinstance(reference_time, int):
        raise ArtifactIndexError(
            f"{config_path}: reference_time must be Unix seconds (int): {reference_time!r}"
        )
    logger.info(
        "verified %s (%d files) in %.2f s", path, len(manifest.files), time.perf_counter() - started
    )
    return ArtifactVersion(path, manifest, settings)


def read_catalog(version: ArtifactVersion) -> Catalog:
    """Read items.parquet and item_embeddings.npy and check that they are row-aligned."""
    started = time.perf_counter()
    items_path, embeddings_path = version.path / ITEMS_FILE, version.path / EMBEDDINGS_FILE
    try:
        items = pq.read_table(items_path)
        embeddings = np.load(embeddings_path, allow_pickle=False)
    except (OSError, ValueError, pa.ArrowInvalid) as error:
        raise ArtifactIndexError(f"{version.path}: cannot read the catalog ({error})") from error
    if "item_id" not in items.column_names:
        raise ArtifactIndexError(f"{items_path}: has no item_id column")
    expected = (items.num_rows, version.embedding_dim)
    if embeddings.dtype != np.float32 or embeddings.shape != expected:
        raise ArtifactIndexError(
            f"{embeddings_path}: {embeddings.dtype} {list(embeddings.shape)}, expected float32 "
            f"{list(expected)} ({ITEMS_FILE} rows x config.json embedding_dim)"
        )
    logger.info(
        "read %d items x %d dims from %s in %.2f s",
        items.num_rows,
        version.embedding_dim,
        version.path,
        time.perf_counter() - started,
    )
    return Catalog(items, embeddings)


def load_version_index(version: ArtifactVersion) -> Index:
    """Load the version's index, checking its dimension and that it holds every catalog item."""
    directory = version.path / INDEX_DIR
    if not (directory / "index.json").is_file():
        raise ArtifactIndexError(
            f"{version.path}: has no index (no {INDEX_DIR}/index.json; exported without one?): "
            f"build it with `recsys index build --artifact {version.path}`"
        )
    started = time.perf_counter()
    with artifact_errors(version.path):
        index = load_index(directory, expected_dim=version.embedding_dim)
    num_items = pq.read_metadata(version.path / ITEMS_FILE).num_rows
    if len(index) != num_items:
        raise ArtifactIndexError(
            f"{directory}: holds {len(index)} items but {ITEMS_FILE} has {num_items} rows: "
            f"rebuild it with `recsys index build --artifact {version.path}`"
        )
    logger.info(
        "loaded the %s index of %s (%d items) in %.2f s",
        index.kind,
        version.path,
        len(index),
        time.perf_counter() - started,
    )
    return index


def load_artifact_index(version_dir: str | Path) -> Index:
    """Verify an artifact version's checksums and load its index, checked against its catalog."""
    return load_version_index(open_version(version_dir))


def index_entry(index: Index, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest's ``index`` entry: `previous` (kept) updated with config, kind and size."""
    entry = dict(previous or {})
    entry.update(config=index.config.to_dict(), kind=index.kind, size=len(index))
    if isinstance(index, ScannIndex):
        entry.update(num_leaves=index.num_leaves, pending=index.num_pending)
    return entry


def derive_version(
    version: ArtifactVersion, entry: dict[str, Any], write: Callable[[Path], None]
) -> Path:
    """Write a new version: a copy of `version` changed by `write(folder)`; LATEST moves to it."""
    model_dir = version.path.parent
    try:
        latest = resolve_version(model_dir).name
    except ArtifactError:
        latest = None
    if latest not in (None, version.path.name):
        logger.warning(
            "deriving from %s while LATEST is %s: the new version, which becomes LATEST, "
            "does not include the changes made after %s",
            version.path.name,
            latest,
            version.path.name,
        )
    manifest = dataclasses.replace(
        version.manifest,
        version="",
        created_at="",
        parent=version.manifest.version,
        index=entry,
        files={},
    )
    with write_version(model_dir.parent, model_dir.name, manifest, base=version.path) as folder:
        write(folder)
    return model_dir / manifest.version


def save_index(index: Index, folder: Path) -> None:
    """Replace ``folder/index`` entirely with `index`."""
    shutil.rmtree(folder / INDEX_DIR, ignore_errors=True)
    index.save(folder / INDEX_DIR)


def save_catalog(catalog: Catalog, folder: Path) -> None:
    """Write `catalog` as ``folder/items.parquet`` and ``folder/item_embeddings.npy``."""
    pq.write_table(catalog.items, folder / ITEMS_FILE)
    np.save(folder / EMBEDDINGS_FILE, catalog.embeddings, allow_pickle=False)


def describe_index(artifact: str | Path) -> dict[str, Any]:
    """The version folder, its parent version and its manifest's ``index`` entry (JSON-ready)."""
    with artifact_errors(Path(artifact)):
        path = resolve_version(artifact)
        manifest = read_manifest(path)
    return {"version": str(path), "parent": manifest.parent, "index": manifest.index}

"""An artifact version's index, loaded and checked against its catalog; new versions derived.

The layer under :mod:`recsys.indexing.operations`. Versions are opened with
:func:`recsys.artifact.reader.open_version`, after their files match their manifest's sha256s,
so that a corrupt file is never copied into, and re-signed by, a derived version; their
catalog is read with :func:`recsys.artifact.catalog.read_catalog`. The index's live ids are
exactly the catalog's items.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from recsys.artifact.layout import INDEX_DIR, ITEMS_FILE
from recsys.artifact.reader import ArtifactVersion, open_version
from recsys.artifact.versions import ArtifactError, read_manifest, resolve_version, write_version
from recsys.index.base import Index, IndexLoadError
from recsys.index.registry import load_index
from recsys.index.scann_index import ScannIndex

logger = logging.getLogger(__name__)

_MAX_LISTED = 5


class ArtifactIndexError(ArtifactError, ValueError):
    """An artifact's index, items or embeddings are missing, inconsistent or corrupt."""


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
def artifact_errors(where: str | Path) -> Iterator[None]:
    """Turn index and artifact errors into ArtifactIndexError (a ValueError the CLI reports)."""
    try:
        yield
    except ArtifactIndexError:
        raise
    except IndexLoadError as error:
        raise ArtifactIndexError(f"{where}: {error}") from error
    except ArtifactError as error:
        raise ArtifactIndexError(str(error)) from error


def load_version_index(version: ArtifactVersion) -> Index:
    """Load the version's index, checking its dimension and that it holds every catalog item."""
    directory = version.path / INDEX_DIR
    if not directory.is_dir():
        raise ArtifactIndexError(
            f"{version.path}: has no index (no {INDEX_DIR}/; exported without one?): "
            f"build it with `recsys index build --artifact {version.path}`"
        )
    started = time.perf_counter()
    with artifact_errors(version.path):
        index = load_index(directory, expected_dim=version.settings.embedding_dim)
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
    with artifact_errors(version_dir):
        version = open_version(version_dir)
    return load_version_index(version)


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


def describe_index(artifact: str | Path) -> dict[str, Any]:
    """The version folder, its parent version and its manifest's ``index`` entry (JSON-ready)."""
    with artifact_errors(Path(artifact)):
        path = resolve_version(artifact)
        manifest = read_manifest(path)
    return {"version": str(path), "parent": manifest.parent, "index": manifest.index}

"""A version's catalog: ``items.parquet`` and ``item_embeddings.npy``, row-aligned, read as one.

Every reader of the served videos (serving, evaluation, the index operations) and every
writer (the export, derived versions) goes through :func:`read_catalog` /
:func:`write_catalog`, so the alignment rule (one embedding row per item row, float32,
``config.json``'s ``embedding_dim`` wide) is checked in one place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.artifact.layout import CONFIG_FILE, EMBEDDINGS_FILE, ITEMS_FILE
from recsys.artifact.reader import ArtifactVersion
from recsys.artifact.versions import ArtifactError

log = logging.getLogger(__name__)


class CatalogError(ArtifactError, ValueError):
    """A version's items or item embeddings are missing, unreadable or not row-aligned."""


@dataclass(frozen=True)
class Catalog:
    """The served videos: ``items`` rows and ``embeddings: [num_items, dim]`` float32, aligned."""

    items: pa.Table
    embeddings: np.ndarray

    @property
    def ids(self) -> list[str]:
        """Item ids in row order."""
        return [str(value) for value in self.items.column("item_id").to_pylist()]


def read_catalog(version: ArtifactVersion, columns: Sequence[str] | None = None) -> Catalog:
    """Read the version's items (all columns, or ``columns``) and embeddings; check alignment.

    The embeddings are read into memory, not mapped: scoring a small category or a video's
    neighbours reads rows all over the file, and a page fault per row costs more than the
    dot products. Raises CatalogError naming the file.
    """
    started = time.perf_counter()
    items_path, embeddings_path = version.path / ITEMS_FILE, version.path / EMBEDDINGS_FILE
    wanted = None if columns is None else list(dict.fromkeys(["item_id", *columns]))
    try:
        items = pq.read_table(items_path, columns=wanted)
    except (OSError, KeyError, pa.ArrowInvalid) as error:
        raise CatalogError(f"{items_path}: cannot read the catalog ({error})") from error
    if "item_id" not in items.column_names:
        raise CatalogError(f"{items_path}: has no item_id column")
    try:
        embeddings = np.load(embeddings_path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise CatalogError(f"{embeddings_path}: cannot read ({error})") from error
    expected = (items.num_rows, version.settings.embedding_dim)
    if embeddings.dtype != np.float32 or embeddings.shape != expected:
        raise CatalogError(
            f"{embeddings_path}: {embeddings.dtype} {list(embeddings.shape)}, expected float32 "
            f"{list(expected)} ({ITEMS_FILE} rows x {CONFIG_FILE} embedding_dim)"
        )
    log.info(
        "read %d items x %d dims from %s in %.2f s",
        items.num_rows,
        expected[1],
        version.path,
        time.perf_counter() - started,
    )
    return Catalog(items, embeddings)


def write_catalog(catalog: Catalog, folder: Path) -> None:
    """Write ``catalog`` into version folder ``folder`` (still being assembled)."""
    if len(catalog.embeddings) != catalog.items.num_rows:
        raise CatalogError(
            f"{folder}: {catalog.items.num_rows} items but {len(catalog.embeddings)} embeddings"
        )
    pq.write_table(catalog.items, folder / ITEMS_FILE)
    np.save(folder / EMBEDDINGS_FILE, catalog.embeddings, allow_pickle=False)

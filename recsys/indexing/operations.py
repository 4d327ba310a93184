"""The candidate index of an artifact: rebuild, tune, add and remove videos, each a new version.

Every operation reads a version (checked against its manifest's sha256s first), writes a new
version derived from it (``manifest.parent`` names the old one) and moves ``LATEST``; the old
version is never changed. Added videos go into the index without a rebuild (ScaNN: an exact
delta beside the tree; removed ones are tombstones) until the next ``build_artifact_index``.
Tuning an index in place lives in :mod:`recsys.indexing.tuning`, reading and deriving
versions in :mod:`recsys.indexing.derived_versions`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.artifact.catalog import Catalog, read_catalog, write_catalog
from recsys.artifact.layout import CANDIDATE_MODEL_DIR, INDEX_DIR, ITEMS_FILE
from recsys.artifact.reader import ArtifactVersion, open_version
from recsys.index.base import IndexConfig
from recsys.index.registry import build_index
from recsys.index.scann_index import ScannIndex
from recsys.indexing.derived_versions import (
    ArtifactIndexError,
    artifact_errors,
    derive_version,
    index_entry,
    listed,
    load_version_index,
    positive_int,
    save_index,
)
from recsys.indexing.new_videos import NewItems, embed_new_items, read_new_items
from recsys.indexing.tuning import (
    TUNE_K,
    TUNE_QUERIES,
    TUNE_TARGET_RECALL,
    has_profiles,
    profile_queries,
    tune_index,
)
from recsys.inference.candidate_embedder import DEFAULT_EMBED_BATCH
from recsys.logs import ProgressFn

logger = logging.getLogger(__name__)


def build_artifact_index(
    artifact: str | Path, config: IndexConfig | None = None, *, tune: bool = False, seed: int = 0
) -> Path:
    """Rebuild an artifact's index from its embeddings as a new version; returns its folder.

    `tune`: a ScaNN tree index is saved with the fastest search setting meeting recall@100
    0.95 on the model's own queries over its stored profiles (sampled with `seed`), as
    `tune_artifact_index` would pick, in the same new version.
    """
    started = time.perf_counter()
    with artifact_errors(artifact):
        version = open_version(artifact)
    with artifact_errors(version.path):
        catalog = read_catalog(version)
    config = config or IndexConfig.for_corpus_size(len(catalog.embeddings))
    resolved = config.resolve(len(catalog.embeddings))
    vectors = None
    if tune and resolved.kind == "scann" and resolved.scoring == "ah":
        if has_profiles(version.path):
            # Before the build: the loaded model's copy of the old index is gone by then.
            vectors = profile_queries(version.path, TUNE_QUERIES, seed, verify=False)
        else:
            logger.warning(
                "%s has no stored profiles to tune on: the index keeps its default search "
                "setting; `recsys index tune --queries proxies` tunes it on query proxies",
                version.path,
            )
    build_started = time.perf_counter()
    index = build_index(catalog.ids, catalog.embeddings, config)
    build_s = time.perf_counter() - build_started
    entry = index_entry(index)
    entry["build_seconds"] = round(build_s, 3)
    if vectors is not None and isinstance(index, ScannIndex) and index.num_leaves is not None:
        _, entry["tuning"] = tune_index(
            index,
            catalog.ids,
            catalog.embeddings,
            vectors,
            k=TUNE_K,
            target_recall=TUNE_TARGET_RECALL,
            source="profiles",
            described=f"query tower over {len(vectors)} stored profiles (sampled), at build time",
            seed=seed,
        )
    new_path = derive_version(version, entry, lambda folder: save_index(index, folder))
    logger.info(
        "index build: %s index over %d items of %s (built in %.1f s) written as %s in %.1f s",
        index.kind,
        len(index),
        version.path,
        build_s,
        new_path,
        time.perf_counter() - started,
    )
    return new_path


def _rows_of(catalog: Catalog, ids: Sequence[str]) -> np.ndarray:
    """Mask `[num_items]` of the catalog rows whose id is in `ids`."""
    column = catalog.items.column("item_id").cast(pa.string())
    mask = pc.is_in(column, value_set=pa.array(list(ids), type=pa.string()))
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _conform(new_rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """`new_rows` with exactly the artifact catalog's columns and types (absent ones null)."""
    columns = [
        new_rows.column(field.name).cast(field.type)
        if field.name in new_rows.column_names
        else pa.nulls(new_rows.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _embed(
    version: ArtifactVersion, new_items: NewItems, batch_size: int, progress: ProgressFn | None
) -> np.ndarray:
    """Candidate embeddings `[n, dim]` of `new_items`, checked finite and of the model's dim."""
    model = version.path / CANDIDATE_MODEL_DIR
    with artifact_errors(version.path):
        embeddings = embed_new_items(
            model,
            new_items,
            version.settings.reference_time,
            batch_size=batch_size,
            progress=progress,
        )
    expected = (len(new_items), version.settings.embedding_dim)
    if embeddings.shape != expected or not np.isfinite(embeddings).all():
        raise ArtifactIndexError(
            f"{model}: returned {list(embeddings.shape)} embeddings "
            f"(finite: {bool(np.isfinite(embeddings).all())}), expected finite {list(expected)}"
        )
    return embeddings


def _with_new_rows(
    catalog: Catalog, new_items: NewItems, embeddings: np.ndarray, replaced: np.ndarray
) -> Catalog:
    """`catalog` without its `replaced: [num_items]` rows, then the new videos at the end."""
    # Replaced rows move to the end with their new features; masking copies, so only then.
    kept_items, kept_embeddings = catalog.items, catalog.embeddings
    if replaced.any():
        kept_items = kept_items.filter(pa.array(~replaced))
        kept_embeddings = kept_embeddings[~replaced]
    return Catalog(
        pa.concat_tables([kept_items, _conform(new_items.table, catalog.items.schema)]),
        np.concatenate([kept_embeddings, embeddings]),
    )


def add_items(
    artifact: str | Path,
    items_file: str | Path,
    *,
    batch_size: int = DEFAULT_EMBED_BATCH,
    progress: ProgressFn | None = None,
) -> Path:
    """Embed the new videos of a Parquet file, insert them without a rebuild; a new version.

    An id already in the artifact is replaced (new features, new embedding), and logged.
    """
    started = time.perf_counter()
    batch_size = positive_int(batch_size, "batch_size")
    with artifact_errors(artifact):
        version = open_version(artifact)
    new_items = read_new_items(Path(items_file), version.settings.content_dim)
    with artifact_errors(version.path):
        catalog = read_catalog(version)
    index = load_version_index(version)
    embeddings = _embed(version, new_items, batch_size, progress)
    ids = new_items.ids
    replaced = _rows_of(catalog, ids)
    if replaced.any():
        old_ids = catalog.items.column("item_id").filter(pa.array(replaced)).to_pylist()
        logger.info(
            "%d of the new videos are already in %s and replace the old ones: %s",
            len(old_ids),
            version.path,
            listed(old_ids),
        )
    index_started = time.perf_counter()
    index.add(ids, embeddings)
    index_s = time.perf_counter() - index_started
    updated = _with_new_rows(catalog, new_items, embeddings, replaced)
    entry = index_entry(index, version.manifest.index)
    entry["last_update"] = {
        "op": "add",
        "added": len(ids) - int(replaced.sum()),
        "replaced": int(replaced.sum()),
        "source": str(new_items.path),
    }

    def write(folder: Path) -> None:
        """Replace the new version's catalog and index."""
        write_catalog(updated, folder)
        save_index(index, folder)

    new_path = derive_version(version, entry, write)
    logger.info(
        "index add: %d videos from %s (%d new, %d replaced) into %s -> %s (%d items, index "
        "insert %.3f s, no rebuild); searchable %.1f s after the call",
        len(ids),
        new_items.path,
        len(ids) - int(replaced.sum()),
        int(replaced.sum()),
        version.path,
        new_path,
        len(index),
        index_s,
        time.perf_counter() - started,
    )
    return new_path


def _check_item_ids(item_ids: Sequence[str]) -> list[str]:
    """Return `item_ids` as a list of distinct non-empty strings; raise ValueError otherwise."""
    if isinstance(item_ids, str | bytes):
        raise ValueError(f"item_ids must be a list of ids, not a single string: {item_ids!r}")
    ids = list(item_ids)
    if not ids:
        raise ValueError("item_ids is empty: name at least one item id to remove")
    bad = [value for value in ids if not isinstance(value, str) or not value]
    if bad:
        raise ValueError(f"item_ids must be non-empty strings: got {bad[0]!r}")
    repeated = sorted(value for value, count in Counter(ids).items() if count > 1)
    if repeated:
        raise ValueError(f"item_ids names these ids more than once: {listed(repeated)}")
    return ids


def remove_items(artifact: str | Path, item_ids: Sequence[str]) -> Path:
    """Remove videos from the index (tombstones), items and embeddings; a new version."""
    started = time.perf_counter()
    ids = _check_item_ids(item_ids)
    with artifact_errors(artifact):
        version = open_version(artifact)
    with artifact_errors(version.path):
        catalog = read_catalog(version)
    removed = _rows_of(catalog, ids)
    known = set(catalog.items.column("item_id").filter(pa.array(removed)).to_pylist())
    unknown = [value for value in ids if value not in known]
    if unknown:
        raise ValueError(
            f"cannot remove {listed(unknown)}: not in the catalog of {version.path} "
            f"({len(unknown)} unknown id(s); nothing was written)"
        )
    if removed.all():
        raise ValueError(
            f"removing {len(ids)} ids would leave {version.path} with no items: keep at least one"
        )
    index = load_version_index(version)
    missing = [value for value in ids if value not in index]
    if missing:
        raise ArtifactIndexError(
            f"{version.path / INDEX_DIR}: does not hold {listed(missing)}, which {ITEMS_FILE} "
            "lists: rebuild it with `recsys index build`"
        )
    index_started = time.perf_counter()
    index.remove(ids)
    index_s = time.perf_counter() - index_started
    kept = ~removed
    updated = Catalog(catalog.items.filter(pa.array(kept)), catalog.embeddings[kept])
    entry = index_entry(index, version.manifest.index)
    entry["last_update"] = {"op": "remove", "removed": len(ids)}

    def write(folder: Path) -> None:
        """Replace the new version's catalog and index."""
        write_catalog(updated, folder)
        save_index(index, folder)

    new_path = derive_version(version, entry, write)
    logger.info(
        "index remove: %d videos from %s -> %s (%d items left, index update %.3f s) in %.1f s",
        len(ids),
        version.path,
        new_path,
        len(index),
        index_s,
        time.perf_counter() - started,
    )
    return new_path


def read_id_file(path: str | Path) -> list[str]:
    """Item ids from a text file, one a line; blank lines and lines starting '#' are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"ids file {path}: unreadable ({error})") from error
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]

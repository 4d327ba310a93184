"""Approximate maximum inner product search with ScaNN, plus an exact delta for live updates.

ScaNN's own `upsert`/`delete` need a searcher built with `docids=`, which ScaNN saves by
pickling; our rule is no pickle in any model file. So the ScaNN searcher is immutable here:
added items live in a small exact delta index searched beside it and merged by score, and
removed items are tombstones filtered out of its results. `compact()` folds both back in.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Self

import numpy as np

from recsys.index._scann_backend import (
    build_searcher,
    dataset_matches,
    load_searcher,
    required_field,
)
from recsys.index._storage import (
    ids_to_array,
    load_array,
    read_manifest,
    save_array,
    write_index_dir,
)
from recsys.index._validation import (
    check_embeddings,
    check_ids,
    check_k,
    check_positive_int,
    check_queries,
    check_query,
    check_same_length,
    listed,
)
from recsys.index.base import IdsLike, Index, IndexConfig, IndexLoadError, SearchResult
from recsys.index.exact import ExactIndex
from recsys.index.top_k import exact_top_k

logger = logging.getLogger(__name__)

_SCANN_DIR = "scann"
_MAX_SEARCH_ATTEMPTS = 64


class ScannIndex(Index):
    """ScaNN tree + asymmetric hashing + exact reordering (or ScaNN brute force).

    Scores are exact dot products (reordering rescores candidates in float32). Search
    parameters default to the config's `num_leaves_to_search` and `reorder_k`; each call may
    override them, and `set_search_defaults` (used by `tune_scann`) changes and saves them.
    """

    kind = "scann"

    def __init__(self, dim: int, config: IndexConfig) -> None:
        """Create an empty index; use `build` or `load` instead."""
        self._dim = dim
        self._config = config
        self._ids = ids_to_array([])
        self._embeddings = np.empty((0, dim), dtype=np.float32)
        self._searcher: Any = None
        self._num_leaves: int | None = None
        self._removed = np.zeros(0, dtype=bool)
        self._num_removed = 0
        self._row_of: dict[str, int] | None = None
        self._delta = ExactIndex(dim)
        self._row_ids: np.ndarray | None = None  # main ids then delta ids; None: recompute

    @classmethod
    def build(cls, ids: IdsLike, embeddings: np.ndarray, config: IndexConfig | None = None) -> Self:
        """Build over `ids: [n]` and `embeddings: [n, dim]`; None fields of `config` from n."""
        id_list = check_ids(ids)
        array = check_embeddings(embeddings)
        check_same_length(id_list, array)
        config = config or IndexConfig(kind="scann")
        if config.kind == "exact":
            raise ValueError("config.kind is 'exact': use ExactIndex.build or build_index")
        resolved = dataclasses.replace(config, kind="scann").resolve(len(id_list))
        if isinstance(embeddings, np.ndarray) and np.may_share_memory(array, embeddings):
            array = array.copy()  # kept for compact(); the caller may change its own array
        index = cls(array.shape[1], resolved)
        index._set_main(ids_to_array(id_list), array)
        return index

    def _set_main(self, ids: np.ndarray, embeddings: np.ndarray) -> None:
        embeddings.setflags(write=False)
        self._ids = ids
        self._embeddings = embeddings
        self._removed = np.zeros(len(ids), dtype=bool)
        self._num_removed = 0
        self._row_of = None
        self._row_ids = None
        self._searcher, self._num_leaves = (
            build_searcher(embeddings, self._config) if len(ids) else (None, None)
        )

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        return self._dim

    @property
    def config(self) -> IndexConfig:
        """The resolved config, including the default search parameters."""
        return self._config

    @property
    def num_leaves(self) -> int | None:
        """Leaves in the built tree (None for brute force or an empty main index)."""
        return self._num_leaves

    @property
    def num_pending(self) -> int:
        """Items added or removed since the last build or `compact()`."""
        return len(self._delta) + self._num_removed

    def __len__(self) -> int:
        """The number of live items: main rows not removed, plus the delta."""
        return len(self._ids) - self._num_removed + len(self._delta)

    def __contains__(self, item_id: object) -> bool:
        """Whether `item_id` is a live item."""
        if item_id in self._delta:
            return True
        row = self._rows().get(item_id) if isinstance(item_id, str) else None
        return row is not None and not self._removed[row]

    @property
    def row_ids(self) -> np.ndarray:
        """Ids at the positions `search_rows` returns: main rows, then the delta's rows."""
        if self._row_ids is None:
            delta = self._delta.row_ids
            self._row_ids = np.concatenate([self._ids, delta]) if len(delta) else self._ids
        return self._row_ids

    def _rows(self) -> dict[str, int]:
        # Built lazily: a million-entry dict costs ~100 MB and is only needed to mutate.
        if self._row_of is None:
            self._row_of = {item_id: row for row, item_id in enumerate(self._ids.tolist())}
        return self._row_of

    def set_search_defaults(
        self, *, leaves_to_search: int | None = None, reorder_k: int | None = None
    ) -> None:
        """Change the default search parameters (kept in `config` and saved with the index)."""
        leaves = check_positive_int(leaves_to_search, "leaves_to_search")
        reorder = check_positive_int(reorder_k, "reorder_k")
        self._check_tree_parameters(leaves, reorder)
        self._config = dataclasses.replace(
            self._config,
            num_leaves_to_search=leaves or self._config.num_leaves_to_search,
            reorder_k=reorder or self._config.reorder_k,
        )
        logger.info(
            "search defaults: %s leaves, reorder %s",
            self._config.num_leaves_to_search,
            self._config.reorder_k,
        )

    def _check_tree_parameters(self, leaves: int | None, reorder: int | None) -> None:
        if self._config.scoring == "brute_force" and (leaves is not None or reorder is not None):
            raise ValueError(
                "leaves_to_search and reorder_k apply to a tree index (scoring='ah'); this "
                "index uses ScaNN brute force: leave them as None"
            )

    def _search_parameters(
        self, leaves_to_search: int | None, reorder_k: int | None
    ) -> tuple[int | None, int]:
        leaves = check_positive_int(leaves_to_search, "leaves_to_search")
        reorder = check_positive_int(reorder_k, "reorder_k")
        self._check_tree_parameters(leaves, reorder)
        if self._num_leaves is None:  # brute force, by config or for a tiny corpus
            return None, 0
        return (
            leaves or required_field(self._config.num_leaves_to_search, "num_leaves_to_search"),
            reorder or required_field(self._config.reorder_k, "reorder_k"),
        )

    def _first_fetch(self, needed: int) -> int:
        # A few removed ids among the top k are usual; a long backlog is met by doubling later.
        return min(len(self._ids), needed + min(self._num_removed, needed))

    def _search_main_one(
        self, query: np.ndarray, needed: int, leaves: int | None, reorder: int, fetch: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top `needed` live main rows for `query: [dim]`: rows [needed] int64, scores float32."""
        num_main = len(self._ids)
        for _ in range(_MAX_SEARCH_ATTEMPTS):
            if leaves is None:
                raw_rows, raw_scores = self._searcher.search(query, fetch)
            else:
                raw_rows, raw_scores = self._searcher.search(
                    query, fetch, max(reorder, fetch), leaves
                )
            rows, scores = raw_rows, raw_scores
            if self._num_removed:
                live = ~self._removed[rows]
                rows, scores = rows[live], scores[live]
            if len(rows) >= needed:
                return rows[:needed].astype(np.int64), scores[:needed]
            # Too few live results: either the searched leaves hold too few items (search
            # them all) or tombstones crowded the top (fetch more).
            if len(raw_rows) < fetch and leaves is not None and leaves < (self._num_leaves or 0):
                leaves = self._num_leaves
            elif fetch < num_main:
                fetch = min(num_main, 2 * fetch)
            else:
                break
        raise RuntimeError(
            f"ScaNN returned fewer than {needed} live items with every leaf searched; "
            "the index may be corrupt: rebuild it"
        )

    def _search_main_batch(
        self, queries: np.ndarray, needed: int, leaves: int | None, reorder: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top `needed` live main rows for `queries: [m, dim]`: rows and scores [m, needed]."""
        num_queries = queries.shape[0]
        if needed == 0 or num_queries == 0:
            return (
                np.empty((num_queries, needed), dtype=np.int64),
                np.empty((num_queries, needed), dtype=np.float32),
            )
        fetch = self._first_fetch(needed)
        if leaves is None:
            raw_rows, raw_scores = self._searcher.search_batched_parallel(queries, fetch)
        else:
            raw_rows, raw_scores = self._searcher.search_batched_parallel(
                queries, fetch, max(reorder, fetch), leaves
            )
        raw_rows = raw_rows.astype(np.int64)
        # ScaNN pads queries that found fewer than `fetch` with row 0 and a NaN score.
        valid = ~np.isnan(raw_scores)
        if self._num_removed:
            valid &= ~self._removed[raw_rows]
        order = np.argsort(~valid, axis=1, kind="stable")[:, :needed]
        rows = np.take_along_axis(raw_rows, order, axis=1)
        scores = np.take_along_axis(raw_scores, order, axis=1)
        for i in np.flatnonzero(valid.sum(axis=1) < needed):
            rows[i], scores[i] = self._search_main_one(
                queries[i], needed, leaves, reorder, min(len(self._ids), 2 * fetch)
            )
        return rows, scores

    def _merge_delta(
        self, queries: np.ndarray, k: int, rows: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Merge main results `[m, k_main]` with the delta's exact top-k by score (positions)."""
        if len(self._delta) == 0:
            return rows, scores
        delta_rows, delta_scores = exact_top_k(queries, self._delta.embeddings, k)
        all_rows = np.concatenate([rows, delta_rows + len(self._ids)], axis=1)
        all_scores = np.concatenate([scores, delta_scores], axis=1)
        order = np.argsort(-all_scores, axis=1, kind="stable")[:, : min(k, len(self))]
        return (
            np.take_along_axis(all_rows, order, axis=1),
            np.take_along_axis(all_scores, order, axis=1),
        )

    def search_rows(
        self,
        query: np.ndarray,
        k: int,
        *,
        leaves_to_search: int | None = None,
        reorder_k: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for `query: [dim]` as positions into `row_ids` (int64) and exact scores."""
        query = check_query(query, self._dim)
        k = check_k(k)
        leaves, reorder = self._search_parameters(leaves_to_search, reorder_k)
        needed = min(k, len(self._ids) - self._num_removed)
        if needed:
            rows, scores = self._search_main_one(
                query, needed, leaves, reorder, self._first_fetch(needed)
            )
        else:
            rows, scores = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        if len(self._delta) == 0:
            return rows, scores
        merged_rows, merged_scores = self._merge_delta(
            query[None, :], k, rows[None, :], scores[None, :]
        )
        return merged_rows[0], merged_scores[0]

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        leaves_to_search: int | None = None,
        reorder_k: int | None = None,
    ) -> SearchResult:
        """Top-k for `query: [dim]`: ids and exact scores `[min(k, len)]`, best first."""
        rows, scores = self.search_rows(
            query, k, leaves_to_search=leaves_to_search, reorder_k=reorder_k
        )
        return SearchResult(self.row_ids[rows], scores)

    def search_batch(
        self,
        queries: np.ndarray,
        k: int,
        *,
        leaves_to_search: int | None = None,
        reorder_k: int | None = None,
    ) -> SearchResult:
        """Top-k for `queries: [num_queries, dim]` on all cores: `[num_queries, min(k, len)]`."""
        queries = check_queries(queries, self._dim)
        k = check_k(k)
        leaves, reorder = self._search_parameters(leaves_to_search, reorder_k)
        needed = min(k, len(self._ids) - self._num_removed)
        rows, scores = self._search_main_batch(queries, needed, leaves, reorder)
        rows, scores = self._merge_delta(queries, k, rows, scores)
        return SearchResult(self.row_ids[rows], scores)

    def add(self, ids: IdsLike, embeddings: np.ndarray) -> None:
        """Insert `ids: [n]` with `embeddings: [n, dim]` into the delta; replaces existing ids."""
        id_list = check_ids(ids)
        array = check_embeddings(embeddings, self._dim)
        check_same_length(id_list, array)
        row_of = self._rows()
        replaced = [row_of[i] for i in id_list if i in row_of and not self._removed[row_of[i]]]
        self._tombstone(replaced)
        self._delta.add(id_list, array)
        self._row_ids = None
        logger.debug("added %d items (%d replaced main rows)", len(id_list), len(replaced))

    def remove(self, ids: IdsLike) -> None:
        """Delete `ids` (tombstones for main rows); raise ValueError naming unknown ids."""
        id_list = check_ids(ids)
        unknown = [item_id for item_id in id_list if item_id not in self]
        if unknown:
            raise ValueError(f"ids to remove are not in the index: {listed(unknown)}")
        in_delta = [item_id for item_id in id_list if item_id in self._delta]
        if in_delta:
            self._delta.remove(in_delta)
            self._row_ids = None
        delta_set = set(in_delta)
        row_of = self._rows()
        self._tombstone([row_of[i] for i in id_list if i not in delta_set])

    def _tombstone(self, rows: list[int]) -> None:
        if rows:
            self._removed[np.asarray(rows, dtype=np.int64)] = True
            self._num_removed = int(self._removed.sum())

    def compact(self) -> None:
        """Rebuild the ScaNN searcher over all live items; empties the delta and tombstones."""
        live = ~self._removed
        ids = np.concatenate([self._ids[live], self._delta.ids])
        embeddings = np.concatenate([self._embeddings[live], self._delta.embeddings])
        logger.info(
            "compacting: %d main rows, %d removed, %d added -> %d items",
            len(self._ids),
            self._num_removed,
            len(self._delta),
            len(ids),
        )
        self._delta = ExactIndex(self._dim)
        self._set_main(ids, embeddings)

    def save(self, directory: str | Path) -> None:
        """Write ScaNN's files (under `scann/`), ids, tombstones, delta, and `index.json`."""
        manifest: dict[str, Any] = {
            "kind": self.kind,
            "dim": self._dim,
            "count": len(self),
            "config": self._config.to_dict(),
            "main_rows": len(self._ids),
            "num_leaves": self._num_leaves,
            "embeddings_file": "embeddings.npy",
        }

        def write(staging: Path) -> None:
            save_array(staging / "ids.npy", self._ids)
            save_array(staging / "removed_rows.npy", np.flatnonzero(self._removed))
            save_array(staging / "delta_ids.npy", self._delta.ids)
            save_array(staging / "delta_embeddings.npy", self._delta.embeddings)
            if self._searcher is not None:
                scann_dir = staging / _SCANN_DIR
                scann_dir.mkdir()
                # Relative asset paths, so that the directory still loads after the rename.
                self._searcher.serialize(str(scann_dir), relative_path=True)
                pickles = sorted(p.name for p in scann_dir.glob("*.pkl"))
                if pickles:
                    raise RuntimeError(f"ScaNN wrote pickle files {pickles}; refusing to save")
                # ScaNN keeps the float32 dataset for reordering: reuse it rather than store
                # the embeddings twice. The manifest is written after this function returns.
                if dataset_matches(scann_dir / "dataset.npy", self._embeddings):
                    manifest["embeddings_file"] = f"{_SCANN_DIR}/dataset.npy"
            if manifest["embeddings_file"] == "embeddings.npy":
                save_array(staging / "embeddings.npy", self._embeddings)

        write_index_dir(directory, manifest, write)

    @classmethod
    def load(cls, directory: str | Path, *, expected_dim: int | None = None) -> Self:
        """Read an index written by `save`; raise IndexLoadError naming the bad file."""
        directory = Path(directory)
        manifest, config = read_manifest(directory, cls.kind, expected_dim)
        manifest_path = directory / "index.json"
        dim, count = manifest["dim"], manifest["count"]
        main_rows = manifest.get("main_rows")
        num_leaves = manifest.get("num_leaves")
        embeddings_file = manifest.get("embeddings_file")
        if isinstance(main_rows, bool) or not isinstance(main_rows, int) or main_rows < 0:
            raise IndexLoadError(manifest_path, f"main_rows must be an int >= 0: {main_rows!r}")
        if embeddings_file not in ("embeddings.npy", f"{_SCANN_DIR}/dataset.npy"):
            raise IndexLoadError(manifest_path, f"bad embeddings_file {embeddings_file!r}")
        if num_leaves is not None and (not isinstance(num_leaves, int) or num_leaves <= 0):
            raise IndexLoadError(manifest_path, f"bad num_leaves {num_leaves!r}")

        index = cls(dim, config)
        index._ids = load_array(directory, "ids.npy", dtype_kind="U", shape=(main_rows,))
        embeddings = load_array(
            directory, embeddings_file, dtype_kind="f", shape=(main_rows, dim), mmap=True
        )
        if embeddings.dtype != np.float32:
            raise IndexLoadError(directory / embeddings_file, f"dtype {embeddings.dtype}, not f4")
        # Memory-mapped: only compact() reads it, so a loaded index costs no second copy.
        index._embeddings = embeddings
        removed_rows = load_array(directory, "removed_rows.npy", dtype_kind="i", shape=(None,))
        if removed_rows.size and (removed_rows.min() < 0 or removed_rows.max() >= main_rows):
            raise IndexLoadError(directory / "removed_rows.npy", "row out of range")
        index._removed = np.zeros(main_rows, dtype=bool)
        index._removed[removed_rows] = True
        index._num_removed = int(index._removed.sum())
        index._delta = _load_delta(directory, dim)
        index._row_ids = None
        if len(index) != count:
            raise IndexLoadError(
                manifest_path, f"count {count} but the files hold {len(index)} live items"
            )
        if main_rows:
            index._searcher = load_searcher(directory / _SCANN_DIR, main_rows)
            index._num_leaves = num_leaves
        logger.info("loaded ScaNN index of %d items from %s", len(index), directory)
        return index


def _load_delta(directory: Path, dim: int) -> ExactIndex:
    delta_ids = load_array(directory, "delta_ids.npy", dtype_kind="U", shape=(None,))
    delta_embeddings = load_array(
        directory, "delta_embeddings.npy", dtype_kind="f", shape=(len(delta_ids), dim)
    )
    if len(delta_ids) == 0:
        return ExactIndex(dim)
    try:
        return ExactIndex.build(delta_ids, delta_embeddings)
    except ValueError as error:
        raise IndexLoadError(directory / "delta_ids.npy", str(error)) from error

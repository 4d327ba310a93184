"""Exact maximum inner product search in numpy: the reference every approximate index meets."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Self

import numpy as np

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
    check_queries,
    check_query,
    check_same_length,
    listed,
)
from recsys.index.base import IdsLike, Index, IndexConfig, SearchResult

logger = logging.getLogger(__name__)

# Scores held at once: queries x rows of one block. 4M float32 = 16 MB whatever the corpus size.
_SCORE_BLOCK_ELEMENTS = 1 << 22
_MAX_QUERY_CHUNK = 256
# Every 16th score estimates a threshold that about 2k + 128 scores pass; selecting among
# those is ~10x cheaper than argpartition over the whole block.
_SAMPLE_STRIDE = 16
_SAMPLE_SLACK = 8


def _block_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Columns of the top `k` of each row of `scores: [m, b]`, ties to the lower column; [m, k]."""
    num_rows, num_cols = scores.shape
    if num_cols <= k:
        return np.broadcast_to(np.arange(num_cols), (num_rows, num_cols))
    if num_cols >= 2 * _SAMPLE_STRIDE * k:
        columns = _sampled_top_k(scores, k)
        if columns is not None:
            return columns
    columns = np.argpartition(scores, num_cols - k, axis=1)[:, num_cols - k :]
    threshold = np.take_along_axis(scores, columns, axis=1).min(axis=1)
    # argpartition picks arbitrarily among scores tied with the k-th; redo those rows so
    # that the lowest columns win and results never depend on the partition algorithm.
    tied = np.count_nonzero(scores >= threshold[:, None], axis=1) > k
    for row in np.flatnonzero(tied):
        candidates = np.flatnonzero(scores[row] >= threshold[row])
        order = np.lexsort((candidates, -scores[row, candidates]))[:k]
        columns[row] = candidates[order]
    return columns


def _sampled_top_k(scores: np.ndarray, k: int) -> np.ndarray | None:
    """Like `_block_top_k` via a threshold from a strided sample; None if too few pass it."""
    sample = scores[:, ::_SAMPLE_STRIDE]
    rank = min(sample.shape[1], 2 * k // _SAMPLE_STRIDE + _SAMPLE_SLACK)
    threshold = np.partition(sample, sample.shape[1] - rank, axis=1)[:, sample.shape[1] - rank]
    passed = scores >= threshold[:, None]
    counts = np.count_nonzero(passed, axis=1)
    # With k or more scores at or above the threshold, the top k (ties included) all pass.
    if counts.min() < k:
        return None
    rows, columns = np.nonzero(passed)
    order = np.lexsort((columns, -scores[rows, columns], rows))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return columns[order][starts[:, None] + np.arange(k)]


def exact_top_k(
    queries: np.ndarray, embeddings: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows by dot product: `queries: [m, dim]`, `embeddings: [n, dim]` -> rows, scores.

    Both outputs are `[m, min(k, n)]`, best first; equal scores go to the lower row.
    Memory stays bounded: scores are computed for blocks of rows, not the whole [m, n].
    """
    num_queries, num_rows = queries.shape[0], embeddings.shape[0]
    k = min(k, num_rows)
    rows_out = np.empty((num_queries, k), dtype=np.int64)
    scores_out = np.empty((num_queries, k), dtype=np.float32)
    if k == 0 or num_queries == 0:
        return rows_out, scores_out
    query_chunk = min(num_queries, _MAX_QUERY_CHUNK)
    block_rows = max(k, _SCORE_BLOCK_ELEMENTS // query_chunk)
    for q_start in range(0, num_queries, query_chunk):
        chunk = queries[q_start : q_start + query_chunk]
        best_rows = np.empty((chunk.shape[0], 0), dtype=np.int64)
        best_scores = np.empty((chunk.shape[0], 0), dtype=np.float32)
        for start in range(0, num_rows, block_rows):
            block_scores = chunk @ embeddings[start : start + block_rows].T
            columns = _block_top_k(block_scores, k)
            all_rows = np.concatenate([best_rows, columns + start], axis=1)
            all_scores = np.concatenate(
                [best_scores, np.take_along_axis(block_scores, columns, axis=1)], axis=1
            )
            order = np.lexsort((all_rows, -all_scores), axis=-1)[:, :k]
            best_rows = np.take_along_axis(all_rows, order, axis=1)
            best_scores = np.take_along_axis(all_scores, order, axis=1)
        rows_out[q_start : q_start + chunk.shape[0]] = best_rows
        scores_out[q_start : q_start + chunk.shape[0]] = best_scores
    return rows_out, scores_out


class ExactIndex(Index):
    """Brute-force index: blocked matmul and a partial sort, ties to the earlier-inserted item.

    `add` is O(num_items) (arrays are copied); keep it for small corpora and for deltas.
    """

    kind = "exact"

    def __init__(self, dim: int, config: IndexConfig | None = None) -> None:
        """Create an empty index for vectors of length `dim`."""
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int: got {dim!r}")
        self._dim = dim
        self._config = IndexConfig(kind="exact") if config is None else config
        self._ids = ids_to_array([])
        self._embeddings = np.empty((0, dim), dtype=np.float32)
        self._row_of: dict[str, int] | None = None

    @classmethod
    def build(cls, ids: IdsLike, embeddings: np.ndarray, config: IndexConfig | None = None) -> Self:
        """Build from `ids: [n]` and `embeddings: [n, dim]` (copied)."""
        id_list = check_ids(ids)
        array = check_embeddings(embeddings)
        check_same_length(id_list, array)
        # Whatever kind was asked for, this is an exact index: record it so.
        index = cls(array.shape[1], dataclasses.replace(config or IndexConfig(), kind="exact"))
        index._ids = ids_to_array(id_list)
        if isinstance(embeddings, np.ndarray) and np.may_share_memory(array, embeddings):
            array = array.copy()  # the caller may go on changing its array
        array.setflags(write=False)
        index._embeddings = array
        return index

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        return self._dim

    @property
    def config(self) -> IndexConfig:
        """The config the index was built with."""
        return self._config

    @property
    def ids(self) -> np.ndarray:
        """Item ids in row order: `[num_items]` str."""
        return self._ids

    @property
    def row_ids(self) -> np.ndarray:
        """Item ids in row order (the positions `search_rows` returns)."""
        return self._ids

    def search_rows(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows for `query: [dim]`: int64 rows and float32 scores, best first."""
        query = check_query(query, self._dim)
        k = check_k(k)
        rows, scores = exact_top_k(query[None, :], self._embeddings, k)
        return rows[0].astype(np.int64), scores[0]

    @property
    def embeddings(self) -> np.ndarray:
        """Read-only item embeddings in row order: `[num_items, dim]` float32."""
        return self._embeddings

    def __len__(self) -> int:
        """The number of items."""
        return int(self._ids.shape[0])

    def __contains__(self, item_id: object) -> bool:
        """Whether `item_id` is in the index."""
        return isinstance(item_id, str) and item_id in self._rows()

    def _rows(self) -> dict[str, int]:
        # Built lazily: a million-entry dict costs ~100 MB and is only needed to mutate.
        if self._row_of is None:
            self._row_of = {item_id: row for row, item_id in enumerate(self._ids.tolist())}
        return self._row_of

    def search_batch(self, queries: np.ndarray, k: int) -> SearchResult:
        """Top-k for `queries: [num_queries, dim]`: ids and scores `[num_queries, min(k, len)]`."""
        queries = check_queries(queries, self._dim)
        k = check_k(k)
        rows, scores = exact_top_k(queries, self._embeddings, k)
        return SearchResult(self._ids[rows], scores)

    def add(self, ids: IdsLike, embeddings: np.ndarray) -> None:
        """Insert `ids: [n]` with `embeddings: [n, dim]`; an existing id gets its new vector."""
        id_list = check_ids(ids)
        array = check_embeddings(embeddings, self._dim)
        check_same_length(id_list, array)
        row_of = self._rows()
        existing = [(i, row_of[item_id]) for i, item_id in enumerate(id_list) if item_id in row_of]
        new_positions = [i for i, item_id in enumerate(id_list) if item_id not in row_of]
        updated = self._embeddings.copy()
        if existing:
            positions, rows = (np.array(v, dtype=np.int64) for v in zip(*existing, strict=True))
            updated[rows] = array[positions]
        if new_positions:
            new_ids = [id_list[i] for i in new_positions]
            updated = np.concatenate([updated, array[new_positions]])
            start = len(self._ids)
            self._ids = np.concatenate([self._ids, ids_to_array(new_ids)])
            row_of.update({item_id: start + n for n, item_id in enumerate(new_ids)})
        updated.setflags(write=False)
        self._embeddings = updated

    def remove(self, ids: IdsLike) -> None:
        """Delete `ids`; raise ValueError naming any id that is not in the index."""
        id_list = check_ids(ids)
        row_of = self._rows()
        unknown = [item_id for item_id in id_list if item_id not in row_of]
        if unknown:
            raise ValueError(f"ids to remove are not in the index: {listed(unknown)}")
        rows = np.array([row_of[item_id] for item_id in id_list], dtype=np.int64)
        self._ids = np.delete(self._ids, rows)
        embeddings = np.delete(self._embeddings, rows, axis=0)
        embeddings.setflags(write=False)
        self._embeddings = embeddings
        self._row_of = None

    def save(self, directory: str | Path) -> None:
        """Write `ids.npy`, `embeddings.npy` and `index.json` into `directory`."""

        def write(staging: Path) -> None:
            save_array(staging / "ids.npy", self._ids)
            save_array(staging / "embeddings.npy", self._embeddings)

        manifest = {
            "kind": self.kind,
            "dim": self._dim,
            "count": len(self),
            "config": self._config.to_dict(),
        }
        write_index_dir(directory, manifest, write)

    @classmethod
    def load(cls, directory: str | Path, *, expected_dim: int | None = None) -> Self:
        """Read an index written by `save`; raise IndexLoadError naming the bad file."""
        directory = Path(directory)
        manifest, config = read_manifest(directory, cls.kind, expected_dim)
        dim, count = manifest["dim"], manifest["count"]
        index = cls(dim, config)
        index._ids = load_array(directory, "ids.npy", dtype_kind="U", shape=(count,))
        embeddings = load_array(
            directory, "embeddings.npy", dtype_kind="f", shape=(count, dim)
        ).astype(np.float32, copy=False)
        embeddings.setflags(write=False)
        index._embeddings = embeddings
        return index

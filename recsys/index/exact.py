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
from recsys.index.top_k import exact_top_k

logger = logging.getLogger(__name__)


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

"""The served videos: ids, titles and categories row-aligned with ``item_embeddings.npy``.

Built once per loaded version from the catalog :func:`recsys.artifact.catalog.read_catalog`
reads; maps ids to rows for exclusions, rows to reply fields, and category names to their
rows for filters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

# The items columns serving reads (the catalog holds more, for the index operations).
SERVED_COLUMNS = ("item_id", "title", "category")


class CatalogLoadError(Exception):
    """The artifact's catalog cannot be served: names the file and what is wrong."""


@dataclass
class ServedCatalog:
    """The served videos, row-aligned with ``item_embeddings.npy``."""

    ids: np.ndarray  # object [num_items]: the id strings (shared with row_of's keys)
    titles: np.ndarray  # object [num_items]: str, "" for a missing title
    row_of: dict[str, int]
    category_rows: dict[str, np.ndarray]
    category_code: np.ndarray  # int32 [num_items]: index into category_names, -1 for none
    category_names: list[str]

    def rows(self, ids: Iterable[str]) -> np.ndarray:
        """Rows of known ``ids`` (unknown ones are left out): int64 [m]."""
        get = self.row_of.get
        found = [r for r in (get(i) for i in ids) if r is not None]
        return np.asarray(found, dtype=np.int64)

    def rows_or_missing(self, ids: np.ndarray) -> np.ndarray:
        """Row of every id in ``ids`` (-1 for ids not in the catalog): int64 [len(ids)]."""
        get = self.row_of.get
        return np.fromiter((get(i, -1) for i in ids.tolist()), dtype=np.int64, count=len(ids))

    def describe(self, rows: np.ndarray) -> tuple[list[str], list[str], list[str]]:
        """Ids, titles and categories of ``rows`` ("" for a missing title or category)."""
        name = self.category_name
        return (
            self.ids[rows].tolist(),
            self.titles[rows].tolist(),
            [name(c) for c in self.category_code[rows].tolist()],
        )

    def extend(self, ids: list[str], titles: list[str], categories: list[str]) -> None:
        """Append videos as rows ``len(ids)..`` (live additions; ``row_of`` is the caller's).

        Each array is replaced by a longer copy, never changed in place, so a reader holding
        rows it got before sees the same values; callers publish the new rows after this.
        """
        names = list(self.category_names)
        codes = []
        for category in categories:
            if not category:
                codes.append(-1)
                continue
            if category not in names:
                names.append(category)
            codes.append(names.index(category))
        first = len(self.ids)
        new_codes = np.asarray(codes, dtype=np.int32)
        self.category_names = names
        self.category_code = np.concatenate([self.category_code, new_codes])
        self.titles = np.concatenate([self.titles, np.array(titles, dtype=object)])
        self.ids = np.concatenate([self.ids, np.array(ids, dtype=object)])
        rows = first + np.arange(len(ids), dtype=np.int64)
        category_rows = dict(self.category_rows)
        for code in np.unique(new_codes[new_codes >= 0]).tolist():
            name = names[code]
            old = category_rows.get(name, np.empty(0, dtype=np.int64))
            category_rows[name] = np.concatenate([old, rows[new_codes == code]])
        self.category_rows = category_rows

    def category_name(self, code: int) -> str:
        """The category of code ``code`` ("" for -1, no category)."""
        return self.category_names[code] if code >= 0 else ""


def served_catalog(table: pa.Table, source: str | Path) -> ServedCatalog:
    """The lookups over a version's items ``table`` (``item_id``, ``title``, ``category``).

    ``source`` names the file in errors (duplicate or null ids).
    """
    ids = table.column("item_id").combine_chunks().cast(pa.string())
    id_list = ids.to_pylist()
    row_of = {item_id: row for row, item_id in enumerate(id_list)}
    if len(row_of) != len(id_list) or None in row_of:
        raise CatalogLoadError(f"{source}: item_id has nulls or duplicates")
    categories = table.column("category").combine_chunks().cast(pa.string())
    encoded = categories.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    codes = np.where(np.isnan(codes.astype(np.float64)), -1, codes).astype(np.int32)
    names = [str(n) for n in encoded.dictionary.to_pylist()]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    category_rows = {
        name: order[bounds[i] : bounds[i + 1]].astype(np.int64) for i, name in enumerate(names)
    }
    return ServedCatalog(
        ids=np.array(list(row_of), dtype=object),
        titles=np.array(
            [t or "" for t in table.column("title").cast(pa.string()).to_pylist()], dtype=object
        ),
        row_of=row_of,
        category_rows=category_rows,
        category_code=codes,
        category_names=names,
    )


def in_sorted(values: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """``np.isin(values, pool)`` for a sorted ``pool``, by binary search (10x faster when small)."""
    if len(pool) == 0:
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(pool, values), len(pool) - 1)
    return pool[at] == values

"""Argument checks shared by the candidate indexes: each error names the argument and the fix."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

_MAX_LISTED = 5


def listed(values: Sequence[str]) -> str:
    """Return at most five values quoted and joined, for error messages."""
    shown = ", ".join(repr(v) for v in values[:_MAX_LISTED])
    more = len(values) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def check_ids(ids: Sequence[str] | np.ndarray, name: str = "ids") -> list[str]:
    """Return `ids` as a list of unique, non-empty strings; raise ValueError naming `name`."""
    if isinstance(ids, str | bytes):
        raise ValueError(f"{name} must be a sequence of strings, not a single {type(ids).__name__}")
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional: got shape {ids.shape}")
        ids = ids.tolist()
    try:
        id_list = list(ids)
    except TypeError:
        raise ValueError(
            f"{name} must be a sequence of strings: got {type(ids).__name__}"
        ) from None
    if not id_list:
        raise ValueError(f"{name} is empty: pass at least one item id")
    bad = [i for i in id_list if not isinstance(i, str)]
    if bad:
        raise ValueError(
            f"{name} must hold strings: got {type(bad[0]).__name__} value {bad[0]!r}; "
            "convert the item ids with str()"
        )
    # Ids are stored as fixed-width unicode .npy, which cannot keep NUL characters.
    bad = [i for i in id_list if not i or "\x00" in i]
    if bad:
        raise ValueError(f"{name} must be non-empty strings without NUL characters: got {bad[0]!r}")
    if len(set(id_list)) != len(id_list):
        dups = sorted(i for i, count in Counter(id_list).items() if count > 1)
        raise ValueError(f"{name} has duplicate ids in one call: {listed(dups)}")
    return id_list


def check_embeddings(
    embeddings: np.ndarray, dim: int | None = None, name: str = "embeddings"
) -> np.ndarray:
    """Return `embeddings: [num_items, dim]` as float32; raise ValueError naming `name`."""
    array = np.asarray(embeddings)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers: got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape [num_items, dim]: got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}): pass at least one vector")
    if array.shape[1] == 0:
        raise ValueError(f"{name} has dimension 0 (shape {array.shape})")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(
            f"{name} has dimension {array.shape[1]} but the index has dimension {dim}: "
            f"pass vectors of length {dim}"
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise ValueError(
            f"{name} contains NaN or inf in {bad_rows.size} row(s), first at row {bad_rows[0]}"
        )
    return array


def check_same_length(ids: Sequence[str], embeddings: np.ndarray) -> None:
    """Raise ValueError when ids and embeddings rows differ in number."""
    if len(ids) != embeddings.shape[0]:
        raise ValueError(
            f"ids and embeddings differ in length: {len(ids)} ids for "
            f"{embeddings.shape[0]} embedding rows"
        )


def check_k(k: int) -> int:
    """Return `k` as an int when it is a positive integer; raise ValueError naming `k`."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be a positive int: got {type(k).__name__} {k!r}")
    if k <= 0:
        raise ValueError(f"k must be a positive int: got {k}")
    return int(k)


def check_positive_int(value: int | None, name: str) -> int | None:
    """Return `value` (None or a positive int); raise ValueError naming `name`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name} must be a positive int or None: got {value!r}")
    return int(value)


def check_query(query: np.ndarray, dim: int, name: str = "query") -> np.ndarray:
    """Return `query: [dim]` as float32; raise ValueError naming `name`."""
    array = np.asarray(query)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers: got dtype {array.dtype}")
    if array.shape != (dim,):
        hint = " (use search_batch for several queries)" if array.ndim == 2 else ""
        raise ValueError(f"{name} must have shape [{dim}]: got shape {array.shape}{hint}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf")
    return array


def check_queries(queries: np.ndarray, dim: int, name: str = "queries") -> np.ndarray:
    """Return `queries: [num_queries, dim]` as float32; raise ValueError naming `name`."""
    array = np.asarray(queries)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers: got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != dim:
        hint = " (use search for one query)" if array.ndim == 1 else ""
        raise ValueError(
            f"{name} must have shape [num_queries, {dim}]: got shape {array.shape}{hint}"
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise ValueError(f"{name} contains NaN or inf, first at row {bad_rows[0]}")
    return array

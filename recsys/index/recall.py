"""Recall@k, the one definition: the share of each query's relevant items among its first k ranked.

An approximate index's recall against exact search (relevant = the exact top-k ids), offline
evaluation's recall of the next watch (relevant = the label's catalog row) and the training
job's validation recall are all this function. ``ranked: [n, L]`` holds ids, best first, with
no repeats within a row; ``relevant`` is ``[n]`` (one relevant item per query) or ``[n, r]``.
Integer ids (catalog rows) may pad either array with -1, which never counts; string ids (an
index's item ids) have no padding. Every query needs at least one relevant item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD = -1  # padding in integer ranked lists and relevant matrices
_BLOCK_ELEMENTS = 1 << 24  # [rows, L, r] comparisons held at once

IdArray = np.ndarray | Sequence[int] | Sequence[str]


def relevant_matrix(relevant: IdArray) -> np.ndarray:
    """``relevant: [n]`` or ``[n, r]`` -> ``[n, r]``, checked to have a relevant item per row."""
    rel = np.asarray(relevant)
    if rel.dtype.kind in "iu":
        rel = rel.astype(np.int64)
    if rel.ndim == 1:
        rel = rel[:, None]
    if rel.ndim != 2:
        raise ValueError(f"relevant must be [n] or [n, r], got shape {rel.shape}")
    if rel.shape[1] == 0 and rel.shape[0]:
        raise ValueError(f"relevant is empty (shape {rel.shape}): nothing to recall")
    counts = num_relevant(rel)
    if rel.shape[0] and not (counts > 0).all():
        empty = np.flatnonzero(counts == 0)[:5].tolist()
        raise ValueError(f"every query needs a relevant item; rows {empty} have none")
    return rel


def _is_integer(ids: np.ndarray) -> bool:
    return ids.dtype.kind in "iu"


def num_relevant(rel: np.ndarray) -> np.ndarray:
    """Relevant items per query ``[n]``: the non-padding entries."""
    if _is_integer(rel):
        return np.count_nonzero(rel != PAD, axis=1)
    return np.full(rel.shape[0], rel.shape[1])


def _checked_ranked(ranked: IdArray, rel: np.ndarray) -> np.ndarray:
    array = np.asarray(ranked)
    if array.ndim != 2:
        raise ValueError(f"ranked must be [n, k], got shape {array.shape}")
    if array.shape[0] != rel.shape[0]:
        raise ValueError(
            f"ranked has {array.shape[0]} queries but relevant has {rel.shape[0]}: they need "
            "the same number of queries"
        )
    if _is_integer(array) != _is_integer(rel) and array.size and rel.size:
        raise ValueError(
            f"ranked ({array.dtype}) and relevant ({rel.dtype}) must both be integer rows or "
            "both be string ids"
        )
    return array.astype(np.int64) if _is_integer(array) else array


def hits(ranked: IdArray, relevant: IdArray) -> np.ndarray:
    """``[n, L]`` bool: whether ``ranked[i, j]`` is one of query i's relevant items."""
    rel = relevant_matrix(relevant)
    array = _checked_ranked(ranked, rel)
    if not _is_integer(array):
        # String ids: a set per query is ~4x faster than comparing [L, r] strings pairwise.
        return np.array(
            [
                [item in wanted for item in found]
                for found, wanted in zip(array.tolist(), map(set, rel.tolist()), strict=True)
            ],
            dtype=bool,
        ).reshape(array.shape)
    out = np.zeros(array.shape, dtype=bool)
    block = max(1, _BLOCK_ELEMENTS // max(1, array.shape[1] * rel.shape[1]))
    for start in range(0, array.shape[0], block):
        r = array[start : start + block, :, None]
        t = rel[start : start + block, None, :]
        out[start : start + block] = ((r == t) & (t != PAD)).any(axis=2)
    return out


def recall_from_hits(hit: np.ndarray, rel: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per-query recall@k ``[n]`` from ``hits(ranked, rel)`` and ``rel = relevant_matrix(...)``.

    ``k`` None: the whole ranked list. A list shorter than k counts as truncated: a relevant
    item beyond it is a miss.
    """
    if k is not None and (isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0):
        raise ValueError(f"k must be positive, got {k}")
    head = hit if k is None else hit[:, : int(k)]
    found = np.count_nonzero(head, axis=1).astype(np.float64)
    return found / num_relevant(rel)


def per_query_recall(ranked: IdArray, relevant: IdArray, k: int | None = None) -> np.ndarray:
    """Share of each query's relevant items among its first ``k`` ranked (all if None): ``[n]``."""
    rel = relevant_matrix(relevant)
    return recall_from_hits(hits(ranked, rel), rel, k)


def recall_at_k(ranked: IdArray, relevant: IdArray, k: int | None = None) -> float:
    """Mean over queries of (relevant items in the first ``k`` ranked) / (relevant items).

    ``ranked`` and ``relevant`` may be one query's 1-D lists, e.g. an approximate index's ids
    against the exact top-k.
    """
    ranked_array, rel = np.asarray(ranked), np.asarray(relevant)
    if ranked_array.ndim == 1 and rel.ndim == 1:
        ranked_array, rel = ranked_array[None, :], rel[None, :]
    return float(per_query_recall(ranked_array, rel, k).mean())

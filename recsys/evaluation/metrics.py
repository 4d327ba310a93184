"""Ranking metrics over top-K lists of catalog rows: Recall, HitRate, NDCG, MRR, MAP, coverage.

Every function takes ``ranked: [n, k]`` integer catalog rows, best first (one row per query,
no repeats within a row), and ``relevant``: ``[n]`` (one relevant item per query, the next
watch) or ``[n, r]`` padded with ``-1`` (several distinct relevant items). Every query needs
at least one relevant item. Per-query values come as ``[n]`` arrays so that segments can
average them over any subset of queries; the scalar functions are their means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD = -1  # padding in a [n, r] relevant matrix


def relevant_matrix(relevant: np.ndarray | Sequence[int]) -> np.ndarray:
    """``relevant: [n]`` or ``[n, r]`` -> int64 ``[n, r]`` padded with -1 (each row non-empty)."""
    rel = np.asarray(relevant, dtype=np.int64)
    if rel.ndim == 1:
        rel = rel[:, None]
    if rel.ndim != 2:
        raise ValueError(f"relevant must be [n] or [n, r], got shape {rel.shape}")
    if rel.shape[0] and not (rel != PAD).any(axis=1).all():
        empty = np.flatnonzero(~(rel != PAD).any(axis=1))[:5].tolist()
        raise ValueError(f"every query needs a relevant item; rows {empty} have none")
    return rel


def _check(ranked: np.ndarray, rel: np.ndarray, k: int | None = None) -> np.ndarray:
    ranked = np.asarray(ranked, dtype=np.int64)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be [n, k], got shape {ranked.shape}")
    if ranked.shape[0] != rel.shape[0]:
        raise ValueError(f"ranked has {ranked.shape[0]} queries but relevant has {rel.shape[0]}")
    if k is not None and k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return ranked


def hits(ranked: np.ndarray, relevant: np.ndarray | Sequence[int]) -> np.ndarray:
    """``[n, k]`` bool: whether ``ranked[i, j]`` is one of query i's relevant items."""
    rel = relevant_matrix(relevant)
    ranked = _check(ranked, rel)
    # [n, k, r] comparisons, done in query blocks to bound memory.
    out = np.zeros(ranked.shape, dtype=bool)
    block = max(1, (1 << 24) // max(1, ranked.shape[1] * rel.shape[1]))
    for start in range(0, ranked.shape[0], block):
        r = ranked[start : start + block, :, None]
        t = rel[start : start + block, None, :]
        out[start : start + block] = ((r == t) & (t != PAD)).any(axis=2)
    return out


def _num_relevant(rel: np.ndarray) -> np.ndarray:
    return (rel != PAD).sum(axis=1)


def _discounts(k: int) -> np.ndarray:
    """``1 / log2(position + 1)`` for positions 1..k: ``[k]``."""
    return 1.0 / np.log2(np.arange(2, k + 2))


def per_query_metrics(
    ranked: np.ndarray, relevant: np.ndarray | Sequence[int], ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per-query ``[n]`` values of recall@k, hit_rate@k, ndcg@k, map@k for each k, and mrr.

    Keys are ``"recall@10"`` etc. and ``"mrr"`` (reciprocal rank of the first relevant item
    within the whole ranked list, 0 when none is there). Lists shorter than k count as
    truncated: a relevant item beyond the list is a miss.
    """
    rel = relevant_matrix(relevant)
    ranked = _check(ranked, rel)
    hit = hits(ranked, rel).astype(np.float64)  # [n, L]
    n_rel = _num_relevant(rel).astype(np.float64)  # [n]
    length = hit.shape[1]
    out: dict[str, np.ndarray] = {}
    found = np.cumsum(hit, axis=1)  # [n, L]: relevant items within the first j+1
    for k in ks:
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        kk = min(int(k), length)
        head = hit[:, :kk]
        in_top = found[:, kk - 1] if kk else np.zeros(len(rel))
        out[f"recall@{k}"] = in_top / n_rel
        out[f"hit_rate@{k}"] = (in_top > 0).astype(np.float64)
        disc = _discounts(int(k))
        dcg = head @ disc[:kk]
        ideal_n = np.minimum(n_rel, k).astype(np.int64)
        ideal = np.concatenate([[0.0], np.cumsum(disc)])[ideal_n]
        out[f"ndcg@{k}"] = dcg / ideal
        precision = found[:, :kk] / np.arange(1, kk + 1)  # P@j at every position
        out[f"map@{k}"] = (precision * head).sum(axis=1) / np.minimum(n_rel, k)
    first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
    out["mrr"] = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    return out


def recall_at_k(ranked: np.ndarray, relevant: np.ndarray | Sequence[int], k: int) -> float:
    """Mean over queries of (relevant items in the top k) / (relevant items)."""
    return float(per_query_metrics(ranked, relevant, [k])[f"recall@{k}"].mean())


def hit_rate_at_k(ranked: np.ndarray, relevant: np.ndarray | Sequence[int], k: int) -> float:
    """Share of queries with at least one relevant item in the top k."""
    return float(per_query_metrics(ranked, relevant, [k])[f"hit_rate@{k}"].mean())


def ndcg_at_k(ranked: np.ndarray, relevant: np.ndarray | Sequence[int], k: int) -> float:
    """Mean NDCG@k with binary gains: DCG = sum of 1/log2(pos+1) over hits, over the ideal DCG."""
    return float(per_query_metrics(ranked, relevant, [k])[f"ndcg@{k}"].mean())


def map_at_k(ranked: np.ndarray, relevant: np.ndarray | Sequence[int], k: int) -> float:
    """Mean average precision@k: sum of P@j at each hit j <= k, over min(relevant, k)."""
    return float(per_query_metrics(ranked, relevant, [k])[f"map@{k}"].mean())


def mrr(ranked: np.ndarray, relevant: np.ndarray | Sequence[int]) -> float:
    """Mean reciprocal rank of the first relevant item in each ranked list (0 if absent)."""
    return float(per_query_metrics(ranked, relevant, [1])["mrr"].mean())


def catalog_coverage(ranked: np.ndarray, k: int, num_items: int) -> float:
    """Share of the ``num_items`` catalog that appears in at least one top-k list."""
    if num_items <= 0:
        raise ValueError(f"num_items must be positive, got {num_items}")
    head = np.asarray(ranked)[:, :k]
    return float(np.unique(head[head >= 0]).size / num_items)


def popularity_percentiles(counts: np.ndarray) -> np.ndarray:
    """``counts: [num_items]`` -> ``[num_items]`` percentiles in [0, 100).

    An item's percentile is the share of the catalog with strictly fewer (training) watches:
    never-watched items are at 0, the most watched item near 100.
    """
    counts = np.asarray(counts)
    n = len(counts)
    if n == 0:
        return np.zeros(0)
    below = np.searchsorted(np.sort(counts), counts, side="left")
    return 100.0 * below / n


def mean_popularity_percentile(ranked: np.ndarray, k: int, percentiles: np.ndarray) -> float:
    """Mean popularity percentile of every recommended item in the top-k lists."""
    head = np.asarray(ranked)[:, :k]
    return float(np.asarray(percentiles)[head].mean()) if head.size else float("nan")


def summarize(
    ranked: np.ndarray,
    relevant: np.ndarray | Sequence[int],
    ks: Sequence[int],
    num_items: int,
    percentiles: np.ndarray,
) -> dict[str, object]:
    """All metrics of one method as a JSON-ready dict (means over queries).

    ``{"recall": {"10": ...}, "hit_rate": ..., "ndcg": ..., "map": ..., "mrr": x,
    "coverage": {"10": ...}, "popularity_percentile": {"10": ...}}``.
    """
    per_query = per_query_metrics(ranked, relevant, ks)
    out: dict[str, object] = {}
    for name in ("recall", "hit_rate", "ndcg", "map"):
        out[name] = {str(k): float(per_query[f"{name}@{k}"].mean()) for k in ks}
    out["mrr"] = float(per_query["mrr"].mean())
    out["coverage"] = {str(k): catalog_coverage(ranked, k, num_items) for k in ks}
    out["popularity_percentile"] = {
        str(k): mean_popularity_percentile(ranked, k, percentiles) for k in ks
    }
    return out

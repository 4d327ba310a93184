"""Ranking metrics over top-K lists of catalog rows: Recall, HitRate, NDCG, MRR, MAP, coverage.

Every function takes ``ranked: [n, k]`` integer catalog rows, best first (one row per query,
no repeats within a row), and ``relevant``: ``[n]`` (one relevant item per query, the next
watch) or ``[n, r]`` padded with ``-1`` (several distinct relevant items). Every query needs
at least one relevant item. Per-query values come as ``[n]`` arrays so that segments can
average them over any subset of queries; the scalar functions are their means. Recall@k and
the hit matrix are :mod:`recsys.index.recall`'s, the one definition the index's tuning and
the training job's validation recall use too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys.index.recall import hits, num_relevant, recall_from_hits, relevant_matrix


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
    hit_mask = hits(ranked, rel)  # [n, L]
    hit = hit_mask.astype(np.float64)
    n_rel = num_relevant(rel).astype(np.float64)  # [n]
    length = hit.shape[1]
    out: dict[str, np.ndarray] = {}
    found = np.cumsum(hit, axis=1)  # [n, L]: relevant items within the first j+1
    for k in ks:
        # Recall is the shared definition (it also checks k); the rest build on the same hits.
        out[f"recall@{k}"] = recall_from_hits(hit_mask, rel, k)
        kk = min(int(k), length)
        head = hit[:, :kk]
        in_top = found[:, kk - 1] if kk else np.zeros(len(rel))
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
    """Mean popularity percentile of every recommended item in the top-k lists (-1 slots of
    lists shorter than k are not items)."""
    head = np.asarray(ranked)[:, :k]
    head = head[head >= 0]
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

"""Exact ranking of the catalog as it stood at each query's moment (offline evaluation).

A video uploaded after a query's time cannot be recommended to it, and a video's upload age
(a candidate-tower input) depends on when it is embedded. So queries are grouped by day;
each day's candidate embeddings are computed at that day's start, videos not yet uploaded
then are masked out, and the top K of the rest are exact dot products, as a serving index
refreshed daily would return (it holds the videos that existed when it was built).
Under the watched-video exclusion rule (:mod:`recsys.evaluation.exclusion`) each query's
watched videos are masked out as well, as ``Recommend`` does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from recsys.evaluation.exclusion import Watched, mask_excluded
from recsys.index.top_k import top_k

SECONDS_PER_DAY = 86_400
# Scores are computed for this many (query, video) pairs at a time: bounded memory at 1M videos.
_BLOCK_PAIRS = 1 << 24


def top_k_available(
    queries: np.ndarray,
    query_times: np.ndarray,
    candidates: np.ndarray,
    upload_time: np.ndarray,
    k: int,
    excluded: Watched | None = None,
) -> np.ndarray:
    """Rows ``[Q, k]`` of the best candidates uploaded at or before each query's time.

    ``queries: [Q, d]``, ``query_times: [Q]`` Unix seconds, ``candidates: [N, d]``,
    ``upload_time: [N]``; ``excluded``: rows never returned to each query (its watched
    videos). Ties go to the lower row; unavailable slots (fewer than k available videos)
    hold -1.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    n = len(candidates)
    k_eff = min(k, n)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    step = max(1, _BLOCK_PAIRS // max(n, 1))
    for start in range(0, len(queries), step):
        scores = queries[start : start + step] @ candidates.T  # [b, N]
        unavailable = upload_time[None, :] > query_times[start : start + step, None]
        scores[unavailable] = -np.inf
        if excluded is not None:
            mask_excluded(scores, excluded.take(np.arange(start, start + len(scores))))
        best, best_scores = top_k(scores, k_eff)
        best[~np.isfinite(best_scores)] = -1
        out[start : start + step, :k_eff] = best
    return out


def rank_by_day(
    query_embeddings: np.ndarray,
    query_times: np.ndarray,
    embed_catalog: Callable[[int], np.ndarray],
    upload_time: np.ndarray,
    k: int,
    excluded: Watched | None = None,
) -> np.ndarray:
    """Top-``k`` catalog rows ``[Q, k]`` per query, with the catalog embedded once per day.

    ``embed_catalog(reference_time) -> [N, d]`` embeds every video with its upload age at
    ``reference_time`` (the start of the query's UTC day); videos uploaded after it are not
    in that day's catalog; ``excluded``: each query's rows never returned (its watched
    videos), or None.
    """
    query_times = np.asarray(query_times, dtype=np.int64)
    days = query_times // SECONDS_PER_DAY
    out = np.full((len(query_embeddings), k), -1, dtype=np.int64)
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        start = int(day) * SECONDS_PER_DAY
        candidates = embed_catalog(start)
        out[rows] = top_k_available(
            query_embeddings[rows],
            np.full(len(rows), start),
            candidates,
            upload_time,
            k,
            None if excluded is None else excluded.take(rows),
        )
    return out

"""A sweep that picks ScaNN's fastest search parameters meeting a recall@k target."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from recsys.index._validation import check_k, check_positive_int, check_queries
from recsys.index.base import Index
from recsys.index.recall import per_query_recall
from recsys.index.scann_index import ScannIndex

logger = logging.getLogger(__name__)

_LEAF_FRACTIONS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
_REORDER_MULTIPLES = (1, 2, 3, 5, 10, 20)
_WARMUP_QUERIES = 10


@dataclasses.dataclass(frozen=True)
class TuneTrial:
    """One setting tried: its recall@k, and its latency if it was a candidate (else None)."""

    leaves_to_search: int
    reorder_k: int
    recall: float
    recall_stderr: float
    latency_p50_ms: float | None


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """The chosen setting; `met_target` is False when no setting reached the target recall."""

    leaves_to_search: int
    reorder_k: int
    recall: float
    recall_stderr: float
    latency_p50_ms: float
    met_target: bool
    trials: tuple[TuneTrial, ...]


def _default_leaves(num_leaves: int) -> list[int]:
    return sorted({max(1, min(num_leaves, round(f * num_leaves))) for f in _LEAF_FRACTIONS})


def _median_latency_ms(
    index: ScannIndex, queries: np.ndarray, k: int, leaves: int, reorder: int
) -> float:
    """Median wall time of single-query `search` calls, in milliseconds."""
    for query in queries[:_WARMUP_QUERIES]:
        index.search(query, k, leaves_to_search=leaves, reorder_k=reorder)
    timings = np.empty(len(queries))
    for i, query in enumerate(queries):
        started = time.perf_counter()
        index.search(query, k, leaves_to_search=leaves, reorder_k=reorder)
        timings[i] = time.perf_counter() - started
    return float(np.median(timings) * 1e3)


def tune_scann(
    index: ScannIndex,
    queries: np.ndarray,
    k: int,
    target_recall: float,
    *,
    exact: Index | np.ndarray,
    leaves_candidates: Sequence[int] | None = None,
    reorder_candidates: Sequence[int] | None = None,
    latency_queries: int = 200,
    stderr_margin: float = 2.0,
    apply: bool = True,
) -> TuneResult:
    """Pick the fastest leaves_to_search x reorder_k whose recall@k meets `target_recall`.

    Recall is measured on held-out `queries: [n, dim]`; `apply` makes the chosen setting the
    index's default search parameters (saved with it). `exact` is an exact index over the
    same items, or its top-k ids `[n, k]` for `queries`.

    A setting meets the target when its mean recall less `stderr_margin` standard errors
    does: recall varies a lot between queries (a few in small clusters find little), so a
    setting that only just meets the target on these queries misses it on new ones half the
    time. Use 0 to compare the plain mean.

    Recall is measured for every setting tried; latency (median single-query `search`) only
    for the cheapest setting meeting the target at each reorder depth, since the others are
    slower by construction.
    """
    queries, k, latency_queries = _check_arguments(
        index, queries, k, target_recall, latency_queries, stderr_margin
    )
    exact_ids = _exact_ids(index, queries, k, exact)
    leaves_list, reorder_list = _candidate_settings(index, k, leaves_candidates, reorder_candidates)
    timed_queries = queries[:latency_queries]
    trials = _sweep(
        index,
        queries,
        k,
        exact_ids,
        leaves_list,
        reorder_list,
        lambda recall, stderr: recall - stderr_margin * stderr >= target_recall,
        timed_queries,
    )
    result = _choose(index, trials, timed_queries, k)
    if not result.met_target:
        logger.warning(
            "no setting reached recall@%d %.3f (less %.1f standard errors); best was %.4f "
            "(leaves %d, reorder %d)",
            k,
            target_recall,
            stderr_margin,
            result.recall,
            result.leaves_to_search,
            result.reorder_k,
        )
    if apply:
        index.set_search_defaults(
            leaves_to_search=result.leaves_to_search, reorder_k=result.reorder_k
        )
    logger.info(
        "tuned: leaves %d, reorder %d, recall@%d %.4f, p50 %.3f ms (target met: %s)",
        result.leaves_to_search,
        result.reorder_k,
        k,
        result.recall,
        result.latency_p50_ms,
        result.met_target,
    )
    return result


def _check_arguments(
    index: ScannIndex,
    queries: np.ndarray,
    k: int,
    target_recall: float,
    latency_queries: int,
    stderr_margin: float,
) -> tuple[np.ndarray, int, int]:
    """Validate `tune_scann`'s arguments; return the checked queries, k and latency_queries."""
    if index.num_leaves is None:
        raise ValueError(
            "index: tune_scann needs a tree index (scoring='ah' and a non-empty main index)"
        )
    if not isinstance(target_recall, int | float) or not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1]: got {target_recall!r}")
    queries = check_queries(queries, index.dim)
    k = check_k(k)
    latency_queries = check_positive_int(latency_queries, "latency_queries") or 1
    if not isinstance(stderr_margin, int | float) or not 0.0 <= stderr_margin < math.inf:
        raise ValueError(f"stderr_margin must be a finite number >= 0: got {stderr_margin!r}")
    if queries.shape[0] == 0:
        raise ValueError("queries is empty: pass held-out queries to measure recall on")
    return queries, k, latency_queries


def _exact_ids(
    index: ScannIndex, queries: np.ndarray, k: int, exact: Index | np.ndarray
) -> np.ndarray:
    """The exact top-k ids `[n, min(k, len)]` for `queries`: searched, or checked as given."""
    if isinstance(exact, Index):
        return exact.search_batch(queries, k).ids
    exact_ids = np.asarray(exact)
    expected_shape = (queries.shape[0], min(k, len(index)))
    if exact_ids.shape != expected_shape:
        raise ValueError(
            f"exact must be top-k ids of shape {list(expected_shape)}: got {list(exact_ids.shape)}"
        )
    return exact_ids


def _candidate_settings(
    index: ScannIndex,
    k: int,
    leaves_candidates: Sequence[int] | None,
    reorder_candidates: Sequence[int] | None,
) -> tuple[list[int], list[int]]:
    """The leaves_to_search and reorder_k values to try, ascending (defaults from the tree)."""
    assert index.num_leaves is not None  # _check_arguments refused a tree-less index
    leaves_list = sorted(set(leaves_candidates or _default_leaves(index.num_leaves)))
    reorder_list = sorted(set(reorder_candidates or [m * k for m in _REORDER_MULTIPLES]))
    for value in (*leaves_list, *reorder_list):
        check_positive_int(value, "leaves_candidates and reorder_candidates")
    return leaves_list, reorder_list


def _sweep(
    index: ScannIndex,
    queries: np.ndarray,
    k: int,
    exact_ids: np.ndarray,
    leaves_list: list[int],
    reorder_list: list[int],
    meets_target: Callable[[float, float], bool],
    timed_queries: np.ndarray,
) -> list[TuneTrial]:
    """Recall of each setting worth trying; latency of those meeting the target."""
    trials: list[TuneTrial] = []
    # (leaves, reorder) meeting the target with fewer leaves at a smaller depth dominates any
    # setting with as many leaves at a larger depth: those are skipped.
    leaves_cap = math.inf
    for reorder in reorder_list:
        for leaves in (value for value in leaves_list if value < leaves_cap):
            found = index.search_batch(queries, k, leaves_to_search=leaves, reorder_k=reorder)
            recalls = per_query_recall(found.ids, exact_ids)
            recall = float(recalls.mean())
            stderr = (
                float(recalls.std(ddof=1) / math.sqrt(len(recalls))) if len(recalls) > 1 else 0.0
            )
            latency = None
            if meets_target(recall, stderr):
                latency = _median_latency_ms(index, timed_queries, k, leaves, reorder)
                leaves_cap = leaves
            trials.append(TuneTrial(leaves, reorder, recall, stderr, latency))
            logger.debug(
                "leaves %d reorder %d: recall %.4f +- %.4f", leaves, reorder, recall, stderr
            )
            if latency is not None:
                break
    return trials


def _choose(
    index: ScannIndex, trials: list[TuneTrial], timed_queries: np.ndarray, k: int
) -> TuneResult:
    """The fastest trial meeting the target, or (timed now) the one with the best recall."""
    timed = [trial for trial in trials if trial.latency_p50_ms is not None]
    met_target = bool(timed)
    if met_target:
        best = min(timed, key=lambda trial: (trial.latency_p50_ms, -trial.recall))
    else:
        most = max(trials, key=lambda trial: trial.recall)
        best = dataclasses.replace(
            most,
            latency_p50_ms=_median_latency_ms(
                index, timed_queries, k, most.leaves_to_search, most.reorder_k
            ),
        )
    assert best.latency_p50_ms is not None
    return TuneResult(
        leaves_to_search=best.leaves_to_search,
        reorder_k=best.reorder_k,
        recall=best.recall,
        recall_stderr=best.recall_stderr,
        latency_p50_ms=best.latency_p50_ms,
        met_target=met_target,
        trials=tuple(trials),
    )

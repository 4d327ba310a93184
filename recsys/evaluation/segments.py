"""Evaluation breakdowns: segments of the queries, and the paper's Figure 4 by video age.

Segments split the evaluation queries by history length, video age, region, gender and age
band, each with its per-query metrics averaged; the Figure 4 shares compare the model's
predicted watch share by video age with the observed one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from recsys.examples.building import LABEL_TIME
from recsys.features import contract as F

DAY = 86_400
# Video age at watch time (days since upload), the x axis of the paper's Figure 4.
AGE_EDGES = (0.0, 1.0, 2.0, 4.0, 7.0, 14.0, 30.0, 60.0, 120.0, 365.0, math.inf)


def age_bin_labels() -> list[str]:
    """Labels of the video-age bins (days since upload)."""
    labels = []
    for lo, hi in itertools.pairwise(AGE_EDGES):
        labels.append(f"{lo:g}+" if math.isinf(hi) else f"{lo:g}-{hi:g}")
    return labels


def _age_bins(age_days: np.ndarray) -> np.ndarray:
    """Bin index of each age; -1 for videos not uploaded yet."""
    edges = np.asarray(AGE_EDGES[1:-1])
    idx = np.searchsorted(edges, age_days, side="right")
    return np.where(age_days < 0, -1, idx)


def observed_age_share(
    query_times: np.ndarray, label_rows: np.ndarray, upload_time: np.ndarray
) -> np.ndarray:
    """Share of the true next watches in each video-age bin ``[num_bins]``."""
    age = (np.asarray(query_times) - upload_time[label_rows]) / DAY
    bins = _age_bins(np.maximum(age, 0.0))
    return np.bincount(bins, minlength=len(AGE_EDGES) - 1) / max(len(bins), 1)


def predicted_age_share(
    query_embeddings: np.ndarray,
    item_embeddings: np.ndarray,
    temperature: float,
    query_times: np.ndarray,
    upload_time: np.ndarray,
) -> tuple[np.ndarray, float]:
    """Mean softmax mass per video-age bin ``[num_bins]`` and the mass on unreleased videos.

    Ages are taken at each query's time; "unreleased" videos were uploaded after it.
    ``query_embeddings: [n, d]``, ``item_embeddings: [N, d]``: the logit is their dot
    product over ``temperature``, the model's training temperature.
    """
    num_bins = len(AGE_EDGES) - 1
    n, num_items = len(query_embeddings), len(item_embeddings)
    totals = np.zeros(num_bins + 1)
    block = max(1, (1 << 22) // max(1, num_items))
    for start in range(0, n, block):
        q = query_embeddings[start : start + block]
        logits = (q @ item_embeddings.T).astype(np.float64) / temperature
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        age = (query_times[start : start + block, None] - upload_time[None, :]) / DAY
        bins = _age_bins(age) + 1  # 0: not uploaded yet
        totals += np.bincount(bins.reshape(-1), weights=p.reshape(-1), minlength=num_bins + 1)
    totals /= max(n, 1)
    return totals[1:], float(totals[0])


# ---------------------------------------------------------------- segments


def _history_length_segments(queries: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    count = (np.asarray(queries[F.HISTORY]) != F.PAD).sum(axis=1)
    return [
        ("0-2 watches (new users)", count <= 2),
        ("3-9 watches", (count >= 3) & (count <= 9)),
        ("10-49 watches", (count >= 10) & (count <= 49)),
        ("50+ watches (full window)", count >= 50),
    ]


def _video_age_segments(age_days: np.ndarray) -> list[tuple[str, np.ndarray]]:
    return [
        ("< 2 days (fresh uploads)", age_days < 2),
        ("2-7 days", (age_days >= 2) & (age_days < 7)),
        ("7-30 days", (age_days >= 7) & (age_days < 30)),
        ("30-365 days", (age_days >= 30) & (age_days < 365)),
        ("> 1 year", age_days >= 365),
    ]


def _categorical_segments(
    values: pd.Series, top: int | None = None, missing: str = "unknown"
) -> list[tuple[str, np.ndarray]]:
    filled = values.astype(object).where(values.notna() & (values.astype(str) != ""), missing)
    vals = filled.astype(str).to_numpy()
    counts = pd.Series(vals).value_counts()
    names = counts.index.tolist()
    out = []
    shown = names if top is None else names[:top]
    for name in shown:
        out.append((str(name), vals == name))
    if top is not None and len(names) > top:
        out.append(("other", ~np.isin(vals, shown)))
    return out


def _age_band_segments(ages: pd.Series) -> list[tuple[str, np.ndarray]]:
    age = pd.to_numeric(ages, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    edges = [(0, 18, "under 18"), (18, 25, "18-24"), (25, 35, "25-34"), (35, 45, "35-44")]
    edges += [(45, 55, "45-54"), (55, 65, "55-64"), (65, 200, "65+")]
    out = [(label, (age >= lo) & (age < hi)) for lo, hi, label in edges]
    out.append(("unknown", np.isnan(age)))
    return out


def build_segments(
    queries: Mapping[str, np.ndarray],
    users: pd.DataFrame,
    upload_time: np.ndarray,
    item_vocab_ids: np.ndarray,
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Segment masks ``[n]`` bool by group: history length, video age, demographics."""
    user_rows = np.asarray(queries[F.USER_INDEX], np.int64)
    labels = np.asarray(queries[F.ITEM_INDEX], np.int64)
    age_days = (np.asarray(queries[LABEL_TIME]) - upload_time[labels]) / DAY
    seen = item_vocab_ids[labels] > F.OOV
    u = users.iloc[user_rows].reset_index(drop=True)
    groups: dict[str, list[tuple[str, np.ndarray]]] = {
        "history_length": _history_length_segments(queries),
        "video_age": _video_age_segments(age_days),
        "video_in_training": [
            ("seen in training", seen),
            ("not in training (cold start)", ~seen),
        ],
    }
    if "region" in u.columns:
        groups["region"] = _categorical_segments(u["region"])
    groups["country"] = _categorical_segments(u["country"], top=10)
    groups["age_band"] = _age_band_segments(u["age"])
    groups["gender"] = _categorical_segments(u["gender"])
    return groups


SEGMENT_TITLES = {
    "history_length": "Users by history length (watches in the model's context window)",
    "video_age": "Videos by age at watch time",
    "video_in_training": "Videos seen in training vs new (cold start)",
    "region": "Users by region",
    "country": "Users by country (10 largest)",
    "age_band": "Users by age band",
    "gender": "Users by gender",
}


def segment_metrics(
    groups: Mapping[str, list[tuple[str, np.ndarray]]],
    per_query: Mapping[str, Mapping[str, np.ndarray]],
    ks: Sequence[int],
) -> dict[str, list[dict[str, Any]]]:
    """Recall@K of every method within every segment (empty segments left out)."""
    out: dict[str, list[dict[str, Any]]] = {}
    n = len(next(iter(next(iter(per_query.values())).values())))
    for group, segments in groups.items():
        rows = []
        for label, mask in segments:
            size = int(mask.sum())
            if not size:
                continue
            rows.append(
                {
                    "segment": label,
                    "queries": size,
                    "share": size / max(n, 1),
                    "recall": {
                        method: {str(k): float(values[f"recall@{k}"][mask].mean()) for k in ks}
                        for method, values in per_query.items()
                    },
                }
            )
        out[group] = rows
    return out

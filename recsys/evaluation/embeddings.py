"""What the video embeddings learned: a 2-D projection, nearest neighbours, drift between versions.

The projection is PCA (numpy SVD) of a sample of item embeddings; neighbours are by dot
product (the towers' outputs are unit vectors, so this is cosine similarity); between two
model versions, the mean Jaccard overlap of each video's top-10 neighbours says how much the
neighbourhoods moved (1: unchanged, 0: entirely new).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys.index.top_k import exact_top_k

log = logging.getLogger(__name__)

MAX_PROJECTED = 4000  # points in the scatter plot
MAX_CATEGORIES = 10  # colours; the rest are grey "other"


@dataclass
class Projection:
    """2-D PCA coordinates ``xy: [n, 2]`` of sampled videos and their category names ``[n]``."""

    xy: np.ndarray
    categories: np.ndarray
    explained_variance: tuple[float, float]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pca_2d(embeddings: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """First two principal components ``[n, 2]`` of ``embeddings: [n, d]``, variance shares."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], 2)), (0.0, 0.0)
    centred = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:2]
    xy = centred @ comps.T
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    var = s**2
    total = float(var.sum()) or 1.0
    ratios = [float(v / total) for v in var[:2]] + [0.0, 0.0]
    return xy, (ratios[0], ratios[1])


def nearest_neighbours(embeddings: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` cosine neighbours ``[len(rows), k]`` of ``rows``, best first, self excluded."""
    unit = _unit(embeddings)
    rows = np.asarray(rows, dtype=np.int64)
    found, _ = exact_top_k(unit[rows], unit, k + 1)
    out = np.empty((len(rows), min(k, len(unit) - 1)), dtype=np.int64)
    for i, (row, cand) in enumerate(zip(rows, found, strict=True)):
        out[i] = cand[cand != row][: out.shape[1]]
    return out


def category_agreement(
    embeddings: np.ndarray, categories: np.ndarray, rows: np.ndarray, k: int = 10
) -> float:
    """Share of the top-``k`` neighbours of ``rows`` that have the same category."""
    if not len(rows):
        return float("nan")
    nn = nearest_neighbours(embeddings, rows, k)
    cats = np.asarray(categories, dtype=object)
    return float((cats[nn] == cats[np.asarray(rows)][:, None]).mean())


def neighbourhood_overlap(
    emb_a: np.ndarray,
    ids_a: np.ndarray,
    emb_b: np.ndarray,
    ids_b: np.ndarray,
    sample: int = 500,
    k: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Jaccard overlap of two versions' top-``k`` neighbourhoods over a sample of videos.

    Only videos present in both versions are sampled and neighbours are compared by id, so
    the catalogs may differ in order and content.
    """
    ids_a = np.asarray(ids_a).astype(str)
    ids_b = np.asarray(ids_b).astype(str)
    common = np.intersect1d(ids_a, ids_b)
    if len(common) <= k:
        return {"videos": 0, "k": k, "mean_jaccard": None, "common_videos": len(common)}
    rng = np.random.default_rng(seed)
    chosen = rng.choice(common, size=min(sample, len(common)), replace=False)
    # Restrict both catalogs to the common videos so neither side has extra candidates.
    pos_a = pd.Index(ids_a).get_indexer(common)
    pos_b = pd.Index(ids_b).get_indexer(common)
    sub_a, sub_b = emb_a[pos_a], emb_b[pos_b]
    q = pd.Index(common).get_indexer(chosen)
    nn_a = nearest_neighbours(sub_a, q, k)
    nn_b = nearest_neighbours(sub_b, q, k)
    inter = (nn_a[:, :, None] == nn_b[:, None, :]).any(axis=2).sum(axis=1)
    jaccard = inter / (nn_a.shape[1] + nn_b.shape[1] - inter)
    return {
        "videos": len(chosen),
        "k": k,
        "common_videos": len(common),
        "mean_jaccard": float(jaccard.mean()),
        "median_jaccard": float(np.median(jaccard)),
        "share_unchanged": float((jaccard == 1.0).mean()),
        "share_disjoint": float((jaccard == 0.0).mean()),
    }


def _examples(
    embeddings: np.ndarray, items: pd.DataFrame, counts: np.ndarray, shown: int, k: int
) -> list[dict[str, Any]]:
    """Nearest neighbours of the most-watched video of each of the biggest categories."""
    frame = pd.DataFrame(
        {"row": np.arange(len(items)), "category": items["category"].astype(str), "n": counts}
    )
    frame = frame[frame["n"] > 0].sort_values(["n", "row"], ascending=[False, True])
    picks = frame.drop_duplicates("category").head(shown)["row"].to_numpy(np.int64)
    if not len(picks):
        return []
    nn = nearest_neighbours(embeddings, picks, k)
    unit = _unit(embeddings)
    out = []
    for row, neigh in zip(picks, nn, strict=True):

        def describe(r: int) -> dict[str, Any]:
            title = items["title"].iat[r]
            return {
                "item_id": str(items["item_id"].iat[r]),
                "title": title if isinstance(title, str) else "",
                "category": str(items["category"].iat[r]),
                "training_watches": int(counts[r]),
            }

        entry = describe(int(row))
        entry["neighbours"] = [
            {**describe(int(r)), "similarity": float(unit[row] @ unit[r])} for r in neigh
        ]
        out.append(entry)
    return out


def embedding_report(
    embeddings: np.ndarray,
    items: pd.DataFrame,
    counts: np.ndarray,
    compare: tuple[np.ndarray, pd.DataFrame] | None = None,
    seed: int = 0,
    examples: int = 6,
    k: int = 5,
) -> tuple[dict[str, Any], Projection]:
    """Statistics and neighbour examples (JSON-ready) and the projection for the plot.

    ``embeddings: [N, d]`` row-aligned with ``items`` (item_id, title, category);
    ``counts: [N]`` training watches; ``compare``: another version's embeddings and items.
    """
    rng = np.random.default_rng(seed)
    n = len(embeddings)
    watched = np.flatnonzero(counts > 0)
    pool = watched if len(watched) >= 50 else np.arange(n)
    sample = np.sort(rng.choice(pool, size=min(MAX_PROJECTED, len(pool)), replace=False))
    xy, explained = pca_2d(embeddings[sample])
    cats = items["category"].astype(str).to_numpy()[sample]
    top = pd.Series(cats).value_counts().index[:MAX_CATEGORIES]
    cats = np.where(np.isin(cats, top), cats, "other")
    projection = Projection(xy=xy, categories=cats, explained_variance=explained)
    agree_rows = rng.choice(pool, size=min(500, len(pool)), replace=False)
    all_cats = items["category"].astype(str).to_numpy()
    report: dict[str, Any] = {
        "projected_videos": len(sample),
        "explained_variance": list(explained),
        "category_agreement_at_10": category_agreement(embeddings, all_cats, agree_rows, 10),
        "category_agreement_chance": float(
            (pd.Series(all_cats).value_counts(normalize=True) ** 2).sum()
        ),
        "neighbour_examples": _examples(embeddings, items, counts, examples, k),
        "compare": None,
    }
    if compare is not None:
        other_emb, other_items = compare
        report["compare"] = neighbourhood_overlap(
            embeddings,
            items["item_id"].to_numpy(),
            other_emb,
            other_items["item_id"].to_numpy(),
            seed=seed,
        )
    return report, projection

"""Tuning an artifact's ScaNN index: the fastest search setting meeting a recall target.

Recall is measured against exact search on the model's own queries (the query tower over a
sample of its stored profiles), on query proxies built from the catalog, or on whatever
queries the caller has (the export: the training job's held-out examples). The chosen
setting becomes the index's saved defaults; the manifest's ``index.tuning`` records it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.artifact.catalog import read_catalog
from recsys.artifact.layout import PROFILES_FILE, QUERY_MODEL_DIR
from recsys.artifact.reader import ArtifactVersion, open_version
from recsys.index.base import Index
from recsys.index.exact import ExactIndex
from recsys.index.scann_index import ScannIndex
from recsys.index.tuning import TuneResult, tune_scann
from recsys.indexing.derived_versions import (
    ArtifactIndexError,
    artifact_errors,
    derive_version,
    index_entry,
    load_version_index,
    positive_int,
    save_index,
)

logger = logging.getLogger(__name__)

# Query proxies for tuning: an item embedding plus noise of this norm relative to it, so a
# proxy has cosine about 1 / sqrt(1 + 0.75**2) = 0.8 with the item it came from.
DEFAULT_QUERY_NOISE = 0.75
# What tuning measures recall on: the model's own queries (the query tower over stored
# profiles), or proxies built from the catalog; "auto": profiles when the version has them.
QUERY_SOURCES = ("auto", "profiles", "proxies")
# What tuning aims at unless told otherwise: the index issue's target, recall@100 >= 0.95
# against exact search, measured on this many queries.
TUNE_K = 100
TUNE_TARGET_RECALL = 0.95
TUNE_QUERIES = 1000


class TuningNotApplicableError(ValueError):
    """The artifact's index has no search parameters to tune (exact search or brute force)."""


def proxy_queries(
    embeddings: np.ndarray, num_queries: int, noise: float, seed: int = 0
) -> np.ndarray:
    """Held-out query proxies `[num_queries, dim]`: sampled item embeddings plus noise, unit norm.

    Real query embeddings are not in an artifact; a query lands near the videos it leads to,
    so each proxy is a random catalog item's direction plus isotropic Gaussian noise of
    relative norm `noise` (in expectation), renormalised.
    """
    num_items, dim = embeddings.shape
    rng = np.random.default_rng(seed)
    rows = rng.choice(num_items, size=num_queries, replace=num_queries > num_items)
    base = embeddings[rows].astype(np.float32)
    base /= np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
    queries = base + rng.standard_normal((num_queries, dim)).astype(np.float32) * (
        noise / math.sqrt(dim)
    )
    queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    return queries


def profile_queries(
    version_path: Path, num_queries: int, seed: int = 0, verify: bool = True
) -> np.ndarray:
    """Query-tower embeddings `[n, dim]` of up to `num_queries` stored profiles, now.

    The queries a user_id request scores with (users sampled with `seed`). Loads the version
    as the server does (TensorFlow, a probe; checksums unless `verify` is False because the
    caller has just checked them).
    """
    return _profile_queries_and_index(version_path, num_queries, seed, verify)[0]


def _profile_queries_and_index(
    version_path: Path, num_queries: int, seed: int, verify: bool
) -> tuple[np.ndarray, Index]:
    """`profile_queries`, and the index the loaded model holds (callers may tune it)."""
    from recsys.inference.recommender import Recommender  # TensorFlow: only when asked for

    model = Recommender.load(version_path, verify=verify)
    profiles = model.profiles
    if profiles is None or len(profiles) == 0:
        raise ArtifactIndexError(f"{version_path} has no stored profiles to take queries from")
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(profiles), size=min(num_queries, len(profiles)), replace=False)
    return model.query_embeddings([profiles.user_id_at(int(row)) for row in rows]), model.index


def has_profiles(version_path: Path) -> bool:
    """Whether the version has stored profiles and a query tower to embed them with."""
    return (version_path / PROFILES_FILE).is_file() and (version_path / QUERY_MODEL_DIR).is_dir()


def tune_index(
    index: ScannIndex,
    ids: Sequence[str],
    embeddings: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = TUNE_K,
    target_recall: float = TUNE_TARGET_RECALL,
    source: str,
    described: str,
    seed: int | None = None,
) -> tuple[TuneResult, dict[str, Any]]:
    """Tune `index`'s search defaults on `queries` against exact search over `embeddings`.

    Returns the result and the manifest's ``index.tuning`` entry (`source` / `described`:
    where the queries came from). `index` keeps the chosen setting as its defaults.
    """
    started = time.perf_counter()
    exact = ExactIndex.build(ids, embeddings).search_batch(queries, k).ids
    logger.info(
        "exact top-%d of %d %s queries in %.2f s",
        k,
        len(queries),
        source,
        time.perf_counter() - started,
    )
    result = tune_scann(index, queries, k, target_recall, exact=exact)
    if not result.met_target:
        logger.warning(
            "no setting reached recall@%d %.3f; saving the best found (%.4f)",
            k,
            target_recall,
            result.recall,
        )
    return result, {
        "k": k,
        "target_recall": target_recall,
        "met_target": result.met_target,
        "recall": result.recall,
        "recall_stderr": result.recall_stderr,
        "latency_p50_ms": result.latency_p50_ms,
        "leaves_to_search": result.leaves_to_search,
        "reorder_k": result.reorder_k,
        "num_queries": len(queries),
        "query_source": source,
        "queries": described,
        "seed": seed,
        "settings_tried": len(result.trials),
    }


def _check_tune_arguments(target_recall: float, query_noise: float, queries: str) -> None:
    """ValueError naming the first of these arguments that is out of range."""
    if isinstance(target_recall, bool) or not isinstance(target_recall, int | float):
        raise ValueError(f"target_recall must be a number in (0, 1]: got {target_recall!r}")
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1]: got {target_recall}")
    if not math.isfinite(query_noise) or query_noise < 0:
        raise ValueError(f"query_noise must be a finite number >= 0: got {query_noise!r}")
    if queries not in QUERY_SOURCES:
        raise ValueError(f"queries must be one of {QUERY_SOURCES}: got {queries!r}")


def _tunable_index(version: ArtifactVersion) -> ScannIndex:
    """The version's index; TuningNotApplicableError unless it is a ScaNN tree."""
    index = load_version_index(version)
    if not isinstance(index, ScannIndex) or index.num_leaves is None:
        why = (
            "it is an exact index (the default below 20,000 items): every search already "
            "returns the exact top k"
            if isinstance(index, ExactIndex)
            else "it is a ScaNN brute-force index (no tree: too few items or scoring="
            "'brute_force'), whose search is exact"
        )
        raise TuningNotApplicableError(
            f"tuning is not applicable to the index of {version.path} ({len(index)} items): "
            f"{why}. Nothing was written. To tune, build a ScaNN tree index first: "
            f"`recsys index build --artifact {version.path} --kind scann`"
        )
    return index


def tune_artifact_index(
    artifact: str | Path,
    k: int = TUNE_K,
    target_recall: float = TUNE_TARGET_RECALL,
    num_queries: int = TUNE_QUERIES,
    seed: int = 0,
    *,
    query_noise: float = DEFAULT_QUERY_NOISE,
    queries: str = "auto",
) -> tuple[Path, TuneResult]:
    """Tune a ScaNN index's search defaults to `target_recall` at `k`; save as a new version.

    `queries`: recall is measured on the model's profile queries ("profiles"), on catalog
    proxies ("proxies"), or on profiles when the version has them ("auto").
    """
    started = time.perf_counter()
    k = positive_int(k, "k")
    num_queries = positive_int(num_queries, "num_queries")
    _check_tune_arguments(target_recall, query_noise, queries)
    with artifact_errors(artifact):
        version = open_version(artifact)
    index = _tunable_index(version)
    with artifact_errors(version.path):
        catalog = read_catalog(version)
    source = queries
    if source == "auto":
        source = "profiles" if has_profiles(version.path) else "proxies"
    if source == "profiles":
        # The model loads the index as well: tune its copy rather than hold two (~0.6 GB at
        # 1M videos). open_version has verified every checksum: do not hash them twice.
        del index
        vectors, loaded = _profile_queries_and_index(version.path, num_queries, seed, False)
        assert isinstance(loaded, ScannIndex)  # the same files as the index checked above
        index = loaded
        described = f"query tower over {len(vectors)} stored profiles (sampled), at tuning time"
    else:
        vectors = proxy_queries(catalog.embeddings, num_queries, query_noise, seed)
        described = f"catalog items + Gaussian noise of relative norm {query_noise}, unit norm"
    result, tuning = tune_index(
        index,
        catalog.ids,
        catalog.embeddings,
        vectors,
        k=k,
        target_recall=target_recall,
        source=source,
        described=described,
        seed=seed,
    )
    entry = index_entry(index, version.manifest.index)
    entry["tuning"] = tuning
    new_path = derive_version(version, entry, lambda folder: save_index(index, folder))
    logger.info(
        "index tune: %s -> %s (leaves %d, reorder %d, recall@%d %.4f, p50 %.3f ms) in %.1f s",
        version.path,
        new_path,
        result.leaves_to_search,
        result.reorder_k,
        k,
        result.recall,
        result.latency_p50_ms,
        time.perf_counter() - started,
    )
    return new_path, result

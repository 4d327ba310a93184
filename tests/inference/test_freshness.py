"""Tests for recsys.inference.freshness and the Retriever's freshness path.

The expectation is the candidate tower's own formula: at moment t a video's embedding is
``[cos(psi(age_t)) * main, sin(psi(age_t))]``, and its logit the dot product with the query.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from recsys.artifact.catalog import read_catalog
from recsys.artifact.layout import CANDIDATE_MODEL_DIR
from recsys.artifact.reader import open_version
from recsys.features.contract import FRESHNESS_EDGES_DAYS, SECONDS_PER_DAY
from recsys.index.exact import ExactIndex
from recsys.inference.candidate_embedder import upload_age_days
from recsys.inference.freshness import (
    AgedCatalog,
    FreshnessTerm,
    age_independent,
    read_freshness_term,
)
from recsys.inference.retrieval import Retriever
from recsys.inference.served_catalog import served_catalog

DAY = int(SECONDS_PER_DAY)
NUM_ITEMS, DIM = 600, 12
EXPORT = 1_000 * DAY
# Fresh videos score high: a sine falling from 0.6 (first day) to -0.3 (two years and more).
SINES = np.linspace(0.6, -0.3, len(FRESHNESS_EDGES_DAYS) + 1).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def world() -> tuple[FreshnessTerm, np.ndarray, np.ndarray, np.ndarray]:
    """The curve, ``main [n, DIM-1]``, upload times (some after the export) and the export."""
    rng = np.random.default_rng(3)
    main = _unit(rng.normal(size=(NUM_ITEMS, DIM - 1)))
    upload = EXPORT - rng.integers(-20 * DAY, 800 * DAY, size=NUM_ITEMS)
    term = FreshnessTerm(SINES)
    padded = np.concatenate([main, np.zeros((NUM_ITEMS, 1), np.float32)], axis=1)
    return term, main, upload, term.embeddings(padded, upload, EXPORT)


def test_age_independent_recovers_main(world) -> None:
    term, main, upload, exported = world
    aged = age_independent(exported)
    np.testing.assert_allclose(aged[:, :-1], main, atol=1e-5)
    assert not aged[:, -1].any()
    np.testing.assert_allclose(term.embeddings(aged, upload, EXPORT), exported, atol=1e-6)


def test_sine_uses_the_towers_buckets() -> None:
    term = FreshnessTerm(SINES)
    # Bucket 0 is [0, 1 day); an age of exactly 1 day is bucket 1; 730 days and more the last.
    ages = np.array([0.0, 0.99, 1.0, 9.5, 10.0, 729.9, 730.0, 5000.0], dtype=np.float32)
    expected = SINES[[0, 0, 1, 9, 10, 21, 22, 22]]
    np.testing.assert_array_equal(term.sine(ages), expected)


def test_bad_curve_is_refused() -> None:
    with pytest.raises(ValueError, match="freshness sines"):
        FreshnessTerm(np.zeros(3))
    with pytest.raises(ValueError, match="freshness sines"):
        FreshnessTerm(np.ones(len(FRESHNESS_EDGES_DAYS) + 1))


def test_logits_are_the_dot_products_at_the_moment(world) -> None:
    term, _, upload, exported = world
    aged = AgedCatalog(term, age_independent(exported), upload)
    query = _unit(np.random.default_rng(1).normal(size=DIM))
    rows = np.arange(0, NUM_ITEMS, 7)
    for moment in (EXPORT, EXPORT + 3 * DAY, EXPORT + 400 * DAY):
        at_moment = term.embeddings(aged.main, upload, moment)
        np.testing.assert_allclose(
            aged.logits(query, rows, moment), at_moment[rows] @ query, atol=1e-5
        )
    # Ages are taken at the start of the request's UTC day, as the model was trained.
    late_in_day = EXPORT + 3 * DAY + 20 * 3600
    at_day_start = term.embeddings(aged.main, upload, EXPORT + 3 * DAY)
    np.testing.assert_allclose(
        aged.logits(query, rows, late_in_day), at_day_start[rows] @ query, atol=1e-5
    )
    # Days later the export's own logits are stale: the fresh videos aged.
    later = aged.logits(query, rows, EXPORT + 30 * DAY)
    assert not np.allclose(later, exported[rows] @ query, atol=1e-3)


def test_young_rows_are_the_recent_uploads(world) -> None:
    term, _, upload, exported = world
    aged = AgedCatalog(term, age_independent(exported), upload)
    moment = EXPORT + 5 * DAY
    young = aged.young(moment, 14.0, 10_000)
    expected = np.flatnonzero((upload <= moment) & (upload >= moment - 14 * DAY))
    assert sorted(young.tolist()) == expected.tolist()
    assert len(expected) > 5
    newest = aged.young(moment, 14.0, 3)
    assert sorted(upload[newest].tolist()) == sorted(upload[expected])[-3:]


def _retriever(world) -> tuple[Retriever, FreshnessTerm, np.ndarray, np.ndarray]:
    term, _, upload, exported = world
    ids = [f"v{i:04d}" for i in range(NUM_ITEMS)]
    table = pa.table({"item_id": ids, "title": ids, "category": ["c"] * NUM_ITEMS})
    catalog = served_catalog(table, "items.parquet")
    aged = AgedCatalog(term, age_independent(exported), upload)
    index = ExactIndex.build(ids, exported)
    return Retriever(index, catalog, exported, aged=aged), term, aged.main, upload


@pytest.mark.parametrize("days_after", [0, 2, 9, 60])
def test_retriever_ranks_with_the_ages_at_the_request(world, days_after: int) -> None:
    retriever, term, main, upload = _retriever(world)
    moment = EXPORT + days_after * DAY
    rng = np.random.default_rng(days_after)
    none = np.empty(0, dtype=np.int64)
    found = 0
    for _ in range(20):
        query = _unit(rng.normal(size=DIM))
        # 40 candidates for a top 10, as serving overfetches (RecommenderOptions.overfetch 4).
        rows, logits, _ = retriever.candidates(query, 40, none, None, moment)
        rows, logits = retriever.rank(rows, logits, none, None)
        assert (upload[rows] <= moment).all()  # nothing uploaded after the request
        truth = term.embeddings(main, upload, moment) @ query
        np.testing.assert_allclose(logits, truth[rows], atol=1e-5)
        truth[upload > moment] = -np.inf
        found += len(set(rows[:10].tolist()) & set(np.argsort(-truth)[:10].tolist()))
    # Brute force at the moment, by hand: the widened, re-scored search finds nearly all of
    # its top 10 (this curve's sines span 0.9, far more than a trained one's old buckets).
    assert found / 200 >= 0.95


def test_read_curve_matches_the_exported_embeddings(fresh_artifact: Path) -> None:
    version = open_version(fresh_artifact)
    settings = version.settings
    term = read_freshness_term(
        fresh_artifact / CANDIDATE_MODEL_DIR, settings.content_dim, settings.reference_time
    )
    catalog = read_catalog(version)
    upload = catalog.items.column("upload_time").to_numpy().astype(np.int64)
    ages = upload_age_days(upload, settings.reference_time)
    # The export's last coordinate is each video's sine at its age then.
    np.testing.assert_allclose(term.sine(ages), catalog.embeddings[:, -1], atol=1e-5)

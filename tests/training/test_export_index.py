"""The export tunes a ScaNN index on the job's held-out queries: real ScaNN, real exact search."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from recsys.index.base import IndexConfig
from recsys.index.exact import ExactIndex
from recsys.index.recall import recall_at_k
from recsys.index.scann_index import ScannIndex
from recsys.indexing.tuning import TUNE_TARGET_RECALL
from recsys_training.export import _tune
from tests.index.test_scann_index import mixture

NUM_ITEMS = 5_000
# Deliberately shallow defaults, which miss the target: tuning has to search deeper.
SHALLOW = IndexConfig(kind="scann", num_leaves=50, num_leaves_to_search=1, reorder_k=100)


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], np.ndarray]:
    return [f"v{row}" for row in range(NUM_ITEMS)], mixture(NUM_ITEMS, seed=0)


def test_tuned_setting_meets_the_target_on_other_queries(
    corpus: tuple[list[str], np.ndarray],
) -> None:
    ids, embeddings = corpus
    index = ScannIndex.build(ids, embeddings, SHALLOW)
    exact = ExactIndex.build(ids, embeddings)
    fresh = mixture(300, seed=7)  # queries the tuner never saw
    before = recall_at_k(index.search_batch(fresh, 100).ids, exact.search_batch(fresh, 100).ids)
    assert before < TUNE_TARGET_RECALL  # the shallow defaults miss it

    tuning = _tune(index, ids, embeddings, mixture(400, seed=3))

    assert tuning is not None
    assert tuning["met_target"]
    assert tuning["recall"] >= TUNE_TARGET_RECALL
    assert (tuning["query_source"], tuning["num_queries"], tuning["k"]) == ("eval", 400, 100)
    # The chosen setting became the index's defaults (saved with it by the export) ...
    assert (index.config.num_leaves_to_search, index.config.reorder_k) == (
        tuning["leaves_to_search"],
        tuning["reorder_k"],
    )
    # ... and holds on queries the tuner did not see.
    after = recall_at_k(index.search_batch(fresh, 100).ids, exact.search_batch(fresh, 100).ids)
    assert after >= TUNE_TARGET_RECALL


def test_nothing_to_tune_leaves_the_index_alone(
    corpus: tuple[list[str], np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    ids, embeddings = corpus
    assert _tune(ExactIndex.build(ids, embeddings), ids, embeddings, mixture(50, seed=3)) is None
    index = ScannIndex.build(ids[:2000], embeddings[:2000], SHALLOW)
    with caplog.at_level(logging.WARNING):
        assert _tune(index, ids[:2000], embeddings[:2000], None) is None
    assert "recsys index tune" in caplog.text  # says how to tune it later
    assert (index.config.num_leaves_to_search, index.config.reorder_k) == (1, 100)

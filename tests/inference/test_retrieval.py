"""Tests for recsys.inference.retrieval: candidates, exclusions, category filter, ranking.

The expectation for every query is brute force over the catalog in numpy: the logits
``E @ q``, the excluded rows and other categories dropped, best first with ties in catalog
order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.index.base import IndexConfig
from recsys.index.exact import ExactIndex
from recsys.index.scann_index import ScannIndex
from recsys.inference.retrieval import Retriever
from recsys.inference.served_catalog import ServedCatalog, served_catalog

NUM_ITEMS, DIM = 400, 16
CATEGORIES = ("music", "news", "rare")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[ServedCatalog, np.ndarray]:
    rng = np.random.default_rng(7)
    embeddings = rng.normal(size=(NUM_ITEMS, DIM)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    # "rare" holds 4 videos: smaller than any fetch, so it is scanned exactly.
    category = np.where(np.arange(NUM_ITEMS) % 100 == 0, 2, np.arange(NUM_ITEMS) % 2)
    path = tmp_path_factory.mktemp("catalog") / "items.parquet"
    pq.write_table(
        pa.table(
            {
                "item_id": [f"v{i:04d}" for i in range(NUM_ITEMS)],
                "title": [f"title {i}" for i in range(NUM_ITEMS)],
                "category": [CATEGORIES[c] for c in category],
            }
        ),
        path,
    )
    return served_catalog(pq.read_table(path), path), embeddings


def _expected(
    embeddings: np.ndarray,
    catalog: ServedCatalog,
    query: np.ndarray,
    excluded: np.ndarray,
    category: str | None,
    k: int,
) -> list[int]:
    logits = embeddings @ query
    rows = np.arange(NUM_ITEMS)
    keep = ~np.isin(rows, excluded)
    if category is not None:
        keep &= catalog.category_code == catalog.category_names.index(category)
    rows, logits = rows[keep], logits[keep]
    order = np.lexsort((rows, -logits))
    return rows[order][:k].tolist()


def _exact_retriever(catalog: ServedCatalog, embeddings: np.ndarray) -> Retriever:
    return Retriever(ExactIndex.build(catalog.ids.astype(str), embeddings), catalog, embeddings)


def _top(retriever: Retriever, query: np.ndarray, k: int, excluded: np.ndarray, cat: str | None):
    rows, logits, _ = retriever.candidates(query, k, excluded, cat)
    rows, logits = retriever.rank(rows, logits, excluded, cat)
    return rows[:k], logits[:k]


@pytest.mark.parametrize("category", [None, "music", "rare"])
def test_exact_retrieval_equals_brute_force(world, category: str | None) -> None:
    catalog, embeddings = world
    ids = catalog.ids.astype(str)
    retriever = Retriever(ExactIndex.build(ids, embeddings), catalog, embeddings)
    rng = np.random.default_rng(1)
    for _ in range(20):
        query = rng.normal(size=DIM).astype(np.float32)
        excluded = np.sort(rng.choice(NUM_ITEMS, size=30, replace=False)).astype(np.int64)
        rows, logits = _top(retriever, query, 10, excluded, category)
        expected = _expected(embeddings, catalog, query, excluded, category, 10)
        assert rows.tolist() == expected
        np.testing.assert_allclose(logits, embeddings[rows] @ query, rtol=1e-5, atol=1e-6)
        assert (np.diff(logits) <= 0).all()


def test_heavy_exclusions_widen_the_search_until_enough_remain(world) -> None:
    catalog, embeddings = world
    retriever = Retriever(
        ExactIndex.build(catalog.ids.astype(str), embeddings), catalog, embeddings
    )
    query = embeddings[5] + embeddings[6]
    # Exclude the true top 200: a first fetch of k + |excluded| still has room, but the
    # doubling must also hold for a filter that leaves few eligible videos per fetch.
    excluded = np.sort(np.argsort(-(embeddings @ query))[:200]).astype(np.int64)
    rows, _ = _top(retriever, query, 25, excluded, "news")
    assert rows.tolist() == _expected(embeddings, catalog, query, excluded, "news", 25)
    assert not np.isin(rows, excluded).any()


def test_unknown_or_empty_category_gives_no_candidates(world) -> None:
    catalog, embeddings = world
    retriever = Retriever(
        ExactIndex.build(catalog.ids.astype(str), embeddings), catalog, embeddings
    )
    rows, logits, spent = retriever.candidates(embeddings[0], 5, np.empty(0, np.int64), "cats")
    assert len(rows) == 0
    assert len(logits) == 0
    assert spent == 0.0


def test_ties_rank_in_catalog_order(world) -> None:
    catalog, embeddings = world
    tied = embeddings.copy()
    tied[[30, 10, 20]] = tied[3]  # four identical vectors: identical logits
    retriever = Retriever(ExactIndex.build(catalog.ids.astype(str), tied), catalog, tied)
    rows, _ = _top(retriever, tied[3], 4, np.empty(0, np.int64), None)
    assert rows.tolist() == [3, 10, 20, 30]


def test_similar_leaves_the_video_itself_out(world) -> None:
    catalog, embeddings = world
    retriever = Retriever(
        ExactIndex.build(catalog.ids.astype(str), embeddings), catalog, embeddings
    )
    rows, scores = retriever.similar(42, 5)
    expected = [r for r in np.argsort(-(embeddings @ embeddings[42]), kind="stable") if r != 42]
    assert rows.tolist() == expected[:5]
    np.testing.assert_allclose(scores, embeddings[rows] @ embeddings[42], rtol=1e-5)


def test_scann_retrieval_rescores_exactly_and_takes_search_overrides(world) -> None:
    catalog, embeddings = world
    ids = catalog.ids.astype(str)
    config = IndexConfig(kind="scann", num_leaves=8, num_leaves_to_search=8, reorder_k=NUM_ITEMS)
    index = ScannIndex.build(ids, embeddings, config)
    retriever = Retriever(index, catalog, embeddings, leaves_to_search=8, reorder_k=NUM_ITEMS)
    rng = np.random.default_rng(3)
    for _ in range(10):
        query = rng.normal(size=DIM).astype(np.float32)
        rows, logits = _top(retriever, query, 10, np.empty(0, np.int64), None)
        # Every leaf searched and every candidate rescored: the exact top 10.
        assert rows.tolist() == _expected(embeddings, catalog, query, np.empty(0), None, 10)
        np.testing.assert_allclose(logits, embeddings[rows] @ query, rtol=1e-4, atol=1e-5)


def test_an_index_id_outside_the_catalog_is_an_error(world, tmp_path: Path) -> None:
    catalog, embeddings = world
    ids = catalog.ids.astype(str).copy()
    ids[0] = "stranger"
    retriever = Retriever(ExactIndex.build(ids, embeddings), catalog, embeddings)
    with pytest.raises(RuntimeError, match="not in the served catalog"):
        retriever.search(embeddings[0], 3)


def test_search_overrides_on_an_exact_index_are_ignored_with_a_warning(world, caplog) -> None:
    catalog, embeddings = world
    with caplog.at_level("WARNING", logger="recsys.inference.retrieval"):
        Retriever(
            ExactIndex.build(catalog.ids.astype(str), embeddings), catalog, embeddings, reorder_k=5
        )
    assert "ignored: the exact index searches exactly" in caplog.text

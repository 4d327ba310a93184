"""Every ranking metric against values worked out by hand on small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.evaluation import metrics as M
from recsys.index.recall import hits, per_query_recall, recall_at_k

# Two queries, one relevant item each: query 0 finds its item (1) at position 2, query 1
# never finds its item (9).
RANKED = np.array([[3, 1, 2], [5, 6, 7]])
RELEVANT = np.array([1, 9])

# One query with three relevant items (2, 4, 9): hits at positions 2 and 4.
RANKED_MULTI = np.array([[1, 2, 3, 4]])
RELEVANT_MULTI = np.array([[2, 4, 9, -1]])  # padded with -1


def test_hits_marks_relevant_positions() -> None:
    assert hits(RANKED, RELEVANT).tolist() == [[False, True, False], [False, False, False]]
    assert hits(RANKED_MULTI, RELEVANT_MULTI).tolist() == [[False, True, False, True]]


def test_recall_at_k_one_relevant() -> None:
    assert recall_at_k(RANKED, RELEVANT, 1) == 0.0  # neither query hits at position 1
    assert recall_at_k(RANKED, RELEVANT, 2) == 0.5  # (1 + 0) / 2
    assert recall_at_k(RANKED, RELEVANT, 3) == 0.5


def test_recall_at_k_several_relevant() -> None:
    assert recall_at_k(RANKED_MULTI, RELEVANT_MULTI, 2) == pytest.approx(1 / 3)  # 1 of 3
    assert recall_at_k(RANKED_MULTI, RELEVANT_MULTI, 4) == pytest.approx(2 / 3)  # 2 of 3


def test_hit_rate_at_k() -> None:
    assert M.hit_rate_at_k(RANKED, RELEVANT, 1) == 0.0
    assert M.hit_rate_at_k(RANKED, RELEVANT, 2) == 0.5  # query 0 has a hit, query 1 not
    assert M.hit_rate_at_k(RANKED_MULTI, RELEVANT_MULTI, 1) == 0.0
    assert M.hit_rate_at_k(RANKED_MULTI, RELEVANT_MULTI, 2) == 1.0  # any hit counts once


def test_ndcg_at_k() -> None:
    # query 0: DCG = 1/log2(3) = 0.63093, ideal DCG = 1/log2(2) = 1; query 1: 0
    assert M.ndcg_at_k(RANKED, RELEVANT, 3) == pytest.approx((1 / math.log2(3)) / 2)
    # DCG = 1/log2(3) + 1/log2(5) = 1.06161; ideal with 3 relevant in 4 slots:
    # 1 + 1/log2(3) + 1/log2(4) = 2.13093; NDCG = 0.49819
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 0.5)
    assert M.ndcg_at_k(RANKED_MULTI, RELEVANT_MULTI, 4) == pytest.approx(expected)
    assert expected == pytest.approx(0.49819, abs=1e-5)
    # at K = 1 nobody hits: 0
    assert M.ndcg_at_k(RANKED_MULTI, RELEVANT_MULTI, 1) == 0.0


def test_mrr() -> None:
    assert M.mrr(RANKED, RELEVANT) == 0.25  # (1/2 + 0) / 2
    assert M.mrr(RANKED_MULTI, RELEVANT_MULTI) == 0.5  # first hit at position 2


def test_map_at_k() -> None:
    # query 0: P@2 = 1/2 at its one hit, over min(1, 3) = 1 -> 0.5; query 1: 0
    assert M.map_at_k(RANKED, RELEVANT, 3) == 0.25
    # hits at 2 (P@2 = 1/2) and 4 (P@4 = 2/4): (0.5 + 0.5) / min(3, 4) = 1/3
    assert M.map_at_k(RANKED_MULTI, RELEVANT_MULTI, 4) == pytest.approx(1 / 3)
    # at K = 2 only the first hit: 0.5 / min(3, 2) = 0.25
    assert M.map_at_k(RANKED_MULTI, RELEVANT_MULTI, 2) == 0.25


def test_k_beyond_list_length_counts_missing_slots_as_misses() -> None:
    # The list has 3 entries: Recall@10 is Recall@3; NDCG@10's ideal still has 1 relevant.
    assert recall_at_k(RANKED, RELEVANT, 10) == 0.5
    assert M.ndcg_at_k(RANKED, RELEVANT, 10) == pytest.approx((1 / math.log2(3)) / 2)


def test_per_query_metrics_keys_and_shapes() -> None:
    out = M.per_query_metrics(RANKED, RELEVANT, [1, 3])
    names = [f"{m}@{k}" for k in (1, 3) for m in ("recall", "hit_rate", "ndcg", "map")]
    assert sorted(out) == sorted([*names, "mrr"])
    assert out["recall@3"].tolist() == [1.0, 0.0]
    for k in (1, 3):  # the index's recall, not a copy of it
        np.testing.assert_array_equal(out[f"recall@{k}"], per_query_recall(RANKED, RELEVANT, k))
    assert out["mrr"].tolist() == [0.5, 0.0]


def test_catalog_coverage() -> None:
    ranked = np.array([[0, 1], [1, 2]])
    assert M.catalog_coverage(ranked, 2, 10) == 0.3  # {0, 1, 2} of 10 videos
    assert M.catalog_coverage(ranked, 1, 10) == 0.2  # {0, 1}


def test_popularity_percentiles_and_bias() -> None:
    counts = np.array([5, 0, 5, 2])
    # share of the catalog with strictly fewer watches: 5 -> 2/4, 0 -> 0, 2 -> 1/4
    pct = M.popularity_percentiles(counts)
    assert pct.tolist() == [50.0, 0.0, 50.0, 25.0]
    # recommending videos 0 and 3: (50 + 25) / 2
    assert M.mean_popularity_percentile(np.array([[0, 3]]), 2, pct) == 37.5
    assert M.mean_popularity_percentile(np.array([[0, 3]]), 1, pct) == 50.0
    # a list cut short (-1 slots) averages its items only: (50 + 25 + 50) / 3
    assert M.mean_popularity_percentile(np.array([[0, 3], [2, -1]]), 2, pct) == 125 / 3


def test_summarize_holds_every_metric() -> None:
    pct = np.linspace(0, 90, 10)
    out = M.summarize(RANKED, RELEVANT, [2], num_items=10, percentiles=pct)
    assert out["recall"] == {"2": 0.5}
    assert out["hit_rate"] == {"2": 0.5}
    assert out["mrr"] == 0.25
    assert out["map"] == {"2": 0.25}  # P@2 = 1/2 for query 0, 0 for query 1
    assert out["coverage"] == {"2": 0.4}  # {3, 1, 5, 6} of 10
    assert out["popularity_percentile"] == {"2": pytest.approx((30 + 10 + 50 + 60) / 4)}


def test_a_query_without_relevant_items_is_an_error() -> None:
    with pytest.raises(ValueError, match="relevant item"):
        M.hit_rate_at_k(RANKED, np.array([[1], [-1]]), 2)
    with pytest.raises(ValueError, match="queries"):
        M.ndcg_at_k(RANKED, np.array([1, 2, 3]), 2)

"""The one recall@k: by hand, against a brute-force set count, for rows and for string ids."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.index.recall import hits, per_query_recall, recall_at_k


def brute_force(ranked: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """|first k ranked ∩ relevant| / |relevant| per query, -1 padding left out of both."""
    out = []
    for found, wanted in zip(ranked.tolist(), relevant.tolist(), strict=True):
        wanted_set = {item for item in wanted if item != -1}
        out.append(len({item for item in found[:k] if item != -1} & wanted_set) / len(wanted_set))
    return np.asarray(out)


def test_index_recall_of_approximate_against_exact_ids() -> None:
    exact = np.array([["a", "b", "c"], ["d", "e", "f"]])
    approx = np.array([["a", "c", "x"], ["d", "e", "f"]])
    assert recall_at_k(approx, exact) == pytest.approx(5 / 6)  # (2 + 3) hits of 6
    assert per_query_recall(approx, exact).tolist() == [2 / 3, 1.0]
    assert recall_at_k(np.array(["a", "z"]), np.array(["a", "b"])) == 0.5  # one query, 1-D
    with pytest.raises(ValueError, match="same number of queries"):
        recall_at_k(approx[:1], exact)


def test_next_watch_recall_by_hand() -> None:
    ranked = np.array([[5, 2, 9], [1, 3, 4], [7, 8, 0]])
    labels = np.array([2, 4, 6])
    # label 2 at position 1, label 4 at position 2, label 6 absent
    got = {k: recall_at_k(ranked, labels, k) for k in (1, 2, 3, 10)}
    assert got == {1: 0.0, 2: 1 / 3, 3: 2 / 3, 10: 2 / 3}  # k past the list: truncated


def test_padding_never_counts() -> None:
    ranked = np.array([[-1, 4, -1]])  # e.g. top_k_available's slots with no video
    assert hits(ranked, np.array([[4, -1]])).tolist() == [[False, True, False]]
    assert recall_at_k(ranked, np.array([[4, -1, 7]]), 3) == 0.5  # 1 of 2 relevant


@pytest.mark.parametrize("as_strings", [False, True])
def test_matches_brute_force(as_strings: bool) -> None:
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(40)[:12] for _ in range(30)])
    # 1 to 5 distinct relevant rows per query, padded with -1 to 5.
    relevant = np.full((30, 5), -1, dtype=np.int64)
    for row in relevant:
        picked = rng.permutation(40)[: rng.integers(1, 6)]
        row[: len(picked)] = picked
    for k in (1, 5, 12):
        want = brute_force(ranked, relevant, k)
        if as_strings:
            # String ids have no padding: compare queries with all 5 relevant ids distinct.
            full = (relevant >= 0).all(axis=1)
            names = np.char.add("v", ranked[full].astype(str))
            wanted = np.char.add("v", relevant[full].astype(str))
            np.testing.assert_allclose(per_query_recall(names, wanted, k), want[full])
        else:
            np.testing.assert_allclose(per_query_recall(ranked, relevant, k), want)
            assert recall_at_k(ranked, relevant, k) == pytest.approx(want.mean())


def test_bad_inputs() -> None:
    ranked = np.array([[3, 1, 2], [5, 6, 7]])
    with pytest.raises(ValueError, match="relevant item"):
        recall_at_k(ranked, np.array([[1], [-1]]), 2)
    with pytest.raises(ValueError, match="queries"):
        recall_at_k(ranked, np.array([1, 2, 3]), 2)
    with pytest.raises(ValueError, match="k must be positive"):
        recall_at_k(ranked, np.array([1, 2]), 0)
    with pytest.raises(ValueError, match="both be integer rows or both be string ids"):
        recall_at_k(ranked, np.array(["a", "b"]), 2)
    with pytest.raises(ValueError, match="nothing to recall"):
        recall_at_k(np.array([["a"]]), np.empty((1, 0), dtype=str))

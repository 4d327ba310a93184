"""The one exact top-k against a brute-force stable sort: ties, blocks, dtypes, masked scores."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.index import top_k as top_k_module
from recsys.index.top_k import exact_top_k, top_k


def brute_force(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best first by a full stable sort of the negated scores: ties to the lower column."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few columns and chunks of 3 rows, so every merge path runs."""
    monkeypatch.setattr(top_k_module, "_SCORE_BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(top_k_module, "_MAX_QUERY_CHUNK", 3)


@pytest.mark.parametrize("blocked", [False, True])
@pytest.mark.parametrize("k", [1, 7, 50, 400])
def test_matches_brute_force_with_many_ties(
    monkeypatch: pytest.MonkeyPatch, blocked: bool, k: int
) -> None:
    if blocked:
        tiny_blocks(monkeypatch)
    # Five distinct values over 2,000 columns: hundreds of ties at every k-th score, and
    # wide enough (>= 2 * 16 * k for small k) that the sampled threshold is tried too.
    scores = np.random.default_rng(0).integers(0, 5, (11, 2000)).astype(np.float64)
    columns, values = top_k(scores, k)
    want_columns, want_values = brute_force(scores, k)
    np.testing.assert_array_equal(columns, want_columns)
    np.testing.assert_array_equal(values, want_values)
    assert columns.dtype == np.int64
    assert values.dtype == np.float64


def test_integer_keys_and_minus_inf_keep_their_order() -> None:
    keys = np.array([[3, 9, 1, 9, -4], [0, 0, 0, 0, 0]], dtype=np.int64)
    columns, values = top_k(keys, 3)
    assert columns.tolist() == [[1, 3, 0], [0, 1, 2]]
    assert values.dtype == np.int64
    assert values.tolist() == [[9, 9, 3], [0, 0, 0]]
    masked = np.array([[-np.inf, 2.0, -np.inf, 2.0]])
    columns, values = top_k(masked, 4)
    assert columns.tolist() == [[1, 3, 0, 2]]  # -inf last, still lower column first
    assert values.tolist() == [[2.0, 2.0, -np.inf, -np.inf]]


def test_k_beyond_the_width_and_empty_inputs() -> None:
    scores = np.array([[1.0, 3.0, 2.0]])
    assert top_k(scores, 10)[0].tolist() == [[1, 2, 0]]
    assert top_k(np.empty((0, 5)), 3)[0].shape == (0, 3)
    assert top_k(np.empty((2, 0)), 3)[0].shape == (2, 0)
    assert top_k(scores, 0)[0].shape == (1, 0)
    with pytest.raises(ValueError, match="k must be an int >= 0"):
        top_k(scores, -1)
    with pytest.raises(ValueError, match=r"scores must be \[num_rows, num_columns\]"):
        top_k(np.ones(3), 1)


@pytest.mark.parametrize("blocked", [False, True])
def test_exact_top_k_is_top_k_of_the_dot_products(
    monkeypatch: pytest.MonkeyPatch, blocked: bool
) -> None:
    if blocked:
        tiny_blocks(monkeypatch)
    rng = np.random.default_rng(1)
    # Integer-valued vectors: exact float32 products, many equal.
    queries = rng.integers(-2, 3, (7, 4)).astype(np.float32)
    embeddings = rng.integers(-2, 3, (500, 4)).astype(np.float32)
    rows, scores = exact_top_k(queries, embeddings, 20)
    want_rows, want_scores = brute_force(queries @ embeddings.T, 20)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(scores, want_scores)
    assert scores.dtype == np.float32
    same_rows, same_scores = top_k(queries @ embeddings.T, 20)
    np.testing.assert_array_equal(same_rows, rows)
    np.testing.assert_array_equal(same_scores, scores)


def test_exact_top_k_blocks_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    embeddings = rng.standard_normal((2000, 16)).astype(np.float32)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    whole_rows, whole_scores = exact_top_k(queries, embeddings, 20)
    # 3 queries x 64 elements: blocks of 21 rows (k is the floor: 20 columns per block).
    tiny_blocks(monkeypatch)
    blocked_rows, blocked_scores = exact_top_k(queries, embeddings, 20)
    np.testing.assert_array_equal(blocked_rows, whole_rows)
    np.testing.assert_allclose(blocked_scores, whole_scores, rtol=0, atol=1e-5)

"""Exact catalog ranking at each query's moment: masks future uploads, embeds per day."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.evaluation.ranking import rank_by_day, top_k_available

DAY = 86_400


def test_top_k_masks_videos_uploaded_after_the_query() -> None:
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    candidates = np.array([[0.9, 0.0], [0.5, 0.5], [0.0, 0.8], [1.0, 1.0]])
    upload = np.array([0, 0, 0, 100])  # row 3 (the best for both) appears at t=100
    ranked = top_k_available(queries, np.array([50, 150]), candidates, upload, k=2)
    # query 0 at t=50: scores 0.9, 0.5, 0.0, (masked) -> rows 0, 1
    # query 1 at t=150: scores 0.0, 0.5, 0.8, 1.0 -> rows 3, 2
    assert ranked.tolist() == [[0, 1], [3, 2]]


def test_ties_go_to_the_lower_row_and_missing_slots_are_minus_one() -> None:
    candidates = np.array([[1.0], [1.0], [1.0]])
    ranked = top_k_available(
        np.array([[1.0]]), np.array([10]), candidates, np.array([0, 0, 20]), k=3
    )
    assert ranked.tolist() == [[0, 1, -1]]  # two available, tied: lower row first


def test_rank_by_day_embeds_the_catalog_at_each_days_start() -> None:
    seen: list[int] = []

    def embed(reference_time: int) -> np.ndarray:
        seen.append(reference_time)
        # a video's score grows with its age at the reference time: older ranks higher
        return np.array([[(reference_time - 0) / DAY], [(reference_time - DAY) / DAY]])

    times = np.array([DAY + 5, 3 * DAY + 7, DAY + 9])
    ranked = rank_by_day(np.ones((3, 1)), times, embed, np.array([0, DAY]), k=2)
    assert seen == [DAY, 3 * DAY]  # one embedding per distinct day, at the day's start
    assert ranked.tolist() == [[0, 1], [0, 1], [0, 1]]


def test_rank_by_day_leaves_out_videos_uploaded_after_the_days_start() -> None:
    def embed(reference_time: int) -> np.ndarray:
        return np.array([[1.0], [2.0], [3.0]])

    # Video 2 is uploaded an hour into day 1: not in day 1's catalog even for a later query.
    upload = np.array([0, DAY, DAY + 3600])
    ranked = rank_by_day(np.ones((2, 1)), np.array([DAY + 7200, 2 * DAY + 5]), embed, upload, k=3)
    assert ranked.tolist() == [[1, 0, -1], [2, 1, 0]]


def test_top_k_matches_brute_force_over_the_available_videos() -> None:
    rng = np.random.default_rng(0)
    queries = rng.integers(-2, 3, (20, 3)).astype(np.float32)  # integer scores: many ties
    candidates = rng.integers(-2, 3, (300, 3)).astype(np.float32)
    upload = rng.integers(0, 100, 300)
    times = rng.integers(0, 100, 20)
    ranked = top_k_available(queries, times, candidates, upload, k=15)
    for q in range(20):
        available = np.flatnonzero(upload <= times[q])
        scores = candidates[available] @ queries[q]
        want = available[np.argsort(-scores, kind="stable")[:15]]  # ties: lower row
        assert ranked[q].tolist() == [*want.tolist(), *[-1] * (15 - len(want))]


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be positive"):
        top_k_available(np.ones((1, 1)), np.zeros(1), np.ones((1, 1)), np.zeros(1), k=0)

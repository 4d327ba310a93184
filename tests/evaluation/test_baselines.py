"""Baselines on hand-made training data: every ranking worked out beside the assertion."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.evaluation.baselines import (
    EASE,
    CoWatch,
    ItemGram,
    ItemKNN,
    MostPopular,
    TFRSBasic,
    TrainingData,
    Trending,
    history_rows,
    vocab_to_rows,
)
from recsys.evaluation.exclusion import Watched

DAY = 86_400
CUTOFF = 100 * DAY  # a day boundary, so the "start of the query's day" rule is easy to follow


def _data(items: list[int], prev: list[int], times: list[int], users: list[int] | None = None):
    n = len(items)
    return TrainingData(
        item_rows=np.array(items, dtype=np.int64),
        user_rows=np.array(users if users is not None else [0] * n, dtype=np.int64),
        times=np.array(times, dtype=np.int64),
        previous_rows=np.array(prev, dtype=np.int64),
        num_items=5,
        num_users=3,
    )


# Trending data: item 2 three times a month ago; item 0 twice one day before the cut-off;
# item 4 two days and half a day before; item 1 one second before; item 3 never.
TREND = _data(
    items=[2, 2, 2, 0, 0, 4, 4, 1],
    prev=[-1] * 8,
    times=[CUTOFF - 30 * DAY] * 3
    + [CUTOFF - DAY] * 2
    + [CUTOFF - 2 * DAY, CUTOFF - DAY // 2, CUTOFF - 1],
)


def _queries(times: list[int], history: list[list[int]] | None = None) -> dict[str, np.ndarray]:
    q = {"timestamp": np.array(times, dtype=np.int64)}
    if history is not None:
        q["history"] = np.array(history, dtype=np.int32)
    return q


def test_vocab_to_rows_and_history_rows() -> None:
    # catalog rows 0..3 have vocabulary ids 3, 2, 1 (OOV) and 4
    rows_of_vocab = vocab_to_rows(np.array([3, 2, 1, 4]), vocab_size=5)
    assert rows_of_vocab.tolist() == [-1, -1, 1, 0, 3]
    # history oldest first, 0-padded: latest watch first in the output
    out = history_rows(np.array([[2, 3, 0], [0, 0, 0], [4, 0, 0]]), rows_of_vocab, 2)
    assert out.tolist() == [[0, 1], [-1, -1], [3, -1]]


def test_most_popular_ranks_by_training_count() -> None:
    # counts: item 2: 3, item 0: 2, item 4: 2, item 1: 1, item 3: 0; ties to the lower row
    ranked = MostPopular(TREND).rank(_queries([CUTOFF, CUTOFF + 5]), 4)
    assert ranked.tolist() == [[2, 0, 4, 1], [2, 0, 4, 1]]


def test_trending_decays_recent_watches_before_the_cutoff() -> None:
    trending = Trending(TREND, cutoff=CUTOFF, window_days=7, half_life_days=1)
    scores = trending.scores(CUTOFF)
    # item 2 is outside the 7-day window; item 0: 2 * 0.5 ** 1; item 4: 0.5 ** 2 + 0.5 ** 0.5;
    # item 1: 0.5 ** (1 s / 1 day) ~ 1
    assert scores[2] == 0.0
    assert scores[0] == pytest.approx(1.0)
    assert scores[4] == pytest.approx(0.25 + 2**-0.5)
    assert scores[1] == pytest.approx(0.5 ** (1 / DAY))
    # 0 (1.0) > 1 (0.99999) > 4 (0.957) > then no recent watches: by popularity, 2 then 3
    assert trending.rank(_queries([CUTOFF + 3 * DAY]), 5).tolist() == [[0, 1, 4, 2, 3]]


def test_trending_without_cutoff_uses_the_start_of_the_query_day() -> None:
    trending = Trending(TREND, cutoff=None, window_days=7, half_life_days=1)
    # A query one hour into day 99: only complete earlier days count, [92, 99): item 4's
    # watch at day 98 (age 1 day: 0.5) and item 2's... no, item 2 is a month old. Item 0's
    # watches at exactly day 99 are not strictly before the reference.
    ranked = trending.rank(_queries([CUTOFF - DAY + 3600, CUTOFF + 3600]), 5)
    assert ranked[0].tolist() == [4, 2, 0, 1, 3]  # then popularity: 2 (3), 0 (2), 1 (1), 3
    assert ranked[1].tolist() == [0, 1, 4, 2, 3]  # the next day: as at the cut-off


# Co-watch pairs (previous -> next): 0->1 x2, 0->2 x1, 1->2 x1, 0->4 x3, 3->4 x1.
# Popularity of the labels: item 4: 4, item 1: 2, item 2: 2, items 0 and 3: 0.
COWATCH = _data(items=[1, 1, 2, 2, 4, 4, 4, 4], prev=[0, 0, 0, 1, 0, 0, 0, 3], times=list(range(8)))
ROWS_OF_VOCAB = np.array([-1, -1, 0, 1, 2, 3, 4])  # vocabulary id = catalog row + 2


def test_co_watch_scores_from_the_latest_watches() -> None:
    cw = CoWatch(COWATCH, ROWS_OF_VOCAB, recent=2)  # weights: latest 2, the one before 1
    # latest watch row 0 (weight 2): item 1 -> 2*2, item 2 -> 2*1, item 4 -> 2*3;
    # the one before, row 1 (weight 1): item 2 -> +1*1
    scores = cw.scores(np.array([[0, 1]]))
    assert scores.tolist() == [[0, 4, 3, 0, 6]]


def test_co_watch_ranks_and_falls_back_to_popularity() -> None:
    cw = CoWatch(COWATCH, ROWS_OF_VOCAB, recent=2)
    queries = _queries(
        [0, 0, 0],
        history=[
            [3, 0, 0],  # latest row 1: only 1->2 (score 2); the rest by popularity 4, 1, 0, 3
            [3, 2, 0],  # latest row 0 then row 1: 4 (6) > 1 (4) > 2 (3) > 0, 3 by popularity
            [0, 0, 0],  # no history: popularity 4, 1, 2, 0, 3
        ],
    )
    assert cw.rank(queries, 5).tolist() == [[2, 4, 1, 0, 3], [4, 1, 2, 0, 3], [4, 1, 2, 0, 3]]
    assert cw.rank(queries, 2).tolist() == [[2, 4], [4, 1], [4, 1]]


def test_tfrs_basic_learns_who_watches_what() -> None:
    # 12 users, 12 videos: user u only ever watches video u (30 times).
    users = np.repeat(np.arange(12), 30)
    data = TrainingData(
        item_rows=users.copy(),
        user_rows=users,
        times=np.arange(len(users)),
        previous_rows=np.full(len(users), -1),
        num_items=12,
        num_users=12,
    )
    model = TFRSBasic(embedding_dim=8, epochs=15, batch_size=48, learning_rate=0.5, seed=1)
    model.fit(data)
    ranked = model.rank({"user_index": np.arange(12)}, 3)
    assert ranked.shape == (12, 3)
    hit_at_1 = (ranked[:, 0] == np.arange(12)).mean()
    assert hit_at_1 >= 0.9, ranked
    # an unknown user shares the out-of-vocabulary embedding: still a valid ranking
    assert model.rank({"user_index": np.array([99])}, 3).shape == (1, 3)


# Item-item data: users 0 and 1 watch videos 0 and 1, user 2 watches 1 and 2, user 3 watches
# 3 (twice: a repeated pair counts once); video 4 is never watched.
ITEM_ITEM = _data(
    items=[0, 1, 0, 1, 1, 2, 3, 3],
    prev=[-1] * 8,
    times=[0] * 8,
    users=[0, 0, 1, 1, 2, 2, 3, 3],
)


def _watched(*lists: list[int]) -> Watched:
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    return Watched(offsets, np.array([r for x in lists for r in x], dtype=np.int64))


def test_item_gram_counts_users_per_pair_of_the_most_watched_videos() -> None:
    gram = ItemGram(ITEM_ITEM, max_items=10)
    # training watches 0:2, 1:3, 2:1, 3:2 (one user twice) -> order 1, then 0 and 3 (2 each,
    # lower row first), then 2
    assert gram.rows.tolist() == [1, 0, 3, 2]
    assert gram.seen == 4
    # G in that order: diagonal = users per video; (1, 0) 2 users; (1, 2) 1 user
    assert gram.gram.tolist() == [[3, 2, 0, 1], [2, 2, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]]
    capped = ItemGram(ITEM_ITEM, max_items=2)
    assert capped.rows.tolist() == [1, 0]
    assert capped.gram.tolist() == [[3, 2], [2, 2]]
    with pytest.raises(ValueError, match="max_items must be positive"):
        ItemGram(ITEM_ITEM, max_items=0)


def test_ease_solves_the_constrained_least_squares() -> None:
    gram = ItemGram(ITEM_ITEM, max_items=10)
    ease = EASE(gram, l2=0.5)
    b = ease.weights.astype(np.float64)
    g = gram.gram.astype(np.float64)
    # Its optimality condition: (G + l2 I) B - G is diagonal (the zero-diagonal constraint's
    # multipliers) and B's diagonal is zero.
    residual = (g + 0.5 * np.eye(4)) @ b - g
    assert np.allclose(residual - np.diag(np.diag(residual)), 0, atol=1e-4)
    assert np.allclose(np.diag(b), 0)
    # A user who watched video 0 gets video 1 first (its co-watcher); 0 itself scores 0.
    ranked = ease.rank_watched(_watched([0], []), 4)
    assert ranked[0, 0] == 1
    # no watches: every score is 0 and popularity breaks the ties
    assert ranked[1].tolist() == [1, 0, 3, 2]


def test_item_knn_sums_cosine_similarities_of_kept_neighbours() -> None:
    gram = ItemGram(ITEM_ITEM, max_items=10)
    # cosine: sim(0, 1) = 2 / sqrt(2 * 3) = 0.816, sim(1, 2) = 1 / sqrt(3 * 1) = 0.577
    knn = ItemKNN(gram, neighbours=10)
    # watched {1}: 0 (0.816), 2 (0.577), then 1 and 3 at 0 by popularity (3 watches vs 2)
    assert knn.rank_watched(_watched([1]), 4).tolist() == [[0, 2, 1, 3]]
    # one neighbour each: video 1 keeps only video 0, so 2 falls to the popularity order
    one = ItemKNN(gram, neighbours=1)
    assert one.rank_watched(_watched([1]), 4).tolist() == [[0, 1, 3, 2]]
    # fewer covered videos than k: the rest is -1
    assert one.rank_watched(_watched([1]), 6)[0, 4:].tolist() == [-1, -1]

"""The training callbacks: validation recall over the catalog as it stood, epoch bookkeeping."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from recsys.evaluation.exclusion import Watched
from recsys.examples.building import LABEL_TIME
from recsys.features import contract as F
from recsys.features.tables import ItemTable
from recsys_training.callbacks import (
    EpochTracker,
    EvalQueries,
    RecallCallback,
    catalog_recall,
    query_embeddings,
)

DAY = 86_400
T0 = 1_767_225_600  # conftest's small dataset starts here
NUM_CATEGORIES = 3


class _CountryTower(tf.keras.Model):
    """A query "tower": the one-hot of the query's country."""

    def call(self, batch: dict[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        return tf.one_hot(batch[F.COUNTRY], NUM_CATEGORIES)


class _CategoryTower(tf.keras.Model):
    """A candidate "tower": the one-hot of the video's category."""

    def call(self, batch: dict[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        return tf.one_hot(batch[F.CATEGORY], NUM_CATEGORIES)


class _Model(tf.keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.query_tower = _CountryTower()
        self.candidate_tower = _CategoryTower()


def _items() -> ItemTable:
    # Six videos, categories 0 1 2 0 1 2; video 3 is uploaded on day 2, the rest at time 0.
    num = 6
    return ItemTable(
        item_ids=np.array([f"v{row}" for row in range(num)], dtype=object),
        item=np.arange(2, num + 2, dtype=np.int32),
        channel=np.full(num, 2, dtype=np.int32),
        category=np.array([0, 1, 2, 0, 1, 2], dtype=np.int32),
        title_tokens=np.zeros((num, 2), dtype=np.int32),
        upload_time=np.array([0, 0, 0, 2 * DAY, 0, 0], dtype=np.int64),
        content_embedding=None,
    )


def _queries() -> EvalQueries:
    return EvalQueries(
        {
            F.COUNTRY: np.array([0, 1, 2], dtype=np.int32),
            F.ITEM_INDEX: np.array([3, 4, 2]),
            LABEL_TIME: np.array([DAY + 5, 3 * DAY, 3 * DAY]),
        }
    )


def test_catalog_recall_by_hand() -> None:
    # Query 0 (day 1) wants video 3, not uploaded until day 2: ranked 0, 1, 2, 4, 5 -> a miss.
    # Query 1 (day 3) ranks 1, 4 (its category), then 0, 2, 3, 5 (ties: lower row): hit at 2.
    # Query 2 (day 3) ranks 2, 5, ...: its label first.
    recall = catalog_recall(_Model(), _items(), _queries(), [1, 2, 6])
    assert recall == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 6: pytest.approx(2 / 3)}


def test_catalog_recall_takes_the_callers_query_embeddings() -> None:
    model, queries = _Model(), _queries()
    embedded = query_embeddings(model.query_tower, queries)
    assert embedded.shape == (3, NUM_CATEGORIES)
    # Every query pointed at category 2 instead: only query 2's label (video 2) is found.
    towards_2 = np.tile(np.eye(NUM_CATEGORIES, dtype=np.float32)[2], (3, 1))
    assert catalog_recall(model, _items(), queries, [2], embedded=towards_2) == {
        2: pytest.approx(1 / 3)
    }
    assert catalog_recall(model, _items(), queries, [2], embedded=embedded) == {
        2: pytest.approx(2 / 3)
    }


def test_catalog_recall_leaves_out_each_querys_watched_videos() -> None:
    # Query 1 ranked 1, 4, 0, ... (see above); having watched video 1, it ranks 4 first: a hit
    # at 1. Query 2 watched its own label (video 2): never ranked, a miss at any K.
    base = _queries()
    watched = Watched(offsets=np.array([0, 0, 1, 2]), rows=np.array([1, 2]))
    queries = EvalQueries(
        {**base.features, F.ITEM_INDEX: base.labels, LABEL_TIME: base.times}, watched
    )
    recall = catalog_recall(_Model(), _items(), queries, [1, 6])
    assert recall == {1: pytest.approx(1 / 3), 6: pytest.approx(1 / 3)}


def test_the_rule_reads_the_dataset_only_when_it_may_exclude(small_dataset: Path) -> None:
    rows = {
        F.USER_INDEX: np.array([0, 1]),
        F.ITEM_INDEX: np.array([2, 1]),
        LABEL_TIME: np.array([T0 + 4_000, T0 + 9_000]),
    }
    queries, rule = EvalQueries.with_rule(rows, small_dataset / "missing", "no")
    assert queries.excluded is None
    assert rule == {"rule": "no", "rewatches": None, "applied": False}
    # conftest's small dataset has no rewatches: "auto" excludes u1's v1 and u2's v4 and v2
    queries, rule = EvalQueries.with_rule(rows, small_dataset, "auto")
    assert rule == {"rule": "auto", "rewatches": False, "applied": True}
    assert queries.excluded is not None
    assert queries.excluded.rows.tolist() == [0, 1, 3]


def test_catalog_recall_without_queries_is_nan() -> None:
    empty = EvalQueries({})
    recall = catalog_recall(_Model(), _items(), empty, [5])
    assert list(recall) == [5]
    assert np.isnan(recall[5])


def test_recall_callback_adds_to_the_epoch_logs() -> None:
    callback = RecallCallback(_items(), _queries(), [1, 2])
    callback.set_model(_Model())
    logs: dict[str, float] = {"loss": 1.0}
    callback.on_epoch_end(0, logs)
    callback.on_epoch_end(1, None)
    expected = {"val_recall_at_1": pytest.approx(1 / 3), "val_recall_at_2": pytest.approx(2 / 3)}
    assert logs == {"loss": 1.0, **expected}
    assert callback.history == [expected, expected]


def test_epoch_tracker_logs_a_resume_and_times_epochs(caplog: pytest.LogCaptureFixture) -> None:
    tracker = EpochTracker(total_epochs=5)
    with caplog.at_level(logging.INFO, logger="recsys_training.callbacks"):
        tracker.on_epoch_begin(2)  # a resumed run starts past epoch 0
        tracker.on_epoch_end(2, {"loss": 0.5})
        tracker.on_epoch_begin(3)
        tracker.on_epoch_end(3, None)
    assert tracker.first_epoch == 2
    assert len(tracker.epoch_seconds) == 2
    assert all(seconds >= 0 for seconds in tracker.epoch_seconds)
    assert "resumed from checkpoint: continuing at epoch 3/5" in caplog.text
    assert "epoch 3/5 done" in caplog.text
    assert "loss 0.5000" in caplog.text
    assert "loss n/a" in caplog.text
    fresh = EpochTracker(total_epochs=1)
    fresh.on_epoch_begin(0)
    assert fresh.first_epoch == 0

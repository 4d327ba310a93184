"""The watched-video exclusion rule: earlier watches per query, dropping them, masking them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.dataset.validation import read_dataset
from recsys.evaluation.exclusion import (
    Watched,
    WatchLog,
    drop_excluded,
    has_rewatches,
    resolve_exclude_watched,
    watched_before,
)
from recsys.evaluation.ranking import rank_by_day, top_k_available


def _lists(w: Watched) -> list[list[int]]:
    return [w.rows[w.offsets[i] : w.offsets[i + 1]].tolist() for i in range(len(w))]


def test_watched_before_keeps_strictly_earlier_distinct_watches_of_the_user() -> None:
    # user 0 watches rows 3 (t=10), 1 (t=20), 3 again (t=30); user 1 watches row 2 (t=15);
    # a watch of a video outside the catalog (-1) is skipped.
    w = watched_before(
        watch_users=np.array([0, 1, 0, 0, 1]),
        watch_times=np.array([10, 15, 20, 30, 5]),
        watch_items=np.array([3, 2, 1, 3, -1]),
        query_users=np.array([0, 0, 0, 1, 2]),
        query_times=np.array([10, 21, 31, 16, 99]),
    )
    # t=10: nothing strictly before; t=21: {3, 1}; t=31: {3, 1} (3 once); user 1: {2}; user 2: {}
    assert _lists(w) == [[], [1, 3], [1, 3], [2], []]
    assert w.counts.tolist() == [0, 2, 2, 1, 0]
    assert w.max_count == 2
    assert _lists(w.take(np.array([3, 1]))) == [[2], [1, 3]]


def test_drop_excluded_keeps_order_and_pads() -> None:
    w = Watched(offsets=np.array([0, 2, 2, 3]), rows=np.array([1, 5, 7]))
    ranked = np.array([[5, 4, 1, 2, 3], [5, 4, 1, 2, 3], [7, 6, -1, -1, -1]])
    out = drop_excluded(ranked, w, 3)
    # query 0 loses 5 and 1; query 1 loses nothing; query 2 loses 7 and has only 6 left
    assert out.tolist() == [[4, 2, 3], [5, 4, 1], [6, -1, -1]]
    with pytest.raises(ValueError, match="2 ranked lists but 3 watched lists"):
        drop_excluded(ranked[:2], w, 3)


def test_rule_resolution() -> None:
    assert resolve_exclude_watched("auto", rewatches=False) is True
    assert resolve_exclude_watched("auto", rewatches=True) is False
    assert resolve_exclude_watched("yes", rewatches=True) is True
    assert resolve_exclude_watched("no", rewatches=False) is False
    with pytest.raises(ValueError, match=r"one of \('auto', 'yes', 'no'\), got 'always'"):
        resolve_exclude_watched("always", rewatches=False)
    assert has_rewatches(np.array([0, 0, 1]), np.array([4, 5, 4])) is False
    assert has_rewatches(np.array([0, 1, 0]), np.array([4, 5, 4])) is True


def test_exact_ranking_masks_each_querys_watched_rows() -> None:
    rng = np.random.default_rng(0)
    queries, items = rng.normal(size=(6, 4)), rng.normal(size=(30, 4))
    upload = np.zeros(30, dtype=np.int64)
    times = np.full(6, 86_400 * 3)
    plain = top_k_available(queries, times, items, upload, 5)
    # exclude each query's own top 2: the masked ranking is the plain top 7 without them
    w = Watched(np.arange(0, 13, 2), np.sort(plain[:, :2], axis=1).ravel())
    masked = top_k_available(queries, times, items, upload, 5, excluded=w)
    wide = top_k_available(queries, times, items, upload, 7)
    assert masked.tolist() == wide[:, 2:].tolist()
    by_day = rank_by_day(queries, times, lambda _t: items, upload, 5, excluded=w)
    assert by_day.tolist() == masked.tolist()
    assert by_day.tolist() == drop_excluded(wide, w, 5).tolist()


def test_watch_log_of_a_dataset(small_dataset: Path) -> None:
    log = WatchLog.of(read_dataset(small_dataset))
    # conftest's watches: u1 v1 (T0+100), u1 v3 (T0+4000), u2 v4, u2 v2; no rewatches
    assert log.rewatches is False
    t0 = 1_767_225_600
    w = log.before(np.array([0, 0, 1]), np.array([t0 + 4_000, t0 + 4_001, t0 + 9_000]))
    assert _lists(w) == [[0], [0, 2], [1, 3]]


def test_evaluate_rejects_a_bad_rule_or_ease_size_before_any_work(tmp_path: Path) -> None:
    from recsys.evaluation.evaluate import evaluate

    nowhere = tmp_path / "missing"  # neither read nor written: the arguments fail first
    with pytest.raises(ValueError, match="exclude_watched must be one of"):
        evaluate(nowhere, nowhere, out=nowhere, exclude_watched="always")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ease_max_items must be >= 0, got -1"):
        evaluate(nowhere, nowhere, out=nowhere, ease_max_items=-1)
    assert not nowhere.exists()

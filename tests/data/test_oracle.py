"""The oracle recomputes exactly the probabilities the generator sampled every watch with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.dataset.io import CanonicalDataset, DatasetError
from recsys.dataset.splits import Split
from recsys.dataset.validation import read_dataset
from recsys_data.oracle import load_world, oracle_probabilities, oracle_recall
from recsys_data.synth import generate_world
from recsys_data.world import PROBABILITIES_FILE, World, world_config

CHUNK = 4_000  # rows per oracle call: [4000, 1500] float64 = 48 MB


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world, with the generator's own probability of every sampled watch."""
    out = tmp_path_factory.mktemp("oracle") / "tiny"
    generate_world(world_config("tiny"), out, record_probabilities=True)
    return out


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> CanonicalDataset:
    return read_dataset(tiny_dir)


@pytest.fixture(scope="module")
def world(tiny_dir: Path) -> World:
    return load_world(tiny_dir)


@pytest.fixture(scope="module")
def watch_rows(tiny: CanonicalDataset) -> np.ndarray:
    return np.flatnonzero((tiny.events["type"] == "watch").to_numpy())


@pytest.fixture(scope="module")
def true_items(tiny: CanonicalDataset, watch_rows: np.ndarray) -> np.ndarray:
    ids = tiny.events["item_id"].iloc[watch_rows]
    return np.asarray(pd.Index(tiny.items["item_id"]).get_indexer(ids))


@pytest.fixture(scope="module")
def scored(
    tiny: CanonicalDataset, world: World, watch_rows: np.ndarray, true_items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For every watch: the oracle's probability of the true video, and a randomised PIT.

    PIT = P(score < true) + U * P(score == true) under the oracle's own distribution: uniform
    on [0, 1] exactly when the watches were drawn from that distribution.
    """
    p_true = np.empty(len(watch_rows))
    pit = np.empty(len(watch_rows))
    u = np.random.default_rng(0).random(len(watch_rows))
    for lo in range(0, len(watch_rows), CHUNK):
        sl = slice(lo, lo + CHUNK)
        probs = oracle_probabilities(world, tiny, watch_rows[sl])
        pt = probs[np.arange(len(probs)), true_items[sl]][:, None]
        p_true[sl] = pt[:, 0]
        pit[sl] = (probs * (probs < pt)).sum(axis=1) + u[sl] * (probs * (probs == pt)).sum(axis=1)
    return p_true, pit


def test_oracle_equals_the_generators_probability_for_every_watch(
    tiny_dir: Path, scored: tuple[np.ndarray, np.ndarray], watch_rows: np.ndarray
) -> None:
    recorded = np.load(tiny_dir / PROBABILITIES_FILE, allow_pickle=False)
    assert np.isnan(np.delete(recorded, watch_rows)).all()  # searches have none
    p_true, _ = scored
    # two independent computations of the same mixture: equal up to float rounding
    np.testing.assert_allclose(p_true, recorded[watch_rows], rtol=1e-9)


def test_watches_are_draws_from_the_oracles_distribution(
    scored: tuple[np.ndarray, np.ndarray],
) -> None:
    _, pit = scored
    n = len(pit)
    # uniform PIT: mean 1/2 (sd 1/sqrt(12 n) ~ 0.002), each decile holds n/10 (sd ~ 50)
    assert abs(pit.mean() - 0.5) < 0.01
    deciles = np.histogram(pit, bins=10, range=(0.0, 1.0))[0]
    assert np.abs(deciles - n / 10).max() < 5 * np.sqrt(n * 0.1 * 0.9)


def test_probabilities_sum_to_one_and_skip_unwatchable_videos(
    tiny: CanonicalDataset, world: World, watch_rows: np.ndarray
) -> None:
    rows = watch_rows[:: max(1, len(watch_rows) // 500)]
    probs = oracle_probabilities(world, tiny, rows)
    assert probs.shape == (len(rows), 1_500)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    day = (tiny.events["timestamp"].to_numpy()[rows] - world.config.start_time) // 86_400
    unwatchable = world.item_upload_day[None, :] >= day[:, None]  # uploaded that day or later
    assert unwatchable.any()
    assert (probs[unwatchable] == 0).all()
    assert (probs[~unwatchable] > 0).all()  # every available video has some chance


def _previous_in_session(tiny: CanonicalDataset, rows: np.ndarray) -> pd.DataFrame:
    ev = tiny.events
    order = ev.sort_values(["user_id", "timestamp"], kind="stable").index.to_numpy()
    rank = np.empty(len(ev), dtype=np.int64)
    rank[order] = np.arange(len(ev))
    prev = order[np.maximum(rank[rows] - 1, 0)]
    ok = (rank[rows] > 0) & (ev["user_id"].to_numpy()[prev] == ev["user_id"].to_numpy()[rows])
    ok &= ev["timestamp"].to_numpy()[rows] - ev["timestamp"].to_numpy()[prev] < 1_800
    return pd.DataFrame({"row": rows, "prev": np.where(ok, prev, -1)})


def test_mixture_weights_show_in_the_distribution(
    tiny: CanonicalDataset, world: World, watch_rows: np.ndarray
) -> None:
    ctx = _previous_in_session(tiny, watch_rows)
    ev = tiny.events
    item_index = pd.Index(tiny.items["item_id"])
    titles = tiny.items["title"].str.split().map(set).to_numpy()
    after_search = ctx[(ctx["prev"] >= 0)]
    after_search = after_search[ev["type"].to_numpy()[after_search["prev"]] == "search"][:50]
    probs = oracle_probabilities(world, tiny, after_search["row"].to_numpy())
    days = (ev["timestamp"].to_numpy()[after_search["row"]] - world.config.start_time) // 86_400
    checked = 0
    for p, prev, day in zip(probs, after_search["prev"], days, strict=True):
        words = ev["query"].iloc[prev].split()
        watchable = world.item_upload_day < day
        if not all(any(w in t for t in titles[watchable]) for w in words):
            continue  # a word without a watchable video hands its share to P_base
        holds = np.array([bool(t.intersection(words)) for t in titles])
        # 0.7 of the mass picks a video holding a query word, plus P_base's share of them
        assert p[holds].sum() >= 0.7 - 1e-9
        checked += 1
    assert checked >= 25
    after_watch = ctx[(ctx["prev"] >= 0)]
    after_watch = after_watch[ev["type"].to_numpy()[after_watch["prev"]] == "watch"][:50]
    probs = oracle_probabilities(world, tiny, after_watch["row"].to_numpy())
    prev_items = item_index.get_indexer(ev["item_id"].iloc[after_watch["prev"]])
    for p, item in zip(probs, prev_items, strict=True):
        same_topic = world.item_topic == world.item_topic[item]
        # 0.5 on the previous video's topic, plus P_base's share of it
        assert p[same_topic].sum() >= 0.5 - 1e-9


def test_uses_only_strictly_earlier_events(
    tiny: CanonicalDataset, world: World, watch_rows: np.ndarray
) -> None:
    rows = watch_rows[len(watch_rows) // 2 : len(watch_rows) // 2 + 20]
    full = oracle_probabilities(world, tiny, rows)
    cut = int(tiny.events["timestamp"].iloc[rows].max())
    past = tiny.events[tiny.events["timestamp"] <= cut].reset_index(drop=True)
    truncated = CanonicalDataset(tiny.users, tiny.items, past, tiny.meta)
    # the future is gone; row positions are unchanged because events are in time order
    np.testing.assert_array_equal(oracle_probabilities(world, truncated, rows), full)
    context = _previous_in_session(tiny, rows)
    changed = context.loc[context["prev"] >= 0].iloc[0]
    without_prev = CanonicalDataset(
        tiny.users, tiny.items, tiny.events.drop(index=int(changed["prev"])), tiny.meta
    )
    shifted = int(changed["row"]) - 1  # one earlier row dropped
    moved = oracle_probabilities(world, without_prev, np.array([shifted]))
    j = int(np.flatnonzero(rows == changed["row"])[0])
    assert not np.allclose(moved[0], full[j])  # the session context does matter


def test_rejects_search_rows(tiny: CanonicalDataset, world: World) -> None:
    search = np.flatnonzero((tiny.events["type"] == "search").to_numpy())[:3]
    with pytest.raises(ValueError, match="not watches"):
        oracle_probabilities(world, tiny, search)


def test_load_world_explains_a_dataset_without_ground_truth(small_dataset: Path) -> None:
    with pytest.raises(DatasetError, match="not a synthetic world"):
        load_world(small_dataset)
    with pytest.raises(DatasetError, match="missing"):
        load_world(small_dataset / "nowhere")


@pytest.mark.parametrize("split", [Split("time"), Split("last")])
def test_oracle_recall_far_above_most_popular(tiny_dir: Path, split: Split) -> None:
    result = oracle_recall(tiny_dir, split, ks=(10, 50, 100), max_events=1_000, seed=0)
    assert result.num_events == min(1_000, result.num_holdout)
    assert set(result.recall) == {10, 50, 100}
    assert result.recall[10] <= result.recall[50] <= result.recall[100] <= 1.0
    # seed 0, time split: ~0.40 vs ~0.11; most-popular misses each session's context
    assert result.recall[10] > 3 * result.popularity_recall[10]
    assert result.mean_log_probability > np.log(1 / 1_500)  # beats a uniform guess
    again = oracle_recall(tiny_dir, split, max_events=1_000, seed=0)
    assert again.recall == result.recall  # the sample is fixed by the seed

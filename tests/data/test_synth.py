"""The synthetic world generator: deterministic, valid, and with the structure it promises.

Each structural test would fail if the world lost that structure (search intent, topic
continuity, fresh-upload bursts, demographics, heavy-tailed popularity, session timing).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.dataset.io import CanonicalDataset, DatasetError
from recsys.dataset.validation import read_dataset, validate_dataset
from recsys_data.oracle import load_world
from recsys_data.synth import generate_world
from recsys_data.world import PRESETS, World, WorldConfig, world_config

FILES = (
    "users.parquet",
    "items.parquet",
    "events.parquet",
    "world/truth.npz",
    "world/world.json",
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world, seed 0, generated once for this module."""
    out = tmp_path_factory.mktemp("synth") / "tiny"
    generate_world(world_config("tiny"), out)
    return out


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> CanonicalDataset:
    return read_dataset(tiny_dir)


@pytest.fixture(scope="module")
def world(tiny_dir: Path) -> World:
    return load_world(tiny_dir)


@pytest.fixture(scope="module")
def log(tiny: CanonicalDataset, world: World) -> pd.DataFrame:
    """Events by user then time, with world indices, topic and the previous event."""
    ev = tiny.events
    out = pd.DataFrame(
        {
            "user": pd.Index(tiny.users["user_id"]).get_indexer(ev["user_id"]),
            "time": ev["timestamp"].to_numpy(),
            "watch": (ev["type"] == "watch").to_numpy(),
            "item": pd.Index(tiny.items["item_id"]).get_indexer(ev["item_id"]),
            "query": ev["query"].to_numpy(dtype=object),
        }
    )
    out = out.sort_values(["user", "time"], kind="stable").reset_index(drop=True)
    out["topic"] = np.where(out["watch"], world.item_topic[out["item"].clip(lower=0)], -1)
    out["day"] = (out["time"] - world.config.start_time) // 86_400
    same_user = out["user"].eq(out["user"].shift()).to_numpy()
    gap = out["time"].diff().to_numpy()
    out["gap"] = np.where(same_user, gap, np.nan)
    out["in_session"] = same_user & (gap < 1_800)
    titles = tiny.items["title"].to_numpy(dtype=object)[out["item"].to_numpy()]
    titles[~out["watch"].to_numpy()] = None  # searches
    out["title"] = titles
    for col in ("watch", "item", "query", "topic"):
        out[f"prev_{col}"] = out[col].shift()
    return out


# ------------------------------------------------------------------------- config


def test_world_config_applies_overrides_and_names_bad_input() -> None:
    config = world_config("tiny", seed=7, users=50, days=3)
    assert (config.users, config.items, config.days, config.seed) == (50, 1_500, 3, 7)
    assert set(PRESETS) == {"tiny", "demo", "bench"}
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        world_config("huge")
    with pytest.raises(ValueError, match="users must be a positive integer"):
        world_config("tiny", users=0)
    with pytest.raises(ValueError, match="days must be a positive integer"):
        world_config("tiny", days=-1)
    with pytest.raises(ValueError, match="end after tomorrow"):
        world_config("tiny", days=100_000)


def test_config_round_trips_through_json_params(tiny: CanonicalDataset) -> None:
    assert tiny.meta.source == "synthetic"
    assert WorldConfig.from_dict(tiny.meta.params) == world_config("tiny")


# -------------------------------------------------------------- files and validity


def test_same_seed_same_bytes_other_seed_differs(
    tiny_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[int, int]] = []
    with caplog.at_level(logging.INFO, logger="recsys_data.synth"):
        generate_world(
            world_config("tiny"), tmp_path / "again", progress=lambda d, n: calls.append((d, n))
        )
    assert calls == [(d, 14) for d in range(1, 15)]  # one call per simulated day
    assert "generated synthetic world" in caplog.text
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (tiny_dir / name).read_bytes(), name
    generate_world(world_config("tiny", seed=1), tmp_path / "seed1")
    for name in ("users.parquet", "items.parquet", "events.parquet"):
        assert (tmp_path / "seed1" / name).read_bytes() != (tiny_dir / name).read_bytes(), name


def test_refuses_to_overwrite_unless_asked(tiny_dir: Path) -> None:
    with pytest.raises(DatasetError, match="already exists"):
        generate_world(world_config("tiny"), tiny_dir)


def test_generated_world_validates(tiny_dir: Path) -> None:
    report = validate_dataset(tiny_dir)
    assert report.ok, report.problems


def test_tables_look_like_a_video_platform(tiny: CanonicalDataset) -> None:
    users, items, ev = tiny.users, tiny.items, tiny.events
    assert len(users) == 300
    assert len(items) == 1_500
    assert 10_000 < len(ev) < 60_000  # "a few tens of thousands at most"
    assert users["user_id"].iloc[0] == "u000000"
    assert items["item_id"].iloc[0] == "v0000000"
    assert users["age"].between(13, 80).all()
    assert set(users["gender"]) <= {"f", "m", "x"}
    assert users.groupby("country")["region"].nunique().max() == 1  # a country has one region
    assert items["duration"].between(60, 1_800).all()
    assert (items["upload_time"].diff().dropna() >= 0).all()  # ids follow upload order
    n_words = items["title"].str.count(" ") + 1
    assert n_words.between(3, 8).all()  # 3-7 topic words, maybe the channel's token
    emb = tiny.content_embeddings
    assert emb is not None
    assert emb.shape == (1_500, 32)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    searches = ev["type"] == "search"
    # search share: (0.3 at session start + ~0.08 later) over ~6 steps ~ 0.11
    assert 0.05 < searches.mean() < 0.2
    assert ev.loc[searches, "query"].str.fullmatch(r"[a-z]+( [a-z]+){0,2}").all()
    assert (ev["timestamp"].diff().dropna() >= 0).all()  # sorted by time


def test_content_embeddings_reflect_topic(tiny: CanonicalDataset, world: World) -> None:
    emb = tiny.content_embeddings
    assert emb is not None
    sim = emb @ emb.T
    same = world.item_topic[:, None] == world.item_topic[None, :]
    # topic centroid + channel offset + noise: same-topic pairs are much closer
    assert sim[same].mean() > sim[~same].mean() + 0.3


# ----------------------------------------------------------------------- structure


def test_no_watch_before_upload(log: pd.DataFrame, world: World) -> None:
    watches = log[log["watch"]]
    # watchable only from the day after the upload day
    assert (watches["day"].to_numpy() > world.item_upload_day[watches["item"]]).all()


def test_session_gaps_separate_sessions_cleanly(log: pd.DataFrame, world: World) -> None:
    slot = (log["time"] - world.config.start_time) // 7_200
    same_user = log["gap"].notna()
    same_slot = same_user & slot.eq(slot.shift())
    # inside a session every gap is < 20 min; sessions sit in distinct two-hour slots,
    # start in the first 30 min and end before 90 min, so between sessions it is >= 30 min
    assert log.loc[same_slot, "gap"].max() < 1_200
    assert log.loc[same_user & ~same_slot, "gap"].min() >= 1_800
    assert (log["time"] - world.config.start_time - slot * 7_200).max() < 5_400


def test_watch_after_search_matches_the_query(log: pd.DataFrame) -> None:
    after = log[log["watch"] & log["in_session"] & log["prev_watch"].eq(False)]
    assert len(after) > 500
    query = after["prev_query"].str.split().to_list()
    titles = [set(t.split()) for t in after["title"]]
    hit = np.mean([bool(t.intersection(q)) for q, t in zip(query, titles, strict=True)])
    # chance: the same watches paired with other searches' queries
    shuffled = np.random.default_rng(0).permutation(len(query))
    chance = np.mean([bool(titles[j].intersection(query[i])) for i, j in enumerate(shuffled)])
    # the search component (weight 0.7) always draws a video holding a query word
    assert hit > 0.7
    assert chance < 0.2
    assert hit > 4 * chance


def test_previous_watch_topic_predicts_the_next(log: pd.DataFrame) -> None:
    pairs = log[log["watch"] & log["in_session"] & log["prev_watch"].eq(True)]
    same = (pairs["topic"] == pairs["prev_topic"]).mean()
    share = np.bincount(log.loc[log["watch"], "topic"]) / log["watch"].sum()
    base_rate = float((share**2).sum())  # two independent watches share a topic
    # half of the mass stays on the previous topic: >= 0.5 + 0.5 * (some base rate)
    assert same > 0.5
    assert same > 3 * base_rate


def test_fresh_uploads_get_a_burst(log: pd.DataFrame, world: World) -> None:
    watches = log[log["watch"]]
    upload_day = world.item_upload_day
    age = watches["day"].to_numpy() - upload_day[watches["item"]]
    new = upload_day >= 0
    days = world.config.days

    def per_item_day(ages: range) -> float:
        hits = sum(int(((age == a) & new[watches["item"]]).sum()) for a in ages)
        exposure = sum(int((new & (upload_day + a < days)).sum()) for a in ages)
        return hits / exposure

    # fresh = 1 + 8 exp(-(age - 1) / 2): 9 and 5.9 at ages 1-2, ~1.0 from age 7
    assert per_item_day(range(1, 3)) > 3 * per_item_day(range(7, days))


@pytest.fixture(scope="module")
def topic_shares(log: pd.DataFrame, world: World) -> tuple[np.ndarray, np.ndarray]:
    """Each user's share of watches per topic ``[users, topics]`` (users with >= 5 watches)."""
    watches = log[log["watch"]]
    counts = np.zeros((len(world.user_region), world.num_topics))
    np.add.at(counts, (watches["user"], watches["topic"]), 1)
    keep = counts.sum(axis=1) >= 5
    return counts[keep] / counts[keep].sum(axis=1, keepdims=True), np.flatnonzero(keep)


def _region_distance(shares: np.ndarray, labels: np.ndarray) -> float:
    """User-weighted total variation between each region's mean topic mix and the overall."""
    sums = np.zeros((labels.max() + 1, shares.shape[1]))
    np.add.at(sums, labels, shares)
    n = np.bincount(labels, minlength=len(sums))
    mix = sums / np.maximum(n, 1)[:, None]
    return float((0.5 * np.abs(mix - shares.mean(axis=0)).sum(axis=1) * n).sum() / n.sum())


def _age_trend(shares: np.ndarray, age: np.ndarray) -> float:
    """Sum over topics of the squared correlation between log age and the topic's share."""
    z_age = (np.log(age) - np.log(age).mean()) / np.log(age).std()
    z_shares = (shares - shares.mean(axis=0)) / (shares.std(axis=0) + 1e-12)
    return float(((z_age @ z_shares / len(age)) ** 2).sum())


def test_region_shapes_topic_interest(
    topic_shares: tuple[np.ndarray, np.ndarray], world: World
) -> None:
    shares, users = topic_shares
    labels = world.user_region[users]
    observed = _region_distance(shares, labels)
    rng = np.random.default_rng(0)
    null = [_region_distance(shares, rng.permutation(labels)) for _ in range(200)]
    # users shuffled across regions give the noise level; the real regions beat all 200
    # shuffles (seed 0: ~0.15 against a null mean of ~0.06)
    assert observed > max(null)


def test_age_shapes_topic_interest(
    topic_shares: tuple[np.ndarray, np.ndarray], tiny: CanonicalDataset
) -> None:
    shares, users = topic_shares
    age = tiny.users["age"].to_numpy()[users].astype(np.float64)
    observed = _age_trend(shares, age)
    rng = np.random.default_rng(0)
    null = [_age_trend(shares, rng.permutation(age)) for _ in range(200)]
    # tastes drift with age: the real ages beat all 200 shuffles (seed 0: ~0.26 vs ~0.04)
    assert observed > max(null)


def test_popularity_is_heavy_tailed(log: pd.DataFrame) -> None:
    counts = np.sort(np.bincount(log.loc[log["watch"], "item"], minlength=1_500))[::-1]
    top = counts[: len(counts) // 100].sum() / counts.sum()
    # uniform would give 1%; lognormal quality (sigma 1.5) alone gives ~20% to the top 1%
    assert top > 0.1


def test_regional_videos_are_boosted(log: pd.DataFrame, world: World) -> None:
    watches = log[log["watch"]]
    same_region = world.item_region[watches["item"]] == world.user_region[watches["user"]]
    users = world.user_region[watches["user"]]
    # chance: the share of watches that would match if the video's region were independent
    share_items = np.bincount(world.item_region[watches["item"]], minlength=5) / len(watches)
    chance = float(share_items[users].mean())
    assert same_region.mean() > 1.3 * chance  # B = 3 on same-region videos

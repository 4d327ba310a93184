"""Next-watch examples: no leakage, correct contexts, and serving contexts equal training ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys.dataset.io import DatasetMeta, DatasetWriter
from recsys.dataset.splits import Split
from recsys.examples.building import ExampleSet, build_examples, load_catalog
from recsys.examples.pipeline import example_batches, make_dataset
from recsys.features import contract as F
from recsys.features.context import RequestContext, encode_request
from recsys.features.contract import FeatureConfig
from recsys.features.encoder import tokenize
from recsys.features.tables import ItemTable
from recsys.features.vocab import Vocabularies
from tests.conftest import T0

CONFIG = FeatureConfig(max_history=5, max_searches=3, max_search_tokens=6, max_title_tokens=4)
WORDS = ["cat", "dog", "piano", "goal", "rain", "chess", "ramen", "orbit"]


def random_world(path: Path, seed: int = 1, with_searches: bool = True) -> Path:
    """A small random dataset with same-second ties, searches and late uploads."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_events = 25, 40, 1500
    users = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(n_users)],
            "country": rng.choice(["US", "DE", "JP", None], n_users),
            "region": rng.choice(["a", "b", None], n_users),
            "age": pd.array(rng.choice([18, 30, 50, -1], n_users), dtype="Int64").map(
                lambda a: None if a == -1 else a
            ),
            "gender": rng.choice(["f", "m", "x", None], n_users),
        }
    )
    upload = T0 + rng.integers(-10, 20, n_items) * 86_400
    items = pd.DataFrame(
        {
            "item_id": [f"v{i}" for i in range(n_items)],
            "channel": rng.choice(["c1", "c2", "c3"], n_items),
            "category": rng.choice(["music", "news"], n_items),
            "title": [" ".join(rng.choice(WORDS, 3)) for _ in range(n_items)],
            "upload_time": upload,
            "duration": rng.uniform(60, 600, n_items),
        }
    )
    user = rng.integers(0, n_users, n_events)
    ts = T0 + rng.integers(0, 30 * 24, n_events) * 3_600  # hourly grid: many exact ties
    is_search = rng.random(n_events) < (0.25 if with_searches else 0.0)
    item = np.array([rng.choice(np.flatnonzero(upload <= t)) for t in ts])
    events = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in user],
            "timestamp": ts,
            "type": np.where(is_search, "search", "watch"),
            "item_id": [None if s else f"v{i}" for s, i in zip(is_search, item, strict=True)],
            "query": [" ".join(rng.choice(WORDS, 2)) if s else None for s in is_search],
            "watch_fraction": np.where(is_search, np.nan, rng.uniform(0, 1, n_events)),
        }
    ).sort_values("timestamp", kind="stable")
    emb = rng.normal(size=(n_items, 8)).astype(np.float32)
    with DatasetWriter(path, DatasetMeta("random", "test")) as writer:
        writer.write_users(users)
        writer.write_items(items, emb)
        writer.append_events(events)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_world(tmp_path_factory.mktemp("world") / "data")


@pytest.fixture(scope="module", params=["time", "last"])
def built(
    request: pytest.FixtureRequest, world: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Split]:
    split = Split(request.param)
    out = tmp_path_factory.mktemp(f"ex-{request.param}") / "examples"
    build_examples(world, out, split, CONFIG, seed=3, partitions=3)
    return out, split


def read_examples(out: Path, kind: str) -> pd.DataFrame:
    meta = ExampleSet.load(out)
    names = meta.train_shards if kind == "train" else meta.eval_shards
    return pd.concat([pq.read_table(out / n).to_pandas() for n in names], ignore_index=True)


def expected_context(
    events: pd.DataFrame, vocabs: Vocabularies, user: str, t: int
) -> dict[str, object]:
    """A naive re-derivation of the context: the user's events strictly before t."""
    mine = events[(events["user_id"] == user) & (events["timestamp"] < t)]
    mine = mine.sort_values("timestamp", kind="stable")
    watched = mine[mine["type"] == "watch"]
    ids = vocabs.items.lookup(watched["item_id"])
    known = watched[ids > F.OOV]
    watches = [int(i) for i in ids if i > F.OOV][-CONFIG.max_history :]
    searched = mine[mine["type"] == "search"]
    queries = searched["query"].tolist()[-CONFIG.max_searches :]
    tokens = [int(i) for q in queries for i in vocabs.tokens.lookup(tokenize(q))]
    last = [int(i) for i in vocabs.tokens.lookup(tokenize(queries[-1]))] if queries else []
    year = F.MAX_GAP_MINUTES
    return {
        F.HISTORY: watches,
        F.SEARCH_TOKENS: tokens[-CONFIG.max_search_tokens :],
        F.LAST_SEARCH_TOKENS: last[-CONFIG.max_last_search_tokens :],
        F.SINCE_LAST_WATCH: min((t - known["timestamp"].iloc[-1]) / 60, year)
        if len(known)
        else year,
        F.SINCE_LAST_SEARCH: min((t - searched["timestamp"].iloc[-1]) / 60, year)
        if queries
        else year,
    }


def unpad(row: np.ndarray) -> list[int]:
    return [int(v) for v in row if v != F.PAD]


def test_contexts_hold_exactly_the_earlier_events(built: tuple[Path, Split], world: Path) -> None:
    out, _ = built
    events = pq.read_table(world / "events.parquet").to_pandas()
    users, _, _ = load_catalog(world)
    vocabs = Vocabularies.load(out / "vocabularies.json")
    for kind in ("train", "eval"):
        ex = read_examples(out, kind)
        assert len(ex) > 0
        for row in ex.sample(min(len(ex), 60), random_state=0).itertuples():
            user = users["user_id"].iloc[row.user_index]
            expected = expected_context(events, vocabs, user, row.timestamp)
            # strictly earlier: an event in the same second as the label is not context
            assert unpad(row.history) == expected[F.HISTORY]
            assert unpad(row.search_tokens) == expected[F.SEARCH_TOKENS]
            assert unpad(row.last_search_tokens) == expected[F.LAST_SEARCH_TOKENS]
            assert row.since_last_watch == pytest.approx(expected[F.SINCE_LAST_WATCH])
            assert row.since_last_search == pytest.approx(expected[F.SINCE_LAST_SEARCH])


def test_no_evaluation_watch_reaches_training(built: tuple[Path, Split], world: Path) -> None:
    out, split = built
    meta = ExampleSet.load(out)
    train, ev = read_examples(out, "train"), read_examples(out, "eval")
    key = ["user_index", "timestamp", "item_index"]
    assert not set(map(tuple, train[key].to_numpy())) & set(map(tuple, ev[key].to_numpy()))
    if split.name == "time":
        assert meta.cutoff is not None
        assert (train["timestamp"] < meta.cutoff).all()
        assert (ev["timestamp"] >= meta.cutoff).all()
    else:
        # each evaluated user's held-out watch is after (or tied with) all their training labels
        last_train = train.groupby("user_index")["timestamp"].max()
        joined = ev.set_index("user_index")["timestamp"].to_frame("eval").join(last_train)
        assert (joined["eval"] >= joined["timestamp"].fillna(0)).all()
    assert (ev["example_age"] == 0).all()  # evaluated as serving requests
    assert (train["example_age"] >= 0).all()


def test_vocabularies_see_no_evaluation_only_ids(built: tuple[Path, Split], world: Path) -> None:
    out, _ = built
    _, items, _ = load_catalog(world)
    vocabs = Vocabularies.load(out / "vocabularies.json")
    train, ev = read_examples(out, "train"), read_examples(out, "eval")
    eval_only = set(ev["item_index"]) - set(train["item_index"])
    # every training label is known; nothing seen only in evaluation is
    assert set(vocabs.items.values) == set(items["item_id"].iloc[sorted(set(train["item_index"]))])
    assert not {items["item_id"].iloc[i] for i in eval_only} & set(vocabs.items.values)


def test_examples_per_user_are_capped(world: Path, tmp_path: Path) -> None:
    capped = FeatureConfig(max_history=5, max_examples_per_user=3)
    build_examples(world, tmp_path / "ex", Split("time"), capped, partitions=2)
    per_user = read_examples(tmp_path / "ex", "train").groupby("user_index").size()
    assert per_user.max() == 3  # random world: every user has more than 3 training watches


def test_build_is_deterministic_for_a_seed(world: Path, tmp_path: Path) -> None:
    a = build_examples(world, tmp_path / "a", Split("time"), CONFIG, seed=7, partitions=2)
    b = build_examples(world, tmp_path / "b", Split("time"), CONFIG, seed=7, partitions=2)
    assert a.counts == b.counts
    assert read_examples(tmp_path / "a", "train").equals(read_examples(tmp_path / "b", "train"))


def test_serving_context_equals_training_context(built: tuple[Path, Split], world: Path) -> None:
    out, _ = built
    events = pq.read_table(world / "events.parquet").to_pandas()
    users, _, _ = load_catalog(world)
    vocabs = Vocabularies.load(out / "vocabularies.json")
    ev = read_examples(out, "eval")
    for row in ev.head(25).itertuples():
        user = users.iloc[row.user_index]
        mine = events[events["user_id"] == user["user_id"]].sort_values("timestamp", kind="stable")
        watches = mine[mine["type"] == "watch"]
        searches = mine[mine["type"] == "search"]
        ctx = RequestContext(
            watch_history=watches["item_id"].tolist(),
            watch_times=watches["timestamp"].tolist(),
            searches=searches["query"].tolist(),
            search_times=searches["timestamp"].tolist(),
            country=user["country"],
            region=user["region"],
            age=None if pd.isna(user["age"]) else int(user["age"]),
            gender=user["gender"],
            request_time=int(row.timestamp),
        )
        served = encode_request(ctx, vocabs, CONFIG)
        for name in F.QUERY_FEATURES:
            np.testing.assert_array_equal(served[name][0], getattr(row, name), err_msg=name)


def test_batches_join_candidate_features(built: tuple[Path, Split], world: Path) -> None:
    out, _ = built
    _, items, emb = load_catalog(world)
    vocabs = Vocabularies.load(out / "vocabularies.json")
    table = ItemTable.build(items, emb, vocabs, CONFIG)
    total = ExampleSet.load(out).counts["train"]
    batches = list(example_batches(out, "train", table, batch_size=64, seed=1))
    assert sum(len(b[F.ITEM_INDEX]) for b in batches) == total  # one pass, nothing lost
    assert all(len(b[F.ITEM_INDEX]) == 64 for b in batches[:-1])
    b = batches[0]
    rows = b[F.ITEM_INDEX]
    np.testing.assert_array_equal(b[F.ITEM], vocabs.items.lookup(items["item_id"].iloc[rows]))
    np.testing.assert_array_equal(b[F.CONTENT_EMBEDDING], emb[rows])
    assert (b[F.UPLOAD_AGE] >= 0).all()
    dropped = list(example_batches(out, "train", table, batch_size=64, drop_remainder=True))
    assert sum(len(x[F.ITEM_INDEX]) for x in dropped) == total - total % 64


def test_two_epochs_shuffle_differently(built: tuple[Path, Split], world: Path) -> None:
    out, _ = built
    _, items, emb = load_catalog(world)
    table = ItemTable.build(items, emb, Vocabularies.load(out / "vocabularies.json"), CONFIG)
    ds = make_dataset(out, "train", table, batch_size=32, seed=5)
    first = np.concatenate([b[F.ITEM_INDEX].numpy() for b in ds])
    second = np.concatenate([b[F.ITEM_INDEX].numpy() for b in ds])
    assert sorted(first) == sorted(second)  # the same examples
    assert not np.array_equal(first, second)  # in a new order


def test_dataset_without_searches_or_content(tmp_path: Path) -> None:
    world = random_world(tmp_path / "plain", with_searches=False)
    out = tmp_path / "ex"
    meta = build_examples(world, out, Split("last"), CONFIG)
    ev = read_examples(out, "eval")
    assert meta.counts["eval"] > 0
    assert (np.stack(ev["search_tokens"].to_numpy()) == F.PAD).all()


def test_worker_shards_split_the_rows_evenly(built: tuple[Path, Split], world: Path) -> None:
    out, _ = built
    _, items, emb = load_catalog(world)
    table = ItemTable.build(items, emb, Vocabularies.load(out / "vocabularies.json"), CONFIG)
    total = ExampleSet.load(out).counts["train"]
    seen = []
    for worker in range(2):
        batches = example_batches(out, "train", table, 50, shard_index=worker, num_shards=2)
        seen.append(np.concatenate([b[F.ITEM_INDEX] for b in batches]))
    assert len(seen[0]) + len(seen[1]) == total  # every example once, on one worker
    groups = sum(pq.ParquetFile(out / n).num_row_groups for n in ExampleSet.load(out).train_shards)
    assert abs(len(seen[0]) - len(seen[1])) <= groups  # at most one row apart per row group
    with pytest.raises(ValueError, match="shard_index"):
        next(example_batches(out, "train", table, 50, shard_index=2, num_shards=2))

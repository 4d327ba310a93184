"""The raw-to-id encoder: example building and both serving paths give the same ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recsys.artifact.profiles import Profiles, build_profiles
from recsys.dataset.splits import Split
from recsys.examples.building import build_examples, read_examples
from recsys.features import contract as F
from recsys.features.context import RequestContext, encode_request, request_demographics
from recsys.features.contract import FeatureConfig
from recsys.features.encoder import (
    EventLog,
    encode_queries,
    encode_query,
    encode_searches,
    example_age_days,
    tail_window,
)
from recsys.features.tables import UserTable
from recsys.features.vocab import Vocabularies, Vocabulary
from recsys.inference.profile_features import EncodedProfiles
from tests.conftest import T0, write_small


def _vocabs() -> Vocabularies:
    return Vocabularies(
        items=Vocabulary("items", ["v1"]),
        tokens=Vocabulary("tokens", ["cat"]),
        countries=Vocabulary("countries", ["US", "BR"]),
        regions=Vocabulary("regions", ["US-CA"]),
        genders=Vocabulary("genders", ["f", "m"]),
        channels=Vocabulary("channels", ["c"]),
        categories=Vocabulary("categories", ["music"]),
    )


def test_request_demographics_equal_the_user_table_row() -> None:
    vocabs = _vocabs()
    cases = [
        ("US", "US-CA", 34, "f"),
        ("BR", None, None, "m"),
        ("ZZ", "nowhere", 0, "x"),  # unknown values: OOV ids; age 0 is a known age
        (None, None, None, None),
        ("", "", 120, ""),
    ]
    frame = pd.DataFrame(cases, columns=["country", "region", "age", "gender"])
    frame.insert(0, "user_id", [f"u{i}" for i in range(len(cases))])
    table = UserTable.build(frame, vocabs)
    for row, (country, region, age, gender) in enumerate(cases):
        ctx = RequestContext(country=country, region=region, age=age, gender=gender)
        got = request_demographics(ctx, vocabs)
        want = table.features(np.array([row]))
        assert set(got) == set(want)
        for name, value in want.items():
            assert got[name].dtype == value.dtype, name
            np.testing.assert_array_equal(got[name], value, err_msg=f"case {row}: {name}")


def test_one_slice_tail_window_equals_the_batched_one() -> None:
    """Serving's one-slice shortcut of tail_window gives the rows training's batch gives."""
    rng = np.random.default_rng(3)
    flat = rng.integers(2, 1000, size=200).astype(np.int32)
    starts = rng.integers(0, 200, size=300)
    ends = np.minimum(starts + rng.integers(-3, 80, size=300), 200)  # some empty or reversed
    for width in (1, 8, 50):
        batched = tail_window(flat, starts, ends, width)
        for i in range(len(ends)):
            one = tail_window(flat, starts[i : i + 1], ends[i : i + 1], width)
            np.testing.assert_array_equal(one, batched[i : i + 1], err_msg=f"{i} {width}")
            assert one.dtype == batched.dtype
    empty = tail_window(np.zeros(0, dtype=np.int32), np.array([0]), np.array([0]), 4)
    np.testing.assert_array_equal(empty, np.zeros((1, 4), dtype=np.int32))


def test_one_context_equals_its_row_of_a_batch() -> None:
    """encode_query (serving's one context) gives each row encode_queries gives a batch."""
    rng = np.random.default_rng(5)
    config = FeatureConfig(max_history=4, max_searches=3, max_search_tokens=5)
    n_watch, n_search = 60, 40
    lengths = rng.integers(0, 4, size=n_search)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    log = EventLog(
        watch_items=rng.integers(2, 50, size=n_watch).astype(np.int32),
        watch_time=np.sort(rng.integers(T0, T0 + 10_000, size=n_watch)),
        search_time=np.sort(rng.integers(T0, T0 + 10_000, size=n_search)),
        search_offsets=offsets,
        search_tokens=rng.integers(1, 30, size=int(offsets[-1])).astype(np.int32),
    )
    w_start = rng.integers(0, n_watch, size=50)
    w_end = np.minimum(w_start + rng.integers(0, 9, size=50), n_watch)
    s_start = rng.integers(0, n_search, size=50)
    s_end = np.minimum(s_start + rng.integers(0, 6, size=50), n_search)
    moment = T0 + rng.integers(-100, 2 * 525_600 * 60, size=50)
    age = rng.random(50) * 30
    demo = {F.COUNTRY: rng.integers(0, 5, size=50).astype(np.int32)}
    batch = encode_queries(log, (w_start, w_end), (s_start, s_end), demo, age, moment, config)
    for i in range(50):
        one = encode_query(
            log,
            (int(w_start[i]), int(w_end[i])),
            (int(s_start[i]), int(s_end[i])),
            {F.COUNTRY: demo[F.COUNTRY][i : i + 1]},
            float(age[i]),
            int(moment[i]),
            config,
        )
        assert list(one) == list(batch)
        for name, values in batch.items():
            np.testing.assert_array_equal(one[name], values[i : i + 1], err_msg=f"{i} {name}")
            assert one[name].dtype == values.dtype, name


def test_blank_searches_do_not_count_and_texts_share_their_tokens() -> None:
    vocabs = _vocabs()
    texts = pa.array(["Cat cat", "  ", None, "cat-dog", "Cat cat", "\u3000"])
    kept, tokens, offsets = encode_searches(texts, vocabs)
    assert kept.tolist() == [True, False, False, True, True, False]
    cat = vocabs.tokens.lookup(["cat"])[0]
    # "dog" is not in the vocabulary: out-of-vocabulary, still a token
    assert offsets.tolist() == [0, 2, 4, 6]
    assert tokens.tolist() == [cat, cat, cat, F.OOV, cat, cat]


# ---- one user at one moment: the example built for training equals what serving encodes

SMALL = FeatureConfig(
    max_history=3,
    max_searches=2,
    max_search_tokens=4,
    max_last_search_tokens=2,
    max_examples_per_user=None,
)
WORDS = ["Guitar", "live", "NEWS", "tonight", "café", "piano", "lesson", "rare-word"]


def _world(path: Path) -> Path:
    """Five users with watches and searches long enough to fill and slide every window."""
    rng = np.random.default_rng(11)
    users = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4", "u5"],
            "country": ["US", "DE", None, "US", "FR"],
            "region": ["NA", "EU", None, None, "EU"],
            "age": [25, 61, None, 40, None],
            "gender": ["f", "m", None, "x", "f"],
        }
    )
    items = pd.DataFrame(
        {
            "item_id": [f"v{i}" for i in range(10)],
            "channel": ["c1"] * 10,
            "category": ["music"] * 10,
            "title": [f"{WORDS[i % 8]} video" for i in range(10)],
            "upload_time": [T0] * 10,
            "duration": [300.0] * 10,
        }
    )
    rows = []
    for u in users["user_id"][:4]:  # u5 has no events
        times = np.sort(rng.choice(np.arange(T0 + 60, T0 + 200_000, 60), size=30, replace=False))
        for t in times:
            if rng.random() < 0.6:
                # v8, v9 are watched late only: unknown to the vocabulary (training window)
                item = f"v{rng.integers(0, 10 if t > T0 + 170_000 else 8)}"
                rows.append((u, int(t), "watch", item, None))
            else:
                text = " ".join(rng.choice(WORDS, size=rng.integers(1, 5)))
                if t > T0 + 170_000:
                    text += " latecomer"  # a token unknown to the vocabulary
                rows.append((u, int(t), "search", None, text + "!"))
    events = pd.DataFrame(rows, columns=["user_id", "timestamp", "type", "item_id", "query"])
    events["watch_fraction"] = np.where(events["type"] == "watch", 1.0, np.nan)
    return write_small(path, users, items, None, events, with_embeddings=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    path = tmp_path_factory.mktemp("encoder")
    data = _world(path / "data")
    build_examples(data, path / "ex", Split("time", cutoff=T0 + 150_000), SMALL, partitions=2)
    return data, path / "ex"


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_building_and_serving_give_the_same_ids_for_a_user_at_a_moment(
    built: tuple[Path, Path], kind: str
) -> None:
    """Every example equals the request and the stored-profile query of its user at its time."""
    data, out = built
    vocabs = Vocabularies.load(out / "vocabularies.json")
    # Profiles keep everything (wide windows) so every past moment can be served from them.
    profiles = Profiles(build_profiles(data, FeatureConfig(max_history=500, max_searches=500)))
    encoded = EncodedProfiles(profiles, vocabs, SMALL, lambda ids: np.zeros(len(ids)))
    examples = read_examples(out, kind)
    users = pd.read_parquet(data / "users.parquet")
    assert len(examples[F.HISTORY]) > 10
    for i in range(len(examples[F.HISTORY])):
        user = str(users["user_id"].iloc[int(examples[F.USER_INDEX][i])])
        moment = int(examples["timestamp"][i])
        row = profiles.row_of(user)
        assert row is not None
        ctx = profiles.context(user, moment)
        assert ctx is not None
        served = encode_request(ctx, vocabs, SMALL)
        stored = encoded.query(row, moment).features
        for name in F.QUERY_FEATURES:
            want = examples[name][i : i + 1]
            if name == F.EXAMPLE_AGE and kind == "train":
                # Training counts the example's age; a query asked now is 0 days old.
                want = example_age_days(T0 + 150_000, np.array([moment]))
                np.testing.assert_array_equal(examples[name][i : i + 1], want)
                want = np.zeros(1, dtype=np.float32)
            np.testing.assert_array_equal(served[name], want, err_msg=f"{i} {name} request")
            np.testing.assert_array_equal(stored[name], want, err_msg=f"{i} {name} profile")
    # The windows were exercised: full history and search windows, out-of-vocabulary tokens
    # (only searched after the training window).
    assert (examples[F.HISTORY] > 0).all(axis=1).any()
    assert (examples[F.SEARCH_TOKENS] > 0).all(axis=1).any()
    assert (examples[F.SEARCH_TOKENS] == F.OOV).any() == (kind == "eval")

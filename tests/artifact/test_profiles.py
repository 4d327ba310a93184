"""Serving profiles: the latest watches and searches per user, and their serving context."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys.artifact.layout import PROFILES_FILE
from recsys.artifact.profiles import ProfileError, Profiles, build_profiles, write_profiles
from recsys.examples.building import event_log
from recsys.features import contract as F
from recsys.features.context import RequestContext, encode_request
from recsys.features.contract import FeatureConfig
from recsys.features.encoder import encode_queries
from recsys.features.tables import UserTable
from recsys.features.vocab import Vocabularies, Vocabulary
from tests.conftest import T0, small_frames, write_small

CONFIG = FeatureConfig(max_history=3, max_searches=2, max_search_tokens=4, max_last_search_tokens=2)


def _events(rows: list[tuple[str, int, str, str | None, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "timestamp": [r[1] for r in rows],
            "type": [r[2] for r in rows],
            "item_id": [r[3] for r in rows],
            "query": [r[4] for r in rows],
            "watch_fraction": [1.0 if r[2] == "watch" else None for r in rows],
        }
    )


def test_profiles_keep_the_latest_events_oldest_first(tmp_path: Path) -> None:
    events = _events(
        [
            ("u1", T0 + 50, "watch", "v4", None),
            ("u1", T0 + 10, "watch", "v1", None),  # out of time order in the file
            ("u1", T0 + 20, "search", None, "red guitar"),
            ("u1", T0 + 30, "watch", "v2", None),
            ("u1", T0 + 30, "watch", "v3", None),  # same second: file order breaks the tie
            ("u1", T0 + 40, "search", None, "  "),  # blank: not a search
            ("u1", T0 + 60, "search", None, "news"),
            ("u1", T0 + 70, "search", None, "live music"),
            ("u2", T0 + 5, "watch", "v2", None),
        ]
    )
    data = write_small(tmp_path / "d", events=events)
    table = build_profiles(data, CONFIG)
    rows = {r["user_id"]: r for r in table.to_pylist()}
    # u1 watched v1 (10), v2 (30), v3 (30, later in the file), v4 (50): the last 3 are v2 v3 v4
    assert rows["u1"]["watch_ids"] == ["v2", "v3", "v4"]
    assert rows["u1"]["watch_times"] == [T0 + 30, T0 + 30, T0 + 50]
    # non-blank searches: red guitar (20), news (60), live music (70): the last 2
    assert rows["u1"]["searches"] == ["news", "live music"]
    assert rows["u1"]["search_times"] == [T0 + 60, T0 + 70]
    assert (rows["u1"]["country"], rows["u1"]["age"], rows["u1"]["gender"]) == ("US", 25, "f")
    assert rows["u2"]["watch_ids"] == ["v2"]
    assert rows["u2"]["searches"] == []
    # u3 has no events at all but is a user: demographics unknown, lists empty
    assert rows["u3"] == {
        "user_id": "u3",
        "country": None,
        "region": None,
        "age": None,
        "gender": None,
        "watch_ids": [],
        "watch_times": [],
        "searches": [],
        "search_times": [],
    }
    assert table.column("user_id").to_pylist() == ["u1", "u2", "u3"]  # the users table's order

    # As of T0 + 30 (a model's cut-off): only the events strictly before it.
    until = {r["user_id"]: r for r in build_profiles(data, CONFIG, until=T0 + 30).to_pylist()}
    assert until["u1"]["watch_ids"] == ["v1"]
    assert until["u1"]["searches"] == ["red guitar"]
    assert until["u2"]["watch_ids"] == ["v2"]


def test_profiles_round_trip_to_a_request_context(tmp_path: Path) -> None:
    data = write_small(tmp_path / "d")
    write_profiles(build_profiles(data, CONFIG), tmp_path / PROFILES_FILE)
    profiles = Profiles.load(tmp_path / PROFILES_FILE)
    assert len(profiles) == 3
    assert "u1" in profiles
    assert "nobody" not in profiles
    assert profiles.context("nobody") is None
    assert profiles.user_id_at(1) == "u2"
    ctx = profiles.context("u1", request_time=T0 + 1_000)
    assert ctx == RequestContext(
        watch_history=["v1", "v3"],
        watch_times=[T0 + 100, T0 + 4_000],
        searches=["guitar"],
        search_times=[T0 + 200],
        country="US",
        region="NA",
        age=25,
        gender="f",
        request_time=T0 + 1_000,
    )


def _vocabs() -> Vocabularies:
    return Vocabularies(
        items=Vocabulary("items", ["v1", "v2", "v3", "v4"]),
        tokens=Vocabulary("tokens", ["guitar", "news", "tonight"]),
        countries=Vocabulary("countries", ["US", "DE"]),
        regions=Vocabulary("regions", ["NA", "EU"]),
        genders=Vocabulary("genders", ["f", "m"]),
        channels=Vocabulary("channels", ["c1", "c2"]),
        categories=Vocabulary("categories", ["music", "news"]),
    )


@pytest.mark.parametrize("moment", [T0 + 150, T0 + 1_000, T0 + 10_000])
def test_profile_context_equals_the_training_context(tmp_path: Path, moment: int) -> None:
    """A profile served at a moment gives the features training builds for that moment."""
    data = write_small(tmp_path / "d")
    profiles = Profiles(build_profiles(data, FeatureConfig()))
    users, _, _, events = small_frames()
    vocabs = _vocabs()
    table = UserTable.build(users, vocabs)
    for row, user in enumerate(users["user_id"]):
        ctx = profiles.context(user, request_time=moment)
        assert ctx is not None
        served = encode_request(ctx, vocabs, FeatureConfig())
        mine = events[(events["user_id"] == user) & (events["timestamp"] < moment)]
        log_, _, searches = event_log(mine.sort_values("timestamp", kind="stable"), vocabs)
        trained = encode_queries(
            log_,
            (np.array([0]), np.array([len(log_.watch_items)])),
            (np.array([0]), np.array([len(searches)])),
            table.features(np.array([row])),
            np.zeros(1, dtype=np.float32),
            np.array([moment]),
            FeatureConfig(),
        )
        for name in F.QUERY_FEATURES:
            np.testing.assert_array_equal(served[name], trained[name], err_msg=f"{user} {name}")


def test_a_file_that_is_not_profiles_is_refused(tmp_path: Path) -> None:
    data = write_small(tmp_path / "d")
    with pytest.raises(ProfileError, match="format"):
        Profiles.load(data / "users.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ProfileError, match=r"junk\.parquet"):
        Profiles.load(tmp_path / "junk.parquet")


def test_the_exported_artifact_has_profiles(trained_artifact: Path, tiny_world: Path) -> None:
    profiles = Profiles.load(trained_artifact / PROFILES_FILE)
    users = pq.read_table(tiny_world / "users.parquet")
    assert len(profiles) == users.num_rows
    table = pq.read_table(trained_artifact / PROFILES_FILE)
    lengths = [len(w) for w in table.column("watch_ids").to_pylist()]
    assert max(lengths) == FeatureConfig().max_history  # tiny-world users watch more than 50

"""Profiles encoded at load give exactly the features encode_request builds from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.artifact.layout import PROFILES_FILE
from recsys.artifact.profiles import PROFILE_SCHEMA, ProfileError, Profiles
from recsys.features import contract as F
from recsys.features.context import RequestContext, encode_request
from recsys.features.contract import FeatureConfig
from recsys.features.vocab import Vocabularies, Vocabulary
from recsys.inference.profile_features import EncodedProfiles
from recsys.inference.request import watched_before
from recsys.inference.served_catalog import served_catalog
from tests.conftest import T0

CONFIG = FeatureConfig(max_history=3, max_searches=2, max_search_tokens=4, max_last_search_tokens=2)
VOCABS = Vocabularies(
    items=Vocabulary("items", ["v1", "v2", "v3", "v4"]),
    tokens=Vocabulary("tokens", ["guitar", "news", "tonight", "red"]),
    countries=Vocabulary("countries", ["US", "DE"]),
    regions=Vocabulary("regions", ["NA", "EU"]),
    genders=Vocabulary("genders", ["f", "m"]),
    channels=Vocabulary("channels", ["c1"]),
    categories=Vocabulary("categories", ["music"]),
)
CATALOG = {"v1": 0, "v2": 1, "v3": 2, "v9": 3}  # v4 left the catalog; v9 is new since training


def _rows(ids: np.ndarray) -> np.ndarray:
    return np.array([CATALOG.get(i, -1) for i in ids.tolist()], dtype=np.int64)


def _table(rows: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=PROFILE_SCHEMA)


def _user(user_id: str, **fields: object) -> dict[str, object]:
    """A profile row: nothing known (null scalars, empty lists) but ``fields``."""
    row: dict[str, object] = {
        f.name: [] if pa.types.is_list(f.type) else None for f in PROFILE_SCHEMA
    }
    row.update(user_id=user_id, **fields)
    return row


EDGE_CASES = _table(
    [
        _user(
            "u1",
            country="US",
            region="NA",
            age=25,
            gender="f",
            # v7 and v9 are unknown to the model; v2 twice; two watches in the same second
            watch_ids=["v1", "v7", "v2", "v2", "v9", "v3", "v4"],
            watch_times=[T0 + 10, T0 + 20, T0 + 30, T0 + 30, T0 + 40, T0 + 50, T0 + 60],
            # a blank search between others: never a search, at any moment
            searches=["red guitar tonight news", "  ", "News!", "unknownword guitar"],
            search_times=[T0 + 15, T0 + 25, T0 + 35, T0 + 55],
        ),
        # a null id in a list: no video, neither in the history nor counted unknown
        _user("u2", country="XX", age=130, watch_ids=["v4", None], watch_times=[T0 + 5, T0 + 6]),
        _user("u3"),  # no events, no demographics
        _user(
            "u4", gender="m", searches=["\t", None, "news"], search_times=[T0 + 1, T0 + 2, T0 + 3]
        ),
    ]
)
MOMENTS = [T0, T0 + 10, T0 + 11, T0 + 30, T0 + 31, T0 + 45, T0 + 55, T0 + 56, T0 + 10_000]
MOMENTS.append(T0 + 3 * 365 * 86_400)  # gaps over a year: capped


def _check_equal(encoded: EncodedProfiles, profiles: Profiles, user: str, moment: int) -> None:
    row = profiles.row_of(user)
    assert row is not None
    got = encoded.query(row, moment)
    ctx = profiles.context(user, moment)
    assert ctx is not None
    want = encode_request(ctx, encoded._vocabs, encoded._config)
    assert sorted(got.features) == sorted(want)
    for name, values in want.items():
        np.testing.assert_array_equal(got.features[name], values, err_msg=f"{user} {moment} {name}")
        assert got.features[name].dtype == values.dtype, name
    assert got.unknown_videos == ctx.unknown_videos, (user, moment)
    watched = _rows(np.array(watched_before(ctx, moment), dtype=object))
    np.testing.assert_array_equal(np.unique(got.watched_rows), np.unique(watched[watched >= 0]))


@pytest.mark.parametrize("moment", MOMENTS)
def test_every_edge_case_user_equals_encode_request(moment: int) -> None:
    profiles = Profiles(EDGE_CASES)
    encoded = EncodedProfiles(profiles, VOCABS, CONFIG, _rows)
    for user in ("u1", "u2", "u3", "u4"):
        _check_equal(encoded, profiles, user, moment)


def test_explicit_demographics_replace_the_profiles() -> None:
    profiles = Profiles(EDGE_CASES)
    encoded = EncodedProfiles(profiles, VOCABS, CONFIG, _rows)
    override = RequestContext(country="DE", age=40)
    got = encoded.query(0, T0 + 100, override)
    ctx = profiles.context("u1", T0 + 100)
    assert ctx is not None
    ctx.country, ctx.age = "DE", 40
    want = encode_request(ctx, VOCABS, CONFIG)
    for name in F.QUERY_FEATURES:
        np.testing.assert_array_equal(got.features[name], want[name], err_msg=name)
    assert got.features[F.COUNTRY][0] == VOCABS.countries.lookup(["DE"])[0]
    assert got.features[F.REGION][0] == VOCABS.regions.lookup(["NA"])[0]  # kept from the profile


def test_the_trained_artifacts_profiles_equal_encode_request(trained_artifact: Path) -> None:
    """Every tiny-world user, at moments before, inside and after their stored events."""
    profiles = Profiles.load(trained_artifact / PROFILES_FILE)
    vocabs = Vocabularies.load(trained_artifact / "vocabularies.json")
    items = trained_artifact / "items.parquet"
    catalog = served_catalog(pq.read_table(items), items)
    config = FeatureConfig()
    encoded = EncodedProfiles(profiles, vocabs, config, catalog.rows_or_missing)
    times, offsets = profiles.list_column("watch_times")
    all_times = times.to_numpy()
    checked = 0
    for row in range(len(profiles)):
        user = profiles.user_id_at(row)
        mine = all_times[offsets[row] : offsets[row + 1]]
        moments = [int(all_times.max()) + 1]
        if len(mine):
            moments += [int(mine[0]), int(mine[len(mine) // 2]), int(mine[-1])]
        for moment in moments:
            row_of = profiles.row_of(user)
            assert row_of == row
            got = encoded.query(row, moment)
            ctx = profiles.context(user, moment)
            assert ctx is not None
            want = encode_request(ctx, vocabs, config)
            for name in F.QUERY_FEATURES:
                np.testing.assert_array_equal(got.features[name], want[name], err_msg=name)
            assert got.unknown_videos == ctx.unknown_videos
            checked += 1
    assert checked > 3 * len(profiles)  # most users have watches


def test_times_out_of_order_are_refused_naming_the_user() -> None:
    table = _table(
        [
            _user("u1", watch_ids=["v1"], watch_times=[T0 + 50]),
            _user("u2", watch_ids=["v1", "v2"], watch_times=[T0 + 20, T0 + 10]),
        ]
    )
    with pytest.raises(ProfileError, match=r"watch_times of user 'u2' are not oldest first"):
        EncodedProfiles(Profiles(table), VOCABS, CONFIG, _rows)


def test_a_user_may_start_earlier_than_the_previous_user_ended() -> None:
    table = _table(
        [
            _user("u1", searches=["news"], search_times=[T0 + 50]),
            _user("u2", searches=["red", "guitar"], search_times=[T0 + 10, T0 + 20]),
        ]
    )
    encoded = EncodedProfiles(Profiles(table), VOCABS, CONFIG, _rows)
    _check_equal(encoded, Profiles(table), "u2", T0 + 15)

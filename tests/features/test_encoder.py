"""A serving request's demographics equal what the training path (UserTable) encodes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.features.context import RequestContext, request_demographics
from recsys.features.tables import UserTable
from recsys.features.vocab import Vocabularies, Vocabulary


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
    from recsys.features.encoder import tail_window

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

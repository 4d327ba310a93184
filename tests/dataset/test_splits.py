"""Splits hold out watches only: after a cut-off (time) or each user's final one (last)."""

from __future__ import annotations

import pandas as pd
import pytest

from recsys.dataset.splits import Split, holdout_mask


def events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "a", "b", "c", "b"],
            "timestamp": [0, 10, 20, 30, 40, 50, 100],
            "type": ["watch", "watch", "watch", "search", "watch", "watch", "search"],
        }
    )


def test_time_split_holds_out_watches_at_or_after_the_cutoff() -> None:
    mask = holdout_mask(events(), Split("time", cutoff=40))
    # rows 4 (b@40) and 5 (c@50) are watches at/after 40; row 6 is a search
    assert mask.tolist() == [False, False, False, False, True, True, False]


def test_time_split_default_cutoff_is_last_tenth_of_the_period() -> None:
    # period 0..100: cut-off at 90, no watch after it
    assert Split("time").resolve_cutoff(events()["timestamp"].to_numpy()) == 90
    assert not holdout_mask(events(), Split("time")).any()


def test_last_split_holds_out_each_users_final_watch() -> None:
    mask = holdout_mask(events(), Split("last"))
    # a: watches at rows 0, 1 -> row 1; b: rows 2, 4 -> row 4; c has one watch -> none
    assert mask.tolist() == [False, True, False, False, True, False, False]


def test_bad_split_names_the_problem() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        Split("random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eval_fraction"):
        Split("time", eval_fraction=1.5)

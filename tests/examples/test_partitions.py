"""Event partitions: integer rows, every event once, sorted per user, splits, per-user caps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recsys.dataset.io import DatasetError
from recsys.dataset.splits import Split, holdout_mask
from recsys.examples import partitions as P
from tests.conftest import T0, small_frames, write_small


def _ids(frame: pd.DataFrame, column: str) -> pa.Array:
    return pa.array(frame[column].astype(str).tolist(), pa.string())


def _partitioned(data: Path, work: Path, partitions: int) -> tuple[list[P.Events], pd.DataFrame]:
    users, items, _, _ = small_frames()
    paths = P.write_partitions(
        data, work, partitions, _ids(users, "user_id"), _ids(items, "item_id")
    )
    rank = np.argsort(np.argsort(users["user_id"].to_numpy(), kind="stable"))
    return [P.load_events(p, rank) for p in paths.values()], users


@pytest.mark.parametrize("partitions", [1, 3])
def test_every_event_lands_once_in_its_users_partition(
    small_dataset: Path, tmp_path: Path, partitions: int
) -> None:
    parts, users = _partitioned(small_dataset, tmp_path, partitions)
    _, items, _, events = small_frames()
    assert sum(len(ev.kind) for ev in parts) == len(events)
    for ev in parts:
        owners = users["user_id"].to_numpy()[ev.user_row]
        hashed = P.partition_of(owners, partitions)
        assert len(set(hashed.tolist())) == 1  # one partition holds all of a user's events
        # Sorted by user then time; watches carry their video's row, searches -1.
        key = ev.user.astype(np.int64) * 10**12 + ev.timestamp
        assert (np.diff(key) >= 0).all()
        watch = ev.is_watch
        assert (ev.item_row[watch] >= 0).all()
        assert (ev.item_row[~watch] == -1).all()
        assert len(ev.queries) == int(ev.is_search.sum())
    rows = np.concatenate([ev.item_row[ev.is_watch] for ev in parts])
    watched = events.loc[events["type"] == "watch", "item_id"]
    assert sorted(items["item_id"].to_numpy()[rows]) == sorted(watched)


def test_events_of_unknown_users_are_refused(tmp_path: Path) -> None:
    users, items, _, _ = small_frames()
    data = write_small(tmp_path / "d")
    with pytest.raises(DatasetError, match="missing from the users table"):
        P.write_partitions(
            data, tmp_path, 1, _ids(users.iloc[:1], "user_id"), _ids(items, "item_id")
        )


def test_holdout_and_training_mask_match_the_dataframe_split(
    small_dataset: Path, tmp_path: Path
) -> None:
    (ev,), users = _partitioned(small_dataset, tmp_path, 1)
    frame = pd.DataFrame(
        {
            "user_id": users["user_id"].to_numpy()[ev.user_row],
            "timestamp": ev.timestamp,
            "type": np.where(ev.is_watch, "watch", np.where(ev.is_search, "search", "other")),
        }
    )
    for split in (Split("last"), Split("time", cutoff=T0 + 4_000)):
        cutoff = split.cutoff
        held = P.holdout(ev, split, cutoff)
        np.testing.assert_array_equal(held, holdout_mask(frame, split), err_msg=split.name)
        train = P.training_mask(ev, held, split, cutoff)
        assert not (train & held).any()
        if cutoff is not None:
            assert (ev.timestamp[train] < cutoff).all()
    # last: u1's final watch (v3) and u2's final watch (v2); u3 never watched
    last = P.holdout(ev, Split("last"), None)
    assert ev.timestamp[last].tolist() == [T0 + 4_000, T0 + 8_100]


def test_distinct_queries_tokenise_each_text_once() -> None:
    codes, tokens = P.distinct_queries(pa.array(["Red Guitar", None, "red guitar", "Red Guitar"]))
    red_guitar = ["red", "guitar"]
    assert [tokens[c] for c in codes] == [red_guitar, [], red_guitar, red_guitar]
    assert len(tokens) == 3  # "Red Guitar", "" (null) and "red guitar"


def test_cap_per_user_keeps_at_most_cap_rows_per_user_seeded() -> None:
    users = np.repeat(np.arange(5), [1, 4, 10, 3, 7])
    kept = P.cap_per_user(users, 3, np.random.default_rng(0))
    assert (np.diff(kept) > 0).all()  # ascending positions, no repeats
    counts = np.bincount(users[kept], minlength=5)
    assert counts.tolist() == [1, 3, 3, 3, 3]
    again = P.cap_per_user(users, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(kept, again)
    other = P.cap_per_user(users, 3, np.random.default_rng(1))
    assert not np.array_equal(kept, other)  # the subset depends on the seed


def test_rows_gathered_out_of_order_sort_by_their_event_log_position() -> None:
    """What a Beam GroupByKey hands over in any order sorts like the local partition file."""
    # Three users (rank 2, 0, 1), same-second ties within users, one search per tie group.
    tbl = pa.table(
        {
            "user_row": np.array([0, 1, 0, 2, 0, 1, 2, 0], np.int32),
            "timestamp": np.array([5, 5, 5, 7, 5, 3, 7, 1], np.int64),
            "kind": np.array([0, 0, 1, 0, 0, 1, 0, 0], np.int8),
            "item_row": np.array([10, 11, -1, 12, 13, -1, 14, 15], np.int32),
            "query": pa.array([None, None, "a b", None, None, "c", None, None], pa.string()),
        }
    )
    rank = np.array([2, 0, 1])
    expected = P.events_from_table(tbl, rank)  # file order breaks the ties
    # user 0's three events at t=5 are rows 0, 2, 4: items 10, search, 13 in that order.
    assert expected.item_row.tolist() == [-1, 11, 12, 14, 15, 10, -1, 13]
    shuffled = np.random.default_rng(0).permutation(tbl.num_rows)
    gathered = tbl.take(pa.array(shuffled)).append_column(P.POSITION, pa.array(shuffled))
    got = P.events_from_table(gathered, rank)
    for name in ("user", "user_row", "timestamp", "kind", "item_row"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    assert got.queries.to_pylist() == expected.queries.to_pylist() == ["c", "a b"]
    # Without the positions the ties would follow the shuffled order instead.
    unordered = P.events_from_table(tbl.take(pa.array(shuffled)), rank)
    assert unordered.item_row.tolist() != expected.item_row.tolist()

"""Validation names the file, the column and the first bad rows of every problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.dataset.io import DatasetError
from recsys.dataset.validation import read_dataset, validate_dataset
from tests.conftest import T0, small_frames, write_small


def messages(path: Path) -> list[str]:
    return [str(p) for p in validate_dataset(path).problems]


def test_valid_dataset_has_no_problems(small_dataset: Path) -> None:
    report = validate_dataset(small_dataset)
    assert report.ok, report.problems
    assert report.counts == {"users": 3, "items": 4, "events": 6, "watches": 4, "searches": 2}


def test_missing_file_and_folder(small_dataset: Path, tmp_path: Path) -> None:
    (small_dataset / "items.parquet").unlink()
    assert any(m.startswith("items.parquet: missing") for m in messages(small_dataset))
    assert "is not a folder" in messages(tmp_path / "nope")[0]


def test_not_parquet(small_dataset: Path) -> None:
    (small_dataset / "users.parquet").write_text("user_id,country\nu1,US\n")
    assert any(
        "users.parquet: is not a readable Parquet file" in m for m in messages(small_dataset)
    )


def test_missing_column(small_dataset: Path) -> None:
    tbl = pq.read_table(small_dataset / "events.parquet").drop_columns(["type"])
    pq.write_table(tbl, small_dataset / "events.parquet")
    (msg,) = [m for m in messages(small_dataset) if "'type'" in m]
    assert msg.startswith("events.parquet, column 'type': required column is missing")


def test_wrong_type(small_dataset: Path) -> None:
    tbl = pq.read_table(small_dataset / "items.parquet")
    idx = tbl.column_names.index("upload_time")
    as_text = pa.array([str(v) for v in tbl.column("upload_time").to_pylist()])
    pq.write_table(tbl.set_column(idx, "upload_time", as_text), small_dataset / "items.parquet")
    assert (
        "items.parquet, column 'upload_time': has type string, expected integer (int64)"
        in messages(small_dataset)
    )


def test_bad_rows_are_named(tmp_path: Path) -> None:
    users, items, emb, events = small_frames()
    users = pd.concat([users, users.iloc[[1]]], ignore_index=True)  # duplicate u2 at row 3
    users.loc[0, "age"] = 150
    items.loc[1, "duration"] = -5.0
    emb = emb.copy()
    emb[2, 1] = np.nan
    events.loc[0, "user_id"] = "ghost"  # unknown user
    events.loc[2, "item_id"] = None  # a watch without an item
    events.loc[3, "item_id"] = "v404"  # unknown video
    events.loc[5, "query"] = "   "  # a search without text
    events.loc[4, "timestamp"] = 100  # 1970: out of range
    events.loc[1, "type"] = "like"
    path = write_small(tmp_path / "bad", users=users, items=items, emb=emb, events=events)
    got = messages(path)
    expected = [
        "users.parquet, column 'user_id': 1 row repeating an id from an earlier row (row 3)",
        "users.parquet, column 'age': 1 row outside 0..120 (row 0)",
        "items.parquet, column 'duration': 1 row negative or not finite (row 1)",
        "items.parquet, column 'content_embedding': 1 row holding NaN or infinite values (row 2)",
        "events.parquet, column 'user_id': 1 row naming users not in users.parquet (row 0)",
        "events.parquet, column 'item_id': 1 row of watches without an item_id (row 2)",
        "events.parquet, column 'item_id': 1 row naming videos not in items.parquet (row 3)",
        "events.parquet, column 'query': 1 row of searches without query text (row 5)",
        "events.parquet, column 'type': 1 row not one of ('watch', 'search') (row 1)",
    ]
    for line in expected:
        assert line in got, (line, got)
    assert any(m.startswith("events.parquet, column 'timestamp': 1 row outside") for m in got)
    with pytest.raises(DatasetError, match=r"dataset .* is invalid") as err:
        read_dataset(path)
    assert "rows count from 0" in str(err.value)


def test_watch_before_upload_and_bad_fraction(tmp_path: Path) -> None:
    _, _, _, events = small_frames()
    events.loc[4, "timestamp"] = T0 - 10  # v2 was uploaded at T0
    events.loc[3, "watch_fraction"] = 1.5
    path = write_small(tmp_path / "early", events=events)
    got = messages(path)
    early = "1 row of watches before the video's upload_time (row 4)"
    assert f"events.parquet, column 'timestamp': {early}" in got
    assert "events.parquet, column 'watch_fraction': 1 row outside 0..1 or NaN (row 3)" in got


def test_many_bad_rows_are_summarised(tmp_path: Path) -> None:
    *_, events = small_frames()
    many = pd.concat([events] * 5, ignore_index=True)
    many["user_id"] = "ghost"
    path = write_small(tmp_path / "many", events=many)
    # 30 events, all unknown users: the first five rows shown, 25 more counted
    assert (
        "events.parquet, column 'user_id': 30 rows naming users not in users.parquet "
        "(row 0, 1, 2, 3, 4 and 25 more)" in messages(path)
    )


def test_rows_are_counted_across_batches(tmp_path: Path) -> None:
    _, _, _, events = small_frames()
    events.loc[5, "user_id"] = "ghost"
    path = write_small(tmp_path / "batched", events=events)
    report = validate_dataset(path, batch_size=2)  # row 5 is in the third batch
    assert "(row 5)" in str(report.problems[0])


def test_schema_version_mismatch(small_dataset: Path) -> None:
    meta = json.loads((small_dataset / "dataset.json").read_text())
    meta["schema_version"] = 99
    (small_dataset / "dataset.json").write_text(json.dumps(meta))
    assert "dataset.json, column 'schema_version': is 99, this recsys reads 1" in messages(
        small_dataset
    )


def test_embeddings_of_different_lengths(small_dataset: Path) -> None:
    tbl = pq.read_table(small_dataset / "items.parquet")
    ragged = pa.array([[0.1, 0.2], [0.3, 0.4], [0.5], [0.6, 0.7]], type=pa.list_(pa.float32()))
    idx = tbl.column_names.index("content_embedding")
    pq.write_table(
        tbl.set_column(idx, "content_embedding", ragged), small_dataset / "items.parquet"
    )
    expected = "1 row differing in length from the usual 2 (row 2)"
    assert f"items.parquet, column 'content_embedding': {expected}" in messages(small_dataset)

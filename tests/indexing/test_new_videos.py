"""Files of new videos: every problem reported at once with its file, column and rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.indexing.new_videos import ItemsFileError, read_new_items
from tests.conftest import T0, write_small

NOW = T0 + 86_400  # the small dataset's videos were all uploaded before this
CONTENT_DIM = 4  # the small dataset's content embeddings


@pytest.fixture
def items(small_dataset: Path) -> pa.Table:
    """The small dataset's four canonical items rows (content embedding of dimension 4)."""
    return pq.read_table(small_dataset / "items.parquet")


def _write(table: pa.Table, to: Path) -> Path:
    path = to / "new.parquet"
    pq.write_table(table, path)
    return path


def _replace(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def test_a_valid_file_is_read_in_file_order(items: pa.Table, tmp_path: Path) -> None:
    new = read_new_items(_write(items, tmp_path), CONTENT_DIM, now=NOW)
    assert new.ids == ["v1", "v2", "v3", "v4"]
    assert len(new) == 4
    assert new.content_embedding is not None
    np.testing.assert_array_equal(
        new.content_embedding, np.arange(16, dtype=np.float32).reshape(4, 4) / 16
    )
    assert "content_embedding" not in new.table.column_names  # held apart, as float32 [n, 4]
    assert new.table.column_names == [
        "item_id",
        "channel",
        "category",
        "title",
        "upload_time",
        "duration",
    ]


def test_without_a_content_input_the_column_is_ignored_or_may_be_absent(
    items: pa.Table, tmp_path: Path
) -> None:
    assert read_new_items(_write(items, tmp_path), None, now=NOW).content_embedding is None
    bare = items.drop_columns(["content_embedding"])
    assert len(read_new_items(_write(bare, tmp_path), None, now=NOW)) == 4
    with pytest.raises(ItemsFileError, match=r"'content_embedding': required column is missing"):
        read_new_items(_write(bare, tmp_path), CONTENT_DIM, now=NOW)


def test_every_problem_is_reported_at_once_with_file_column_and_rows(
    items: pa.Table, tmp_path: Path
) -> None:
    table = _replace(items, "item_id", pa.array(["v1", "", "v1", "v4"]))
    table = _replace(table, "upload_time", pa.array([T0, -3_000_000_000, T0, NOW + 2 * 86_400]))
    table = _replace(table, "duration", pa.array([1.0, -2.0, float("nan"), 3.0], pa.float32()))
    path = _write(table, tmp_path)
    with pytest.raises(ItemsFileError) as error:
        read_new_items(path, CONTENT_DIM, now=NOW)
    message = str(error.value)
    assert message.startswith(f"new items file {path} is invalid (4 problems; rows count from 0)")
    for line in (
        f"{path}, column 'item_id': 1 row null, empty or holding a NUL character (row 1)",
        f"{path}, column 'item_id': 2 rows holding an id that another row also holds ('v1') "
        "(row 0, 2)",
        f"{path}, column 'upload_time': 2 rows outside",
        "(Unix seconds; year 1900 to tomorrow) (row 1, 3)",
        f"{path}, column 'duration': 2 rows negative or not finite (row 1, 2)",
    ):
        assert line in message


def test_content_embedding_problems_name_their_rows(items: pa.Table, tmp_path: Path) -> None:
    values = [[0.0] * 4, None, [0.0] * 3, [0.0, float("inf"), 0.0, 0.0]]
    path = _write(_replace(items, "content_embedding", pa.array(values)), tmp_path)
    with pytest.raises(ItemsFileError) as error:
        read_new_items(path, CONTENT_DIM, now=NOW)
    message = str(error.value)
    assert "column 'content_embedding': 1 row with null values (row 1)" in message
    assert "1 row of the wrong dimension (lengths [3]; the model expects 4" in message
    assert "(row 2)" in message
    assert "column 'content_embedding': 1 row holding NaN or infinite values (row 3)" in message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop title", r"column 'title': required column is missing"),
        ("text upload_time", r"column 'upload_time': has type string, expected int"),
        ("no rows", "has no rows, so there is nothing to add"),
    ],
)
def test_unusable_columns_or_no_rows_are_refused(
    items: pa.Table, tmp_path: Path, change: str, message: str
) -> None:
    if change == "drop title":
        table = items.drop_columns(["title"])
    elif change == "text upload_time":
        table = _replace(items, "upload_time", pa.array(["1", "2", "3", "4"]))
    else:
        table = items.slice(0, 0)
    path = _write(table, tmp_path)
    with pytest.raises(ItemsFileError, match=message) as error:
        read_new_items(path, CONTENT_DIM, now=NOW)
    assert str(path) in str(error.value)


def test_a_missing_or_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ItemsFileError, match=f"{tmp_path / 'none.parquet'}: no such file"):
        read_new_items(tmp_path / "none.parquet", None)
    text = tmp_path / "items.csv"
    text.write_text("item_id\nv1\n")
    with pytest.raises(ItemsFileError, match=f"{text}: not a readable Parquet file"):
        read_new_items(text, None)


def test_a_video_uploaded_tomorrow_is_accepted(tmp_path: Path) -> None:
    dataset = write_small(tmp_path / "small")
    table = pq.read_table(dataset / "items.parquet")
    table = _replace(table, "upload_time", pa.array([NOW + 86_000] * 4, pa.int64()))
    assert len(read_new_items(_write(table, tmp_path), CONTENT_DIM, now=NOW)) == 4

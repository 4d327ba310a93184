"""Tests for recsys.inference.served_catalog: rows by id, reply fields, category rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.inference.served_catalog import CatalogLoadError, in_sorted, read_served_catalog


def _write(path: Path, ids: list[str | None], titles: list, categories: list) -> Path:
    table = pa.table({"item_id": ids, "title": titles, "category": categories})
    pq.write_table(table, path)
    return path


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "items.parquet",
        ["v0", "v1", "v2", "v3", "v4"],
        ["zero", None, "two", "three", "four"],
        ["music", "news", None, "music", "news"],
    )


def test_rows_follow_the_file_order_and_skip_unknown_ids(catalog_file: Path) -> None:
    catalog = read_served_catalog(catalog_file)
    assert catalog.rows(["v3", "nope", "v0"]).tolist() == [3, 0]
    assert catalog.rows([]).dtype == np.int64
    # -1 marks an id the catalog does not hold, position for position.
    missing = catalog.rows_or_missing(np.array(["v4", "x", "v1"], dtype=object))
    assert missing.tolist() == [4, -1, 1]


def test_describe_gives_reply_fields_with_empty_strings_for_nulls(catalog_file: Path) -> None:
    catalog = read_served_catalog(catalog_file)
    ids, titles, categories = catalog.describe(np.array([1, 2, 3]))
    assert ids == ["v1", "v2", "v3"]
    assert titles == ["", "two", "three"]  # v1's title is null
    assert categories == ["news", "", "music"]  # v2 has no category


def test_category_rows_hold_exactly_each_categorys_videos(catalog_file: Path) -> None:
    catalog = read_served_catalog(catalog_file)
    assert {k: v.tolist() for k, v in catalog.category_rows.items()} == {
        "music": [0, 3],
        "news": [1, 4],
    }
    for name, rows in catalog.category_rows.items():
        code = catalog.category_names.index(name)
        assert (catalog.category_code[rows] == code).all()
    assert catalog.category_code[2] == -1
    assert catalog.category_name(-1) == ""


@pytest.mark.parametrize("ids", [["a", "b", "a"], ["a", None, "b"]])
def test_duplicate_or_null_ids_are_refused_naming_the_file(
    tmp_path: Path, ids: list[str | None]
) -> None:
    path = _write(tmp_path / "items.parquet", ids, ["t"] * 3, ["c"] * 3)
    with pytest.raises(CatalogLoadError, match=r"items\.parquet: item_id has nulls or duplicates"):
        read_served_catalog(path)


def test_an_unreadable_file_is_a_load_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(CatalogLoadError, match=r"items\.parquet: cannot read the catalog"):
        read_served_catalog(path)
    missing_column = tmp_path / "other.parquet"
    pq.write_table(pa.table({"item_id": ["a"]}), missing_column)
    with pytest.raises(CatalogLoadError, match=r"other\.parquet"):
        read_served_catalog(missing_column)


def test_in_sorted_matches_numpy_isin() -> None:
    rng = np.random.default_rng(0)
    for size in (0, 1, 7, 50):
        pool = np.unique(rng.integers(0, 100, size=size))
        values = rng.integers(-5, 105, size=40)
        assert (in_sorted(values, pool) == np.isin(values, pool)).all()

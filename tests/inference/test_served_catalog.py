"""Tests for recsys.inference.served_catalog: rows by id, reply fields, category rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recsys.inference.served_catalog import (
    CatalogLoadError,
    ServedCatalog,
    in_sorted,
    served_catalog,
)


def _catalog(ids: list[str | None], titles: list, categories: list) -> ServedCatalog:
    table = pa.table({"item_id": ids, "title": titles, "category": categories})
    return served_catalog(table, "v0001/items.parquet")


@pytest.fixture
def catalog() -> ServedCatalog:
    return _catalog(
        ["v0", "v1", "v2", "v3", "v4"],
        ["zero", None, "two", "three", "four"],
        ["music", "news", None, "music", "news"],
    )


def test_rows_follow_the_table_order_and_skip_unknown_ids(catalog: ServedCatalog) -> None:
    assert catalog.rows(["v3", "nope", "v0"]).tolist() == [3, 0]
    assert catalog.rows([]).dtype == np.int64
    # -1 marks an id the catalog does not hold, position for position.
    missing = catalog.rows_or_missing(np.array(["v4", "x", "v1"], dtype=object))
    assert missing.tolist() == [4, -1, 1]


def test_describe_gives_reply_fields_with_empty_strings_for_nulls(catalog: ServedCatalog) -> None:
    ids, titles, categories = catalog.describe(np.array([1, 2, 3]))
    assert ids == ["v1", "v2", "v3"]
    assert titles == ["", "two", "three"]  # v1's title is null
    assert categories == ["news", "", "music"]  # v2 has no category


def test_category_rows_hold_exactly_each_categorys_videos(catalog: ServedCatalog) -> None:
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
def test_duplicate_or_null_ids_are_refused_naming_the_source(ids: list[str | None]) -> None:
    with pytest.raises(CatalogLoadError, match=r"v0001/items\.parquet: item_id has nulls or dup"):
        _catalog(ids, ["t"] * 3, ["c"] * 3)


def test_in_sorted_matches_numpy_isin() -> None:
    rng = np.random.default_rng(0)
    for size in (0, 1, 7, 50):
        pool = np.unique(rng.integers(0, 100, size=size))
        values = rng.integers(-5, 105, size=40)
        assert (in_sorted(values, pool) == np.isin(values, pool)).all()

"""Tests for recsys.artifact.catalog: a version's items and embeddings read and written as one."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.artifact.catalog import Catalog, CatalogError, read_catalog, write_catalog
from recsys.artifact.layout import EMBEDDINGS_FILE, ITEM_COLUMNS, ITEMS_FILE
from recsys.artifact.reader import ArtifactVersion, open_version


@pytest.fixture
def version(trained_artifact: Path, tmp_path: Path) -> ArtifactVersion:
    """The trained version, copied so that its files can be broken (opened unverified)."""
    copy = tmp_path / "v0001"
    shutil.copytree(trained_artifact, copy)
    return open_version(copy, verify=False)


def test_read_catalog_reads_all_or_the_asked_columns(version: ArtifactVersion) -> None:
    everything = read_catalog(version)
    assert tuple(everything.items.column_names) == ITEM_COLUMNS
    assert everything.embeddings.shape == (everything.items.num_rows, 32)
    some = read_catalog(version, columns=("title",))
    assert some.items.column_names == ["item_id", "title"]  # item_id always comes along
    assert some.ids == everything.ids
    np.testing.assert_array_equal(some.embeddings, everything.embeddings)


def test_write_then_read_round_trips(version: ArtifactVersion, tmp_path: Path) -> None:
    catalog = read_catalog(version)
    keep = np.arange(len(catalog.ids)) % 3 == 0
    smaller = Catalog(catalog.items.filter(keep), catalog.embeddings[keep])
    write_catalog(smaller, version.path)
    again = read_catalog(version)
    assert again.ids == smaller.ids
    np.testing.assert_array_equal(again.embeddings, smaller.embeddings)


def test_writing_misaligned_rows_is_refused(version: ArtifactVersion, tmp_path: Path) -> None:
    catalog = read_catalog(version)
    with pytest.raises(CatalogError, match="items but"):
        write_catalog(Catalog(catalog.items, catalog.embeddings[:-1]), tmp_path)
    assert not (tmp_path / ITEMS_FILE).exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / ITEMS_FILE).write_bytes(b"not parquet"), "cannot read the catalog"),
        (lambda p: (p / EMBEDDINGS_FILE).write_bytes(b"not numpy"), "cannot read"),
        (
            lambda p: np.save(p / EMBEDDINGS_FILE, np.zeros((3, 32), np.float64)),
            r"float64 \[3, 32\], expected float32",
        ),
        (
            lambda p: pq.write_table(pa.table({"title": ["a"]}), p / ITEMS_FILE),
            "has no item_id column",
        ),
    ],
)
def test_a_broken_catalog_is_refused_naming_the_file(version, damage, message: str) -> None:
    damage(version.path)
    with pytest.raises(CatalogError, match=message) as raised:
        read_catalog(version)
    assert str(version.path) in str(raised.value)

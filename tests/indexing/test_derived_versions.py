"""An artifact version's catalog and index read and checked, and versions derived from it."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys.artifact.catalog import Catalog, CatalogError, read_catalog, write_catalog
from recsys.artifact.layout import EMBEDDINGS_FILE, INDEX_DIR, ITEM_COLUMNS, ITEMS_FILE
from recsys.artifact.reader import open_version
from recsys.artifact.versions import read_manifest, resolve_version, verify_artifact
from recsys.index.exact import ExactIndex
from recsys.indexing.derived_versions import (
    ArtifactIndexError,
    derive_version,
    describe_index,
    index_entry,
    load_version_index,
    save_index,
)


@pytest.fixture
def model(trained_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the trained model folder (v0001, exact index, LATEST)."""
    model = tmp_path / "artifacts" / trained_artifact.parent.name
    shutil.copytree(trained_artifact.parent, model, ignore=shutil.ignore_patterns(".work"))
    return model


def test_read_catalog_gives_row_aligned_items_and_embeddings(trained_artifact: Path) -> None:
    version = open_version(trained_artifact)
    catalog = read_catalog(version)
    assert tuple(catalog.items.column_names) == ITEM_COLUMNS
    assert catalog.embeddings.shape == (catalog.items.num_rows, version.settings.embedding_dim)
    assert catalog.embeddings.dtype == np.float32
    assert catalog.ids == [str(i) for i in catalog.items.column("item_id").to_pylist()]
    index = load_version_index(version)
    assert len(index) == len(catalog.ids)
    # The index holds the catalog's embeddings: each item is its own nearest neighbour.
    found = index.search_batch(catalog.embeddings[:20], 1).ids
    assert found.ravel().tolist() == catalog.ids[:20]


def _derive_with(model: Path, write: Callable[[Path], None]) -> Path:
    """A version derived from v0001 by `write(folder)`, its manifest's index entry a stub."""
    return derive_version(open_version(model / "v0001"), {"kind": "test"}, write)


def test_derive_version_copies_changes_and_moves_latest(model: Path) -> None:
    base = open_version(model / "v0001")
    catalog = read_catalog(base)
    keep = np.arange(len(catalog.ids)) % 2 == 0
    smaller = Catalog(catalog.items.filter(keep), catalog.embeddings[keep])
    index = ExactIndex.build(smaller.ids, smaller.embeddings)

    def write(folder: Path) -> None:
        write_catalog(smaller, folder)
        save_index(index, folder)

    derived = derive_version(base, index_entry(index, {"note": "kept"}), write)
    assert derived == model / "v0002"
    assert resolve_version(model) == derived
    manifest = verify_artifact(derived)
    assert manifest.parent == "v0001"
    assert manifest.index == {
        "note": "kept",
        "config": index.config.to_dict(),
        "kind": "exact",
        "size": len(smaller.ids),
    }
    opened = open_version(derived)
    assert read_catalog(opened).ids == smaller.ids
    assert len(load_version_index(opened)) == len(smaller.ids)
    # Files the writer left alone are copies of the base's, the base is untouched.
    base_files = verify_artifact(base.path).files
    assert manifest.files["vocabularies.json"] == base_files["vocabularies.json"]
    assert manifest.files[ITEMS_FILE] != base_files[ITEMS_FILE]
    assert pq.read_metadata(base.path / ITEMS_FILE).num_rows == len(catalog.ids)


def test_deriving_from_an_older_version_warns_that_later_changes_are_left_out(
    model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = open_version(model / "v0001")
    second = derive_version(base, {}, lambda folder: None)
    with caplog.at_level(logging.WARNING, logger="recsys.indexing.derived_versions"):
        third = derive_version(base, {}, lambda folder: None)
    assert f"while LATEST is {second.name}" in caplog.text
    assert read_manifest(third).parent == "v0001"
    assert resolve_version(model) == third


def test_a_failed_write_derives_nothing(model: Path) -> None:
    def fail(folder: Path) -> None:
        (folder / ITEMS_FILE).unlink()
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        _derive_with(model, fail)
    assert sorted(p.name for p in model.glob("v*")) == ["v0001"]
    assert resolve_version(model) == model / "v0001"


def test_read_catalog_refuses_misaligned_embeddings(model: Path) -> None:
    def misalign(folder: Path) -> None:
        embeddings = np.load(folder / EMBEDDINGS_FILE)
        np.save(folder / EMBEDDINGS_FILE, embeddings[:-1], allow_pickle=False)

    derived = open_version(_derive_with(model, misalign))
    rows = pq.read_metadata(derived.path / ITEMS_FILE).num_rows
    with pytest.raises(CatalogError, match=rf"expected float32 \[{rows}, 32\]"):
        read_catalog(derived)


def test_describe_index_names_the_version_its_parent_and_index(model: Path) -> None:
    info = describe_index(model)
    assert info == {
        "version": str(model / "v0001"),
        "parent": None,
        "index": read_manifest(model / "v0001").index,
    }
    assert info["index"]["kind"] == "exact"
    derived = _derive_with(model, lambda folder: shutil.rmtree(folder / INDEX_DIR))
    assert describe_index(derived) == {
        "version": str(derived),
        "parent": "v0001",
        "index": {"kind": "test"},
    }
    with pytest.raises(ArtifactIndexError, match="neither an artifact version"):
        describe_index(model.parent)

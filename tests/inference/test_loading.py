"""Reading a served version's files into their parts, each checked against the others."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from recsys.artifact.layout import (
    CONFIG_FILE,
    EMBEDDINGS_FILE,
    INDEX_DIR,
    ITEMS_FILE,
    PROFILES_FILE,
)
from recsys.artifact.settings import read_settings
from recsys.artifact.versions import read_manifest, write_version
from recsys.index.exact import ExactIndex
from recsys.inference.loading import read_model_files
from recsys.inference.request import ModelLoadError, RecommenderOptions

OPTIONS = RecommenderOptions(tower_runtime="savedmodel")


def test_every_part_is_read_and_consistent(trained_artifact: Path) -> None:
    files = read_model_files(trained_artifact.parent, OPTIONS)  # a model folder: LATEST
    assert files.path == trained_artifact
    assert files.manifest == read_manifest(trained_artifact)
    num_items, dim = files.embeddings.shape
    assert dim == 32
    assert files.embeddings.dtype == np.float32
    assert len(files.catalog.row_of) == len(files.index) == num_items
    np.testing.assert_array_equal(files.embeddings, np.load(trained_artifact / EMBEDDINGS_FILE))
    assert files.profiles is not None
    assert len(files.profiles) > 0
    assert files.vocabs.sizes() == read_settings(trained_artifact / CONFIG_FILE).vocabulary_sizes
    assert files.tower.runtime == "savedmodel"


def _signed_variant(trained_artifact: Path, to: Path, change: Callable[[Path], None]) -> Path:
    """A copy of the session version changed by `change(folder)` and re-signed."""
    model = to / "artifacts" / "tiny"
    shutil.copytree(trained_artifact.parent, model, ignore=shutil.ignore_patterns(".work"))
    manifest = read_manifest(model / trained_artifact.name)
    with write_version(model.parent, "tiny", manifest, base=model / trained_artifact.name) as f:
        change(f)
    return model / manifest.version


def test_a_version_without_profiles_loads_and_says_so(
    trained_artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    version = _signed_variant(trained_artifact, tmp_path, lambda f: (f / PROFILES_FILE).unlink())
    with caplog.at_level(logging.WARNING, logger="recsys.inference.loading"):
        files = read_model_files(version, OPTIONS)
    assert files.profiles is None
    assert f"no {PROFILES_FILE}; requests need an explicit context" in caplog.text


def _fewer_embeddings(folder: Path) -> None:
    embeddings = np.load(folder / EMBEDDINGS_FILE)
    np.save(folder / EMBEDDINGS_FILE, embeddings[:-1], allow_pickle=False)


def _smaller_index(folder: Path) -> None:
    embeddings = np.load(folder / EMBEDDINGS_FILE)
    shutil.rmtree(folder / INDEX_DIR)
    ExactIndex.build([f"x{i}" for i in range(10)], embeddings[:10]).save(folder / INDEX_DIR)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_fewer_embeddings, rf"{EMBEDDINGS_FILE}: float32 \[1499, 32\], expected .*{ITEMS_FILE}"),
        (_smaller_index, rf"{INDEX_DIR}: 10 live items, {ITEMS_FILE} has 1500"),
    ],
)
def test_parts_that_disagree_are_refused_naming_the_file(
    trained_artifact: Path, tmp_path: Path, change: Callable[[Path], None], message: str
) -> None:
    version = _signed_variant(trained_artifact, tmp_path, change)
    with pytest.raises(ModelLoadError, match=message):
        read_model_files(version, OPTIONS)

"""The version layout: what the export writes is what the layout names, and every reader of a
version refuses one whose files do not match its manifest."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recsys.artifact import layout
from recsys.artifact.reader import open_version
from recsys.artifact.settings import read_settings
from recsys.artifact.versions import ArtifactError, read_manifest
from recsys.evaluation.artifact_model import ArtifactModel
from recsys.indexing.derived_versions import ArtifactIndexError, load_artifact_index
from recsys.indexing.operations import build_artifact_index, remove_items
from recsys.inference.recommender import Recommender
from recsys.inference.request import ModelLoadError


def test_an_exported_version_holds_exactly_the_files_the_layout_names(
    trained_artifact: Path,
) -> None:
    entries = {path.name for path in trained_artifact.iterdir()}
    # The tiny model has every optional part too: an index, profiles and a Lite query tower.
    assert entries == layout.REQUIRED_ENTRIES | layout.OPTIONAL_ENTRIES
    assert not layout.REQUIRED_ENTRIES & layout.OPTIONAL_ENTRIES
    assert (trained_artifact.parent / layout.LATEST).read_text().strip() == trained_artifact.name
    # Every file but the manifest is checksummed, and lies under a name of the layout.
    files = read_manifest(trained_artifact).files
    assert {name.split("/")[0] for name in files} == entries - {layout.MANIFEST}
    columns = pq.read_schema(trained_artifact / layout.ITEMS_FILE).names
    assert tuple(columns) == layout.ITEM_COLUMNS


def test_config_json_is_written_as_the_reader_reads_it(trained_artifact: Path) -> None:
    path = trained_artifact / layout.CONFIG_FILE
    settings = read_settings(path)
    assert settings.to_json() == path.read_text()
    assert settings.embedding_dim == 32  # TINY_TRAIN_OVERRIDES' last layer
    assert settings.content_dim is not None
    assert settings.content_dim > 0
    assert set(settings.vocabulary_sizes) >= {"items", "tokens"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"embedding_dim": 0}, "embedding_dim must be a positive int: 0"),
        ({"embedding_dim": True}, "embedding_dim must be a positive int: True"),
        ({"content_dim": "16"}, "content_dim must be a positive int: '16'"),
        ({"reference_time": 1.5}, r"reference_time must be Unix seconds \(int\): 1.5"),
        ({"config": {"no_such_section": {}}}, "not a valid model config"),
        ({"config": None}, "not a valid model config"),
    ],
)
def test_a_bad_config_json_is_refused_naming_the_field(
    trained_artifact: Path, tmp_path: Path, change: dict[str, object], message: str
) -> None:
    raw = json.loads((trained_artifact / layout.CONFIG_FILE).read_text())
    path = tmp_path / layout.CONFIG_FILE
    path.write_text(json.dumps({**raw, **change}))
    with pytest.raises(ArtifactError, match=message) as error:
        read_settings(path)
    assert str(path) in str(error.value)
    path.write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="expected a JSON object"):
        read_settings(path)


def test_open_version_resolves_a_model_folder_and_names_a_missing_manifest(
    trained_artifact: Path, tmp_path: Path
) -> None:
    version = open_version(trained_artifact.parent)
    assert version.path == trained_artifact
    assert version.label == f"tiny/{trained_artifact.name}"
    assert version.settings == read_settings(trained_artifact / layout.CONFIG_FILE)
    with pytest.raises(ArtifactError, match=r"manifest\.json: missing"):
        open_version(tmp_path)


def _copy(trained_artifact: Path, to: Path) -> Path:
    """A writable copy of the session artifact's model folder; its version folder."""
    model = to / "artifacts" / trained_artifact.parent.name
    shutil.copytree(trained_artifact.parent, model, ignore=shutil.ignore_patterns(".work"))
    return model / trained_artifact.name


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# Each reader of a version, called as its users call it.
READERS: dict[str, tuple[Callable[[Path], object], type[Exception]]] = {
    "open_version": (open_version, ArtifactError),
    "serving": (Recommender.load, ModelLoadError),
    "evaluation": (ArtifactModel, ArtifactError),
    "index load": (load_artifact_index, ArtifactIndexError),
    "index build": (build_artifact_index, ArtifactIndexError),
    "index remove": (lambda version: remove_items(version, ["v0000001"]), ArtifactIndexError),
}


@pytest.mark.parametrize(
    "name",
    [
        layout.CONFIG_FILE,
        layout.VOCAB_FILE,
        layout.ITEMS_FILE,
        layout.EMBEDDINGS_FILE,
        layout.PROFILES_FILE,
        f"{layout.QUERY_MODEL_DIR}/saved_model.pb",
        f"{layout.CANDIDATE_MODEL_DIR}/saved_model.pb",
        f"{layout.INDEX_DIR}/embeddings.npy",
    ],
)
def test_every_reader_refuses_a_corrupt_file(
    trained_artifact: Path, tmp_path: Path, name: str
) -> None:
    version = _copy(trained_artifact, tmp_path)
    _corrupt(version / name)
    for reader, (read, error) in READERS.items():
        with pytest.raises(error, match=rf"{name}: sha256 does not match the manifest"):
            read(version)
        assert sorted(p.name for p in version.parent.glob("v*")) == [version.name], reader


def test_verify_false_trusts_a_caller_that_has_just_verified(
    trained_artifact: Path, tmp_path: Path
) -> None:
    version = _copy(trained_artifact, tmp_path)
    (version / layout.ITEMS_FILE).write_bytes((version / layout.ITEMS_FILE).read_bytes() + b"x")
    with pytest.raises(ArtifactError, match="sha256"):
        open_version(version)
    assert open_version(version, verify=False).path == version  # no file is hashed

"""Artifact-level index operations on a really trained tiny model: real TensorFlow, real ScaNN."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recsys.artifact.versions import read_manifest, resolve_version, verify_artifact, write_version
from recsys.index.base import IndexConfig
from recsys.index.exact import ExactIndex
from recsys.index.recall import recall_at_k
from recsys.index.scann_index import ScannIndex
from recsys.indexing.derived_versions import ArtifactIndexError, describe_index, load_artifact_index
from recsys.indexing.new_videos import ItemsFileError
from recsys.indexing.operations import add_items, build_artifact_index, read_id_file, remove_items
from recsys.indexing.tuning import (
    TuningNotApplicableError,
    profile_queries,
    proxy_queries,
    tune_artifact_index,
)

SCANN_CONFIG = IndexConfig(kind="scann", num_leaves=30)


def _copy_model(trained_artifact: Path, to: Path) -> Path:
    """A writable copy of the read-only session artifact's model folder."""
    model = to / "artifacts" / trained_artifact.parent.name
    shutil.copytree(trained_artifact.parent, model, ignore=shutil.ignore_patterns(".work"))
    return model


def _versions(model: Path) -> list[str]:
    return sorted(p.name for p in model.glob("v*"))


def _catalog(version: Path) -> tuple[list[str], np.ndarray]:
    ids = pq.read_table(version / "items.parquet").column("item_id").to_pylist()
    return ids, np.load(version / "item_embeddings.npy", allow_pickle=False)


def _world_items(tiny_world: Path, rows: list[int], ids: list[str]) -> pa.Table:
    """Rows of the world's canonical items (all features, content embedding) with new ids."""
    table = pq.read_table(tiny_world / "items.parquet").take(rows)
    return table.set_column(0, "item_id", pa.array(ids, pa.string()))


@pytest.fixture
def model(trained_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the trained model folder (v0001, exact index) for one test."""
    return _copy_model(trained_artifact, tmp_path)


@pytest.fixture(scope="module")
def scann_version(trained_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A version with a ScaNN tree index, derived once; tests derive from it by its path."""
    model = _copy_model(trained_artifact, tmp_path_factory.mktemp("scann"))
    return build_artifact_index(model / "v0001", SCANN_CONFIG)


def test_build_writes_new_verified_versions_and_leaves_the_old_one_alone(model: Path) -> None:
    v1 = model / "v0001"
    old_files = verify_artifact(v1).files

    exact_version = build_artifact_index(model)  # model folder: uses LATEST (v0001)
    manifest = verify_artifact(exact_version)
    assert exact_version.name == "v0002"
    assert manifest.parent == "v0001"
    assert manifest.index["kind"] == "exact"  # 1500 items < 20k: exact by corpus size
    assert manifest.index["size"] == 1500
    assert resolve_version(model) == exact_version  # LATEST moved

    scann = build_artifact_index(v1, SCANN_CONFIG)
    manifest = verify_artifact(scann)
    assert (manifest.parent, manifest.index["kind"], manifest.index["num_leaves"]) == (
        "v0001",
        "scann",
        30,
    )
    assert resolve_version(model) == scann
    index = load_artifact_index(scann)
    assert isinstance(index, ScannIndex)
    assert len(index) == 1500
    assert not any(name.endswith(".pkl") for name in manifest.files)  # no pickle anywhere
    # ScaNN's own files replaced the exact index's files entirely.
    assert "index/scann/dataset.npy" in manifest.files
    assert "index/embeddings.npy" not in manifest.files

    assert verify_artifact(v1).files == old_files  # the old version is untouched
    assert isinstance(load_artifact_index(v1), ExactIndex)


def test_tune_records_a_recall_meeting_the_target(scann_version: Path) -> None:
    tuned, result = tune_artifact_index(
        scann_version, k=10, target_recall=0.9, num_queries=200, seed=0, queries="proxies"
    )
    manifest = verify_artifact(tuned)
    tuning = manifest.index["tuning"]
    assert tuning["query_source"] == "proxies"
    assert manifest.parent == scann_version.name
    assert tuning["met_target"] is True
    assert tuning["recall"] >= 0.9
    assert tuning["latency_p50_ms"] > 0
    assert (tuning["leaves_to_search"], tuning["reorder_k"]) == (
        result.leaves_to_search,
        result.reorder_k,
    )
    index = load_artifact_index(tuned)
    assert index.config.num_leaves_to_search == result.leaves_to_search  # saved as defaults
    assert manifest.index["config"] == index.config.to_dict()
    # Fresh proxy queries, searched with the saved defaults, still meet the target (less
    # a margin for 200 queries).
    ids, embeddings = _catalog(tuned)
    queries = proxy_queries(embeddings, 200, noise=0.75, seed=1)
    exact = ExactIndex.build(ids, embeddings).search_batch(queries, 10).ids
    assert recall_at_k(index.search_batch(queries, 10).ids, exact) >= 0.85


def test_tune_on_profile_queries_meets_the_target_on_the_models_own_queries(
    scann_version: Path,
) -> None:
    # "auto": the version has stored profiles and a query tower, so their queries are used
    tuned, result = tune_artifact_index(scann_version, k=10, target_recall=0.9, num_queries=150)
    tuning = verify_artifact(tuned).index["tuning"]
    assert tuning["query_source"] == "profiles"
    assert "stored profiles" in tuning["queries"]
    assert tuning["recall"] >= 0.9
    # Other users' queries, searched with the saved defaults, meet it too (less a margin).
    index = load_artifact_index(tuned)
    assert index.config.num_leaves_to_search == result.leaves_to_search
    ids, embeddings = _catalog(tuned)
    queries = profile_queries(tuned, 150, seed=1)
    assert queries.shape == (150, embeddings.shape[1])
    exact = ExactIndex.build(ids, embeddings).search_batch(queries, 10).ids
    assert recall_at_k(index.search_batch(queries, 10).ids, exact) >= 0.85


def test_build_with_tune_saves_a_setting_tuned_on_profile_queries(model: Path) -> None:
    built = build_artifact_index(model / "v0001", SCANN_CONFIG, tune=True, seed=3)
    manifest = verify_artifact(built)
    tuning = manifest.index["tuning"]
    assert (tuning["query_source"], tuning["k"], tuning["seed"]) == ("profiles", 100, 3)
    assert tuning["met_target"]
    assert tuning["recall"] >= 0.95
    index = load_artifact_index(built)
    assert (index.config.num_leaves_to_search, index.config.reorder_k) == (
        tuning["leaves_to_search"],
        tuning["reorder_k"],
    )
    # Other users' queries, searched with the saved defaults, meet it too (less a margin).
    ids, embeddings = _catalog(built)
    queries = profile_queries(built, 150, seed=11)
    exact = ExactIndex.build(ids, embeddings).search_batch(queries, 100).ids
    assert recall_at_k(index.search_batch(queries, 100).ids, exact) >= 0.9
    # An exact index has nothing to tune.
    assert "tuning" not in verify_artifact(build_artifact_index(built, tune=True)).index


def test_index_build_command_tunes_unless_given_a_setting(model: Path) -> None:
    from recsys.cli.main import main

    v1 = str(model / "v0001")
    common = ["index", "build", "--artifact", v1, "--kind", "scann", "--num-leaves", "30"]
    assert main([*common, "--reorder-k", "120"]) == 0
    kept = verify_artifact(resolve_version(model)).index
    assert "tuning" not in kept
    assert kept["config"]["reorder_k"] == 120  # the setting asked for
    assert main([*common, "--no-tune"]) == 0
    assert "tuning" not in verify_artifact(resolve_version(model)).index
    assert main(common) == 0
    assert verify_artifact(resolve_version(model)).index["tuning"]["query_source"] == "profiles"


def test_tune_on_an_exact_index_is_not_applicable_and_writes_nothing(model: Path) -> None:
    with pytest.raises(TuningNotApplicableError, match=r"not applicable.*exact index"):
        tune_artifact_index(model, k=10)
    assert _versions(model) == ["v0001"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be a positive integer: got 0"),
        ({"k": -5}, "k must be a positive integer: got -5"),
        ({"num_queries": 0}, "num_queries must be a positive integer"),
        ({"target_recall": 1.5}, r"target_recall must be in \(0, 1\]: got 1.5"),
        ({"queries": "users"}, r"queries must be one of \('auto', 'profiles', 'proxies'\)"),
    ],
)
def test_tune_rejects_bad_arguments(
    scann_version: Path, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tune_artifact_index(scann_version, **kwargs)  # type: ignore[arg-type]


def _candidate_model_output(version: Path, table: pa.Table) -> np.ndarray:
    """The candidate SavedModel's raw signature on `table`'s rows, computed independently."""
    import tensorflow as tf

    settings = json.loads((version / "config.json").read_text())
    ages = np.maximum(settings["reference_time"] - table.column("upload_time").to_numpy(), 0)
    content = np.stack(table.column("content_embedding").to_numpy(zero_copy_only=False))
    loaded = tf.saved_model.load(str(version / "candidate_model"))

    def strings(name: str) -> tf.Tensor:
        return tf.constant(pc.fill_null(table.column(name), "").to_pylist())

    out = loaded.signatures["serving_default"](
        item_id=strings("item_id"),
        channel=strings("channel"),
        category=strings("category"),
        title=strings("title"),
        upload_age=tf.constant(ages / 86_400.0, tf.float32),
        content_embedding=tf.constant(content.astype(np.float32)),
    )
    return np.asarray(out["candidate_embedding"].numpy())


def test_add_makes_a_new_video_searchable_without_a_rebuild(
    scann_version: Path, tiny_world: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = json.loads((scann_version / "config.json").read_text())
    old_ids, old_embeddings = _catalog(scann_version)
    # A fresh upload (an hour after the reference time: upload age 0) copying the features
    # of the catalog's first video, and a re-upload of an existing id with another's features.
    new = _world_items(tiny_world, [0, 7], ["fresh-0001", old_ids[3]])
    new = new.set_column(
        new.schema.get_field_index("upload_time"),
        "upload_time",
        pa.array([settings["reference_time"] + 3600, 1_735_700_000], pa.int64()),
    )
    pq.write_table(new, tmp_path / "new.parquet")

    with caplog.at_level(logging.INFO, logger="recsys.indexing.operations"):
        added = add_items(scann_version, tmp_path / "new.parquet")
    assert "replace" in caplog.text
    assert old_ids[3] in caplog.text

    manifest = verify_artifact(added)
    ids, embeddings = _catalog(added)
    assert len(ids) == 1501  # 1500 + 1 new; the existing id is replaced, not duplicated
    assert embeddings.shape == (1501, 32)
    assert ids[-2:] == ["fresh-0001", old_ids[3]]
    assert ids.count(old_ids[3]) == 1
    expected = _candidate_model_output(added, new)
    np.testing.assert_allclose(embeddings[-2:], expected, atol=1e-6)
    # Every other row keeps its id and its embedding.
    old_row = {item_id: row for row, item_id in enumerate(old_ids)}
    kept = [old_row[item_id] for item_id in ids[:-2]]
    np.testing.assert_array_equal(embeddings[:-2], old_embeddings[kept])

    index = load_artifact_index(added)
    assert len(index) == 1501
    for row, item_id in ((-2, "fresh-0001"), (-1, old_ids[3])):
        found = index.search(embeddings[row], 10)
        assert item_id in found.ids.tolist()
        # a unit-norm query equal to the item's embedding scores 1 with it, the maximum
        assert found.scores[found.ids.tolist().index(item_id)] == pytest.approx(1.0, abs=1e-5)

    # No rebuild: ScaNN's files and the main ids are byte for byte those of the parent.
    parent_files = read_manifest(scann_version).files
    main_part = [name for name in parent_files if name.startswith("index/scann/")]
    assert main_part
    for name in [*main_part, "index/ids.npy"]:
        assert manifest.files[name] == parent_files[name], name
    assert manifest.index["pending"] == 3  # 2 in the delta + 1 tombstone of the replaced row
    assert manifest.index["last_update"] == {
        "op": "add",
        "added": 1,
        "replaced": 1,
        "source": str(tmp_path / "new.parquet"),
    }

    # An added (delta) video can be removed again.
    removed = remove_items(added, ["fresh-0001"])
    assert "fresh-0001" not in load_artifact_index(removed).search(embeddings[-2], 50).ids


def test_add_into_an_exact_index_moves_latest(
    model: Path, tiny_world: Path, tmp_path: Path
) -> None:
    pq.write_table(_world_items(tiny_world, [5], ["brand-new"]), tmp_path / "one.parquet")
    added = add_items(model, tmp_path / "one.parquet")
    assert resolve_version(model) == added
    assert read_manifest(added).parent == "v0001"
    ids, embeddings = _catalog(added)
    assert ids[-1] == "brand-new"
    assert "brand-new" in load_artifact_index(added).search(embeddings[-1], 5).ids


def test_removed_items_never_come_back_and_rows_stay_aligned(scann_version: Path) -> None:
    old_ids, old_embeddings = _catalog(scann_version)
    gone = [old_ids[1], old_ids[2], old_ids[500]]
    removed = remove_items(scann_version, gone)

    manifest = verify_artifact(removed)
    assert manifest.index["size"] == 1497
    assert manifest.index["last_update"] == {"op": "remove", "removed": 3}
    ids, embeddings = _catalog(removed)
    assert len(ids) == embeddings.shape[0] == 1497
    assert not set(gone) & set(ids)
    old_row = {item_id: row for row, item_id in enumerate(old_ids)}
    np.testing.assert_array_equal(embeddings, old_embeddings[[old_row[i] for i in ids]])

    index = load_artifact_index(removed)
    # Queries at the removed items themselves, plus 200 others, asking for a lot.
    queries = np.concatenate([old_embeddings[[1, 2, 500]], old_embeddings[:200]])
    found = index.search_batch(queries, 100).ids
    assert found.shape == (203, 100)
    assert not set(gone) & set(found.ravel().tolist())
    assert not set(gone) & set(index.search(old_embeddings[1], 1497).ids.tolist())


def test_remove_rejects_unknown_and_repeated_ids(model: Path) -> None:
    with pytest.raises(ValueError, match="cannot remove 'no-such-video': not in the catalog"):
        remove_items(model, ["v0000001", "no-such-video"])
    with pytest.raises(ValueError, match="more than once: 'v0000001'"):
        remove_items(model, ["v0000001", "v0000001"])
    with pytest.raises(ValueError, match="item_ids is empty"):
        remove_items(model, [])
    assert _versions(model) == ["v0001"]  # nothing was written


def _bad_file(tmp_path: Path, tiny_world: Path, case: str) -> Path:
    table = _world_items(tiny_world, [0, 1, 2], ["n0", "n1", "n2"])
    if case == "missing column":
        table = table.drop_columns(["title"])
    elif case == "duplicate ids":
        table = table.set_column(0, "item_id", pa.array(["n0", "n1", "n0"]))
    elif case == "wrong dimension":
        short = [[0.1] * 16] * 3
        column = table.schema.get_field_index("content_embedding")
        table = table.set_column(column, "content_embedding", pa.array(short))
    elif case == "nan":
        values = np.stack(table.column("content_embedding").to_numpy(zero_copy_only=False))
        values[1, 4] = np.nan
        column = table.schema.get_field_index("content_embedding")
        table = table.set_column(column, "content_embedding", pa.array(list(values)))
    elif case == "empty":
        table = table.slice(0, 0)
    path = tmp_path / f"{case.replace(' ', '-')}.parquet"
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing column", r"column 'title': required column is missing"),
        ("duplicate ids", r"column 'item_id': 2 rows holding an id .*'n0'.*\(row 0, 2\)"),
        ("wrong dimension", r"column 'content_embedding': 3 rows of the wrong dimension.*32"),
        ("nan", r"column 'content_embedding': 1 row holding NaN or infinite values \(row 1\)"),
        ("empty", "has no rows"),
    ],
)
def test_add_rejects_a_bad_items_file_naming_file_column_and_rows(
    model: Path, tiny_world: Path, tmp_path: Path, case: str, message: str
) -> None:
    path = _bad_file(tmp_path, tiny_world, case)
    with pytest.raises(ItemsFileError, match=message) as error:
        add_items(model, path)
    assert str(path) in str(error.value)
    assert _versions(model) == ["v0001"]


def test_add_rejects_a_file_that_is_not_parquet(model: Path, tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("item_id,title\nv1,hello\n")
    with pytest.raises(ItemsFileError, match=f"{path}: not a readable Parquet file"):
        add_items(model, path)
    with pytest.raises(ItemsFileError, match="no such file"):
        add_items(model, tmp_path / "missing.parquet")


def test_a_tampered_index_file_fails_to_load_clearly(model: Path) -> None:
    path = model / "v0001" / "index" / "embeddings.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIndexError, match=r"index/embeddings\.npy: sha256 does not match"):
        load_artifact_index(model / "v0001")
    # Nothing is derived from a corrupt version either.
    with pytest.raises(ArtifactIndexError, match="sha256"):
        build_artifact_index(model)
    assert _versions(model) == ["v0001"]


def _signed_variant(model: Path, change: str) -> Path:
    """A version derived from v0001 with `change` applied and re-signed: checksums pass."""
    base = model / "v0001"
    manifest = read_manifest(base)
    manifest.parent = "v0001"
    with write_version(model.parent, model.name, manifest, base=base) as folder:
        if change == "no index":
            shutil.rmtree(folder / "index")
        elif change == "other dim":
            settings = json.loads((folder / "config.json").read_text())
            settings["embedding_dim"] = 16
            (folder / "config.json").write_text(json.dumps(settings))
        elif change == "fewer items":
            items = pq.read_table(folder / "items.parquet")
            pq.write_table(items.slice(0, 1499), folder / "items.parquet")
            embeddings = np.load(folder / "item_embeddings.npy")
            np.save(folder / "item_embeddings.npy", embeddings[:1499], allow_pickle=False)
    return model / manifest.version


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no index", r"has no index .*recsys index build"),
        ("other dim", "wrong dim: the index has dimension 32 but 16 was expected"),
        ("fewer items", "holds 1500 items but items.parquet has 1499 rows"),
    ],
)
def test_load_checks_the_index_against_the_artifact(model: Path, change: str, message: str) -> None:
    with pytest.raises(ArtifactIndexError, match=message):
        load_artifact_index(_signed_variant(model, change))


def test_describe_and_id_file(model: Path, tmp_path: Path) -> None:
    info = describe_index(model)
    assert info["version"] == str(model / "v0001")
    assert info["index"]["kind"] == "exact"
    path = tmp_path / "ids.txt"
    path.write_text("# to take down\nv0000001\n\n  v0000002  \n")
    assert read_id_file(path) == ["v0000001", "v0000002"]

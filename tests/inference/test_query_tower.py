"""The served query tower: the TensorFlow Lite copy gives the SavedModel's embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import recsys.inference.query_tower as qt
from recsys.features.context import RequestContext, encode_request
from recsys.inference.query_tower import (
    LiteTower,
    SavedModelTower,
    TowerLoadError,
    convert_to_tflite,
    load_query_tower,
)
from recsys.inference.recommender import Recommender
from recsys.inference.request import RecommenderOptions

REQUEST_TIME = 1_800_000_000


@pytest.fixture(scope="module")
def model(trained_artifact: Path) -> Recommender:
    return Recommender.load(trained_artifact)


def _profile_features(model: Recommender, count: int) -> list[dict[str, np.ndarray]]:
    assert model.profiles is not None
    out = []
    for row in range(min(count, len(model.profiles))):
        ctx = model.profiles.context(model.profiles.user_id_at(row), REQUEST_TIME)
        assert ctx is not None
        out.append(encode_request(ctx, model.vocabs, model.config.features))
    return out


def test_auto_serves_tensorflow_lite_with_the_saved_models_embeddings(
    model: Recommender, trained_artifact: Path
) -> None:
    from recsys.artifact.versions import read_manifest

    # the export writes the Lite copy, checksummed like every file of the version
    assert "query_model.tflite" in read_manifest(trained_artifact).files
    assert isinstance(model.tower_batcher.fn, LiteTower)
    reference = load_query_tower(trained_artifact / "query_model", [], "savedmodel")
    assert isinstance(reference, SavedModelTower)
    features = _profile_features(model, 40)
    assert len(features) >= 20
    for f in features:  # users the load-time probes never saw
        np.testing.assert_allclose(model.tower_batcher.fn(f), reference(f), atol=1e-5)
    batch = {name: np.concatenate([f[name] for f in features[:7]]) for name in features[0]}
    got = model.tower_batcher.fn(batch)
    assert got.shape == (7, reference(batch).shape[1])
    np.testing.assert_allclose(got, reference(batch), atol=1e-5)


def test_both_runtimes_recommend_the_same_videos(
    model: Recommender, trained_artifact: Path
) -> None:
    slow = Recommender.load(trained_artifact, RecommenderOptions(tower_runtime="savedmodel"))
    assert isinstance(slow.tower_batcher.fn, SavedModelTower)
    assert model.profiles is not None
    for row in range(0, 60, 7):
        user = model.profiles.user_id_at(row)
        ctx = RequestContext(request_time=REQUEST_TIME)
        fast_items = model.recommend(ctx, user, 20).items
        slow_items = slow.recommend(ctx, user, 20).items
        assert [i.item_id for i in fast_items] == [i.item_id for i in slow_items]
        np.testing.assert_allclose(
            [i.logit for i in fast_items], [i.logit for i in slow_items], atol=1e-5
        )


def test_a_broken_lite_file_falls_back_or_fails_as_asked(
    trained_artifact: Path, tmp_path: Path
) -> None:
    probes = [
        encode_request(RequestContext(request_time=REQUEST_TIME), *_vocabs_config(trained_artifact))
    ]
    garbage = tmp_path / "query_model.tflite"
    garbage.write_bytes(b"not a flatbuffer" * 10)
    tower = load_query_tower(trained_artifact / "query_model", probes, "auto", garbage)
    assert isinstance(tower, SavedModelTower)
    with pytest.raises(TowerLoadError, match="TensorFlow Lite failed"):
        load_query_tower(trained_artifact / "query_model", probes, "tflite", garbage)


def test_a_lite_copy_that_disagrees_is_not_served(
    trained_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vocabs, config = _vocabs_config(trained_artifact)
    probes = [
        encode_request(RequestContext(searches=["a b"], request_time=REQUEST_TIME), vocabs, config)
    ]
    converted = tmp_path / "query_model.tflite"
    converted.write_bytes(convert_to_tflite(trained_artifact / "query_model"))
    lite = load_query_tower(trained_artifact / "query_model", probes, "tflite", converted)
    assert isinstance(lite, LiteTower)
    monkeypatch.setattr(qt, "MAX_ABS_DIFFERENCE", -1.0)  # any difference, even 0, is too much
    tower = load_query_tower(trained_artifact / "query_model", probes, "auto", converted)
    assert isinstance(tower, SavedModelTower)
    with pytest.raises(TowerLoadError, match="differs from the SavedModel"):
        load_query_tower(trained_artifact / "query_model", probes, "tflite", converted)


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match="tower_runtime must be one of"):
        RecommenderOptions(tower_runtime="onnx")  # type: ignore[arg-type]


def _vocabs_config(version: Path) -> tuple[object, object]:
    from recsys.features.vocab import Vocabularies

    model_config = Recommender.load(version, RecommenderOptions(tower_runtime="savedmodel")).config
    return Vocabularies.load(version / "vocabularies.json"), model_config.features

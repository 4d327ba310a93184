"""The training job as the ablation trainer: one short variant run, exported without an index."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from recsys.artifact.versions import read_manifest, verify_artifact
from recsys.config import load_config
from recsys.dataset.splits import Split
from tests.conftest import TINY_TRAIN_OVERRIDES


@pytest.mark.slow
def test_a_variant_trains_its_config_and_exports_without_an_index(
    tiny_world: Path, tmp_path: Path
) -> None:
    from recsys_training.ablation import VALIDATION_QUERIES, train_variant

    base = load_config(None, TINY_TRAIN_OVERRIDES)
    config = dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, use_example_age=False),
        train=dataclasses.replace(base.train, epochs=1, batch_size=512),
    )
    version = train_variant(
        tiny_world,
        Split("time"),
        config,
        name="without-example-age",
        artifacts=tmp_path / "artifacts",
        work_dir=tmp_path / "work",
        progress=False,
    )
    assert version.parent == tmp_path / "artifacts" / "without-example-age"
    manifest = verify_artifact(version)
    assert not manifest.index  # no index: the evaluation ranks variants by exact search
    assert not any(name.startswith("index/") for name in manifest.files)
    assert len(manifest.metrics["loss"]) == 1  # the variant's own epoch budget
    assert manifest.metrics["training"]["global_batch"] == 512
    assert manifest.metrics["eval_queries"] == VALIDATION_QUERIES
    assert read_manifest(version).config["model"]["use_example_age"] is False
    assert list((tmp_path / "work").glob("examples-*/examples.json"))  # examples built there

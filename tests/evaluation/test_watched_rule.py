"""One watched-video rule for every ranking: evaluation and the training job's validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recsys.artifact.versions import read_manifest


@pytest.fixture(scope="module")
def evaluated(
    attention_artifact: Path, tiny_world: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The attention artifact evaluated with ``exclude_watched="yes"``, EASE over 300 videos."""
    from recsys.cli.evaluate import synthetic_oracle
    from recsys.evaluation.evaluate import evaluate

    out = tmp_path_factory.mktemp("watched-rule")
    return evaluate(
        attention_artifact,
        tiny_world,
        out=out / "report",
        work_dir=out / "work",
        max_queries=None,
        tfrs_epochs=1,
        oracle=synthetic_oracle,
        exclude_watched="yes",
        ease_max_items=300,
        progress=False,
    )


def test_the_rule_is_recorded_and_in_the_headline(evaluated: dict[str, Any]) -> None:
    from recsys.evaluation.report import headline

    # the tiny world's users rewatch, so only "yes" applies the rule
    assert evaluated["exclude_watched"] == {"rule": "yes", "rewatches": True, "applied": True}
    assert "watched videos excluded (--exclude-watched yes)" in headline(evaluated)


def test_training_validation_uses_the_same_rule(
    evaluated: dict[str, Any], attention_artifact: Path
) -> None:
    # Same queries, same exclusions: the job's final recall and the evaluation's agree (up to
    # float differences that may swap a near-tie), as they do without the rule.
    trained = read_manifest(attention_artifact).metrics
    assert trained["exclude_watched"] == evaluated["exclude_watched"]
    assert trained["eval_queries"] == evaluated["queries"]["evaluated"]
    for k, value in trained["recall"].items():
        assert evaluated["methods"]["model_exact"]["recall"][k] == pytest.approx(value, abs=2e-3)


def test_ease_and_item_knn_are_reported_with_their_cover(evaluated: dict[str, Any]) -> None:
    methods, settings = evaluated["methods"], evaluated["baseline_settings"]
    assert {"ease", "item_knn", "co_watch", "tfrs_basic", "oracle"} <= set(methods)
    assert settings["ease"]["videos"] == 300 < settings["ease"]["watched_videos"]
    assert any("cover the 300 most watched" in w for w in evaluated["warnings"])
    for name in ("ease", "item_knn"):
        # far above chance (100 of 1500 videos) even on 300 videos
        assert methods[name]["recall"]["100"] > 2 * 100 / 1500, name

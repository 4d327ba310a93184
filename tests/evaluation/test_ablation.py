"""Tests for recsys.evaluation.ablation's variant list and plan (the runs are in test_report)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from recsys.config import ModelConfig
from recsys.evaluation.ablation import (
    ATTENTION_HISTORY,
    BAG_HISTORY,
    BASE_MODEL,
    MIXED_NEGATIVES,
    UNIFORM_NEGATIVES,
    Ablation,
    figure6_variants,
)


def test_training_group_takes_away_one_thing_at_a_time() -> None:
    base = ModelConfig(query_layers=(16, 8), candidate_layers=(16, 8), freshness=True)
    training = {v.label: v.model for v in figure6_variants(base) if v.group == "training"}
    assert training[BASE_MODEL] == base
    assert training["without logQ correction"] == dataclasses.replace(base, logq_correction=False)
    assert training["without example age"] == dataclasses.replace(base, use_example_age=False)
    assert training["without freshness"] == dataclasses.replace(base, freshness=False)


def test_only_what_the_base_uses_is_taken_away() -> None:
    base = ModelConfig(logq_correction=False, freshness=False)
    labels = [v.label for v in figure6_variants(base) if v.group == "training"]
    assert labels == [BASE_MODEL, "without example age"]
    ladder = [v.label for v in figure6_variants(base) if v.group == "features"]
    assert ladder[-1] == "+ recency (all features)"  # the Figure 6 ladder is unchanged


def test_objective_group_swaps_the_history_encoder_and_adds_negatives() -> None:
    base = ModelConfig()
    objective = {v.label: v.model for v in figure6_variants(base) if v.group == "objective"}
    assert objective == {
        ATTENTION_HISTORY: dataclasses.replace(base, history_encoder="attention"),
        MIXED_NEGATIVES: dataclasses.replace(base, num_uniform_negatives=UNIFORM_NEGATIVES),
    }
    # a base that reads the sequence and already mixes negatives: only the bag comes back
    seq = ModelConfig(history_encoder="attention", num_uniform_negatives=64)
    objective = {v.label: v.model for v in figure6_variants(seq) if v.group == "objective"}
    assert objective == {BAG_HISTORY: dataclasses.replace(seq, history_encoder="bag")}


def _never_trains(*args: object, **kwargs: object) -> Path:
    raise AssertionError("planning trains nothing")


def test_an_ablation_runs_the_variants_it_names_in_figure_order() -> None:
    base = ModelConfig(query_layers=(16, 8), candidate_layers=(16, 8))
    ablation = Ablation(_never_trains, variants=["depth 1", "+ searches"])
    assert [v.label for v in ablation.plan(base)] == ["+ searches", "depth 1"]
    assert [v.label for v in Ablation(_never_trains).plan(base)] == [
        v.label for v in figure6_variants(base)
    ]


def test_an_ablation_rejects_unknown_variants_and_no_epochs() -> None:
    with pytest.raises(ValueError, match="unknown ablation variant"):
        Ablation(_never_trains, variants=["+ searches", "depth 9"]).plan(ModelConfig())
    with pytest.raises(ValueError, match="epochs must be positive"):
        Ablation(_never_trains, epochs=0)

"""Tests for recsys.evaluation.ablation's variant list (the runs are in test_report)."""

from __future__ import annotations

import dataclasses

from recsys.config import ModelConfig
from recsys.evaluation.ablation import BASE_MODEL, figure6_variants


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

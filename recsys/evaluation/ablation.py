"""Feature and depth ablations of the YouTube paper's Figure 6: what to train, how to score it.

The feature ladder adds query inputs one group at a time (watches only; + searches;
+ example age; + demographics; + recency, where the base config uses it) at the base
model's depth; the depth sweep trains every query input at depths 0..3 (0: one linear
layer; then 256, 512-256, 1024-512-256 ReLU layers before the embedding layer, as in the
paper). The "training" group takes one thing away from the base model at a time (the logQ
correction, the example age; the freshness term where the base uses it), next to the base
model itself trained on the same budget; the "objective" group changes one thing: the
watch history read as a sequence instead of a bag (or back), and more negatives per step.
The caller supplies the trainer (an :class:`Ablation`'s ``train``, the training job in
``recsys evaluate``); every variant is trained on the same data and split for a small epoch
budget and scored here on the same evaluation queries as the main model.
The "+ searches" and "+ example age" variants differ only in the example-age input, so
their predicted watch share by video age is the paper's Figure 4.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from recsys.config import Config, ModelConfig
from recsys.dataset.splits import Split
from recsys.evaluation import metrics as M
from recsys.evaluation.artifact_model import ArtifactModel, model_features
from recsys.evaluation.exclusion import Watched
from recsys.evaluation.segments import predicted_age_share
from recsys.examples.building import LABEL_TIME
from recsys.features import contract as F
from recsys.features.vocab import Vocabularies

log = logging.getLogger(__name__)

# (label, the toggles switched on so far); each step adds one group of query inputs.
FEATURE_LADDER: tuple[tuple[str, dict[str, bool]], ...] = (
    (
        "watches only",
        {
            "use_searches": False,
            "use_example_age": False,
            "use_demographics": False,
            "use_recency": False,
        },
    ),
    ("+ searches", {"use_searches": True}),
    ("+ example age", {"use_example_age": True}),
    ("+ demographics", {"use_demographics": True}),
    ("+ recency (all features)", {"use_recency": True}),
)
DEPTH_WIDTHS: tuple[tuple[int, ...], ...] = ((), (256,), (512, 256), (1024, 512, 256))
# (label, the base config's toggle switched off); each only where the base has it on.
WITHOUT: tuple[tuple[str, str], ...] = (
    ("without logQ correction", "logq_correction"),
    ("without example age", "use_example_age"),
    ("without freshness", "freshness"),
)
# The "objective" group: one change to the base model each, what recent retrieval results use.
UNIFORM_NEGATIVES = 1024  # extra corpus negatives per step in the mixed-negatives variant
ATTENTION_HISTORY = "history as a sequence (attention)"
BAG_HISTORY = "history as a bag (mean)"
MIXED_NEGATIVES = f"+ {UNIFORM_NEGATIVES} uniform negatives"
BASE_MODEL = "base model"
WITHOUT_EXAMPLE_AGE = "+ searches"
WITH_EXAMPLE_AGE = "+ example age"


@dataclass(frozen=True)
class Variant:
    """One ablation run: a label, its group ("features" or "depth") and its model config."""

    label: str
    group: str
    model: ModelConfig
    depth: int | None = None
    inputs: tuple[str, ...] = field(default_factory=tuple)


def _inputs(model: ModelConfig) -> tuple[str, ...]:
    names = ["watches"]
    for toggle, name in (
        ("use_searches", "searches"),
        ("use_example_age", "example age"),
        ("use_demographics", "demographics"),
        ("use_recency", "recency"),
    ):
        if getattr(model, toggle):
            names.append(name)
    return tuple(names)


def depth_layers(depth: int, embedding_dim: int) -> tuple[int, ...]:
    """Tower widths for ``depth`` hidden ReLU layers ending in the embedding layer."""
    if not 0 <= depth < len(DEPTH_WIDTHS):
        raise ValueError(f"depth must be in 0..{len(DEPTH_WIDTHS) - 1}, got {depth}")
    return (*DEPTH_WIDTHS[depth], embedding_dim)


def figure6_variants(base: ModelConfig) -> list[Variant]:
    """The feature ladder at ``base``'s depth, depths 0..3 with ``base``'s inputs, then
    ``base`` itself and ``base`` without each of :data:`WITHOUT` (group "training").

    A step whose input the base config does not use is skipped (its toggle stays off).
    """
    variants: list[Variant] = []
    toggles: dict[str, bool] = {}
    for label, change in FEATURE_LADDER:
        toggles.update({k: v and bool(getattr(base, k)) for k, v in change.items()})
        model = dataclasses.replace(base, **toggles)  # type: ignore[arg-type]
        if variants and model == variants[-1].model:
            continue
        variants.append(Variant(label, "features", model, inputs=_inputs(model)))
    dim = base.embedding_dim
    for depth in range(len(DEPTH_WIDTHS)):
        layers = depth_layers(depth, dim)
        model = dataclasses.replace(base, query_layers=layers, candidate_layers=layers)
        variants.append(
            Variant(f"depth {depth}", "depth", model, depth=depth, inputs=_inputs(model))
        )
    variants.append(Variant(BASE_MODEL, "training", base, inputs=_inputs(base)))
    for label, toggle in WITHOUT:
        if getattr(base, toggle):
            model = dataclasses.replace(base, **{toggle: False})  # type: ignore[arg-type]
            variants.append(Variant(label, "training", model, inputs=_inputs(model)))
    variants.extend(objective_variants(base))
    return variants


def objective_variants(base: ModelConfig) -> list[Variant]:
    """The base model with the other history encoder, and with mixed negatives (in-batch plus
    :data:`UNIFORM_NEGATIVES` uniform corpus samples, logQ kept) when it has none: group
    "objective", each compared with the base model on the same budget."""
    other = "bag" if base.history_encoder == "attention" else "attention"
    label = BAG_HISTORY if other == "bag" else ATTENTION_HISTORY
    models = [(label, dataclasses.replace(base, history_encoder=other))]
    if base.num_uniform_negatives == 0:
        models.append(
            (MIXED_NEGATIVES, dataclasses.replace(base, num_uniform_negatives=UNIFORM_NEGATIVES))
        )
    return [Variant(lbl, "objective", m, inputs=_inputs(m)) for lbl, m in models]


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label).strip("-").replace("--", "-")


class TrainVariant(Protocol):
    """Trains one ablation variant and returns its artifact version folder."""

    def __call__(
        self,
        data: Path,
        split: Split,
        config: Config,
        *,
        name: str,
        artifacts: Path,
        work_dir: Path,
        progress: bool,
    ) -> Path:
        """Train ``config`` (its ``train.epochs`` and batch) on ``data``'s ``split``, export
        ``artifacts/<name>/vN`` without an index, reuse examples in ``work_dir``."""
        ...


@dataclass(frozen=True)
class Ablation:
    """Which variants to run, on what budget, and the trainer that runs them.

    ``variants``: labels to run (default: all); ``batch_size`` overrides the base config's.
    """

    train: TrainVariant
    epochs: int = 2
    variants: Sequence[str] | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise ValueError(f"ablation epochs must be positive, got {self.epochs}")

    def plan(self, base: ModelConfig) -> list[Variant]:
        """The variants of :func:`figure6_variants` for ``base`` that this ablation runs."""
        planned = figure6_variants(base)
        if self.variants is None:
            return planned
        known = {v.label for v in planned}
        unknown = sorted(set(self.variants) - known)
        if unknown:
            raise ValueError(f"unknown ablation variant(s) {unknown}; choose from {sorted(known)}")
        return [v for v in planned if v.label in set(self.variants)]


@dataclass
class _Scored:
    """One trained variant scored on the evaluation queries."""

    metrics: dict[str, Any]
    q_emb: np.ndarray
    model: ArtifactModel


def score_variant(
    version_dir: Path,
    queries: Mapping[str, np.ndarray],
    examples_vocab: Vocabularies,
    catalog: tuple[pd.DataFrame, np.ndarray | None],
    ks: Sequence[int],
    excluded: Watched | None = None,
) -> _Scored:
    """Recall, MAP and NDCG at each K and MRR of an artifact, by exact search on ``queries``
    (``excluded``: each query's rows left out, its watched videos, or None)."""
    labels = np.asarray(queries[F.ITEM_INDEX], dtype=np.int64)
    times = np.asarray(queries[LABEL_TIME], dtype=np.int64)
    model = ArtifactModel(version_dir)
    q_emb = model.query_embeddings(model_features(queries, examples_vocab, model))
    ranked = model.rank_exact(q_emb, times, catalog[0], catalog[1], max(ks), excluded)
    per_query = M.per_query_metrics(ranked, labels, ks)
    summary: dict[str, Any] = {
        name: {str(k): float(per_query[f"{name}@{k}"].mean()) for k in ks}
        for name in ("recall", "map", "ndcg")
    }
    summary["mrr"] = float(per_query["mrr"].mean())
    return _Scored(summary, q_emb, model)


def _row(variant: Variant, epochs: int) -> dict[str, Any]:
    return {
        "label": variant.label,
        "group": variant.group,
        "depth": variant.depth,
        "inputs": list(variant.inputs),
        "query_layers": list(variant.model.query_layers),
        "candidate_layers": list(variant.model.candidate_layers),
        "epochs": epochs,
    }


def run_ablation(
    ablation: Ablation,
    data: Path,
    split: Split,
    base: Config,
    queries: Mapping[str, np.ndarray],
    examples_vocab: Vocabularies,
    catalog: tuple[pd.DataFrame, np.ndarray | None],
    ks: Sequence[int],
    out: Path,
    work_dir: Path,
    progress: bool = True,
    excluded: Watched | None = None,
) -> dict[str, Any]:
    """Train and score the Figure 6 variants; returns a JSON-ready dict.

    ``queries``: the evaluation examples (``[n, ...]`` columns) every variant is scored on;
    ``catalog``: the items table and content embeddings they rank; ``excluded``: the rows
    each query leaves out (the evaluation's watched-video rule). The result has ``rows``
    (one per variant: inputs, layers, metrics, training seconds) and
    ``example_age_predicted`` (Figure 4 curves of the two example-age variants, when run).
    """
    ks = tuple(int(k) for k in ks)
    planned = ablation.plan(base.model)
    epochs = ablation.epochs
    train_cfg = dataclasses.replace(
        base.train, epochs=epochs, batch_size=ablation.batch_size or base.train.batch_size
    )
    times = np.asarray(queries[LABEL_TIME], dtype=np.int64)
    upload_time = catalog[0]["upload_time"].to_numpy(np.int64)
    rows: list[dict[str, Any]] = []
    curves: dict[str, dict[str, Any]] = {}
    done: dict[ModelConfig, dict[str, Any]] = {}
    for i, variant in enumerate(planned):
        log.info("ablation %d/%d: %s (%s)", i + 1, len(planned), variant.label, variant.inputs)
        row = _row(variant, epochs)
        if variant.model in done:  # the same config as an earlier variant: same run
            rows.append({**row, **{k: done[variant.model][k] for k in ("metrics", "seconds")}})
            rows[-1]["same_run_as"] = done[variant.model]["label"]
            continue
        config = dataclasses.replace(base, model=variant.model, train=train_cfg)
        started = time.perf_counter()
        version_dir = ablation.train(
            data,
            split,
            config,
            name=_slug(variant.label),
            artifacts=out / "artifacts",
            work_dir=work_dir,
            progress=progress,
        )
        seconds = time.perf_counter() - started
        scored = score_variant(version_dir, queries, examples_vocab, catalog, ks, excluded)
        row.update(metrics=scored.metrics, seconds=seconds, artifact=str(version_dir))
        rows.append(row)
        done[variant.model] = {
            "label": variant.label,
            "metrics": scored.metrics,
            "seconds": seconds,
        }
        if variant.label in (WITHOUT_EXAMPLE_AGE, WITH_EXAMPLE_AGE):
            model = scored.model
            pred, unreleased = predicted_age_share(
                scored.q_emb, model.item_embeddings, model.temperature, times, upload_time
            )
            curves[f"ablation: {variant.label}"] = {
                "predicted": pred,
                "not_yet_uploaded": unreleased,
                "uses_example_age": variant.model.use_example_age,
            }
    return {
        "epochs": epochs,
        "batch_size": train_cfg.batch_size,
        "rows": rows,
        "example_age_predicted": curves,
    }

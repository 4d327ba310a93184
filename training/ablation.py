"""The training job as the evaluation's ablation trainer: one short run per Figure 6 variant.

:func:`train_variant` is a :class:`recsys.evaluation.ablation.TrainVariant`; ``recsys
evaluate --ablation`` hands it to :func:`recsys.evaluation.evaluate` inside an
:class:`~recsys.evaluation.ablation.Ablation`.
"""

from __future__ import annotations

from pathlib import Path

from recsys.config import Config
from recsys.dataset.splits import Split
from recsys_training.job import train

# The evaluation scores every variant on its own queries: the job's validation sample (kept in
# the variant's manifest) only needs to be small.
VALIDATION_QUERIES = 500


def train_variant(
    data: Path,
    split: Split,
    config: Config,
    *,
    name: str,
    artifacts: Path,
    work_dir: Path,
    progress: bool,
) -> Path:
    """Train ``config`` for its ``train.epochs`` with the training job, export it without an
    index into ``artifacts/<name>``, and return the version folder."""
    result = train(
        data,
        artifacts,
        name=name,
        config=config,
        split=split,
        epochs=config.train.epochs,
        work_dir=work_dir,
        max_eval_queries=VALIDATION_QUERIES,
        build_index=False,
        progress=progress,
    )
    if result.version_dir is None:  # pragma: no cover - only non-chief workers
        raise RuntimeError("ablation must run on the chief worker")
    return result.version_dir

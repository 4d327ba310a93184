"""Offline evaluation: ranking metrics, baselines, oracle ceiling, segments, ablations, reports.

``evaluate(artifact, data, out=...)`` writes ``metrics.json``, ``report.md`` and a
self-contained ``report.html``; ``recsys evaluate`` is its command line, which passes in the
synthetic world's oracle and, for ``--ablation``, the training job as the variants' trainer.
Importing this package does not import TensorFlow.
"""

from recsys.evaluation.ablation import Ablation, TrainVariant
from recsys.evaluation.artifact_model import ArtifactModel
from recsys.evaluation.evaluate import Oracle, OracleScores, evaluate
from recsys.evaluation.report import headline

__all__ = [
    "Ablation",
    "ArtifactModel",
    "Oracle",
    "OracleScores",
    "TrainVariant",
    "evaluate",
    "headline",
]

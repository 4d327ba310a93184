"""Offline evaluation: ranking metrics, baselines, oracle ceiling, segments, ablations, reports.

``evaluate(artifact, data, out=...)`` writes ``metrics.json``, ``report.md`` and a
self-contained ``report.html``; ``recsys evaluate`` is its command line. Importing this
package does not import TensorFlow.
"""

from recsys.evaluation.artifact_model import ArtifactModel
from recsys.evaluation.evaluate import evaluate
from recsys.evaluation.report import headline

__all__ = ["ArtifactModel", "evaluate", "headline"]

"""Offline evaluation: ranking metrics, baselines, oracle ceiling, segments, ablations, reports.

:func:`recsys.evaluation.evaluate.evaluate` writes ``metrics.json``, ``report.md`` and a
self-contained ``report.html``; ``recsys evaluate`` is its command line, which passes in the
synthetic world's oracle and, for ``--ablation``, the training job as the variants' trainer.
Importing this package does not import TensorFlow.
"""

"""Distribution strategy, thread pools and mixed precision for the training job.

One host's GPUs use ``MirroredStrategy``; several hosts use ``MultiWorkerMirroredStrategy``
configured by the standard ``TF_CONFIG`` environment variable (one process per host, each
with its own ``task``). Create the strategy first thing in the process, before any other
TensorFlow op runs: the multi-worker runtime must be set up before the eager context starts.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import tensorflow as tf

log = logging.getLogger(__name__)


def _cluster_spec() -> dict[str, Any] | None:
    """The parsed ``TF_CONFIG``, or None when it is unset or empty."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON ({exc}): {raw[:200]!r}") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("cluster"), dict):
        raise ValueError(
            'TF_CONFIG must be a JSON object with a "cluster" table and a "task", e.g. '
            '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )
    if "ps" in spec["cluster"]:
        raise ValueError(
            "TF_CONFIG lists parameter servers (ps); this job trains with synchronous "
            "MultiWorkerMirroredStrategy: list only chief/worker tasks"
        )
    return spec


def choose_strategy() -> tf.distribute.Strategy:
    """The strategy this process should train under, logged with the reason.

    ``TF_CONFIG`` set -> ``MultiWorkerMirroredStrategy``; more than one GPU ->
    ``MirroredStrategy``; one GPU -> ``OneDeviceStrategy("/gpu:0")``; otherwise the default
    (no-op) strategy.
    """
    spec = _cluster_spec()
    if spec is not None:
        cluster = spec["cluster"]
        task = spec.get("task", {})
        workers = sum(len(v) for v in cluster.values() if isinstance(v, list))
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        log.info(
            "distribution: MultiWorkerMirroredStrategy (TF_CONFIG: %d tasks, this is %s); "
            "%d replicas in sync",
            workers,
            task,
            strategy.num_replicas_in_sync,
        )
        return strategy
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        log.info("distribution: MirroredStrategy over %d local GPUs", len(gpus))
        return strategy
    if len(gpus) == 1:
        log.info("distribution: OneDeviceStrategy on /gpu:0 (one GPU, no TF_CONFIG)")
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    log.info("distribution: default strategy (no GPU, no TF_CONFIG): one CPU replica")
    return tf.distribute.get_strategy()


def configure_threads(intra: int | None, inter: int | None) -> None:
    """Size TensorFlow's thread pools (None leaves one as is; 0 lets TensorFlow choose).

    Must run before TensorFlow executes its first op.
    """
    try:
        if intra is not None:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter is not None:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError as exc:
        raise RuntimeError(
            "configure_threads must be called before TensorFlow runs any op (call it at the "
            f"start of the training process): {exc}"
        ) from exc
    log.info("threads: intra-op %s, inter-op %s", intra, inter)


def enable_mixed_precision(policy: str | None = None) -> str:
    """Set the global Keras dtype policy to mixed precision and return its name.

    ``policy`` None picks ``mixed_float16`` when a GPU is present, else ``mixed_bfloat16``
    (float16 needs loss scaling and is emulated slowly on CPUs; bfloat16 keeps float32's
    range). Towers keep their embeddings and the loss in float32 either way.
    """
    if policy is None:
        has_gpu = bool(tf.config.list_physical_devices("GPU"))
        policy = "mixed_float16" if has_gpu else "mixed_bfloat16"
    if policy not in ("mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"policy must be mixed_float16 or mixed_bfloat16, got {policy!r}")
    tf.keras.mixed_precision.set_global_policy(policy)
    log.info("mixed precision: global dtype policy %s", policy)
    return policy

"""Tests for recsys_training.strategy, including a real 2-worker MultiWorkerMirroredStrategy run."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import tensorflow as tf

from recsys_training.strategy import choose_strategy, configure_threads, enable_mixed_precision


def _free_ports(count: int) -> list[int]:
    """Ports the OS reports free (sockets bound to port 0 together, so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _env(tf_config: dict[str, object]) -> dict[str, str]:
    """This process's environment plus ``TF_CONFIG``, GPUs hidden."""
    env = dict(os.environ)
    env["TF_CONFIG"] = json.dumps(tf_config)
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def test_default_strategy_without_tf_config_or_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = choose_strategy()
    assert strategy is tf.distribute.get_strategy()  # the default, no-op strategy
    assert strategy.num_replicas_in_sync == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"task": {}}', 'with a "cluster" table'),
        ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}}', "parameter servers"),
    ],
)
def test_bad_tf_config_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ValueError, match=message):
        choose_strategy()


def test_configure_threads_after_start_explains_itself() -> None:
    tf.constant(1.0)  # make sure the runtime has started
    current = tf.config.threading.get_intra_op_parallelism_threads()
    with pytest.raises(RuntimeError, match="before TensorFlow runs any op"):
        configure_threads(current + 3, None)


def test_enable_mixed_precision_picks_a_policy() -> None:
    try:
        name = enable_mixed_precision()
        # No GPU here: bfloat16 (float16 is emulated slowly on CPUs and needs loss scaling).
        expected = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
        assert name == expected
        assert tf.keras.mixed_precision.global_policy().name == expected
        with pytest.raises(ValueError, match="policy must be"):
            enable_mixed_precision("float64")
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


_CHOOSE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from recsys_training.strategy import choose_strategy, configure_threads
    import tensorflow as tf

    configure_threads(1, 1)  # first thing, before any op
    strategy = choose_strategy()
    json.dump({
        "multi_worker": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
        "replicas": strategy.num_replicas_in_sync,
        "intra": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter": tf.config.threading.get_inter_op_parallelism_threads(),
    }, open(sys.argv[1], "w"))
    """
)


def test_tf_config_chooses_multi_worker_mirrored(tmp_path: Path) -> None:
    script = tmp_path / "choose.py"
    script.write_text(_CHOOSE_SCRIPT)
    out = tmp_path / "out.json"
    (port,) = _free_ports(1)
    tf_config = {
        "cluster": {"worker": [f"127.0.0.1:{port}"]},
        "task": {"type": "worker", "index": 0},
    }
    proc = subprocess.run(
        [sys.executable, str(script), str(out)],
        check=False,
        env=_env(tf_config),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result == {"multi_worker": True, "replicas": 1, "intra": 1, "inter": 1}


# One worker of a 2-worker cluster: trains the TwoTowerModel for a few steps on a tiny
# in-memory dataset, each worker reading its own shard, and reports what it ended with.
_WORKER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from recsys_training.strategy import choose_strategy

    strategy = choose_strategy()  # before any other TensorFlow op
    import tensorflow as tf
    from recsys.features import contract as F
    from recsys.config import ModelConfig, TrainConfig
    from recsys.model.two_tower import TwoTowerModel, make_optimizer
    from recsys.model.towers import VocabSizes

    GLOBAL_BATCH, STEPS, ITEMS = 16, 3, 50
    rng = np.random.default_rng(0)  # the same data on both workers; each reads its shard
    n = 128
    catalog = {
        F.ITEM: np.arange(2, ITEMS + 2, dtype=np.int32),
        F.CHANNEL: rng.integers(0, 6, ITEMS).astype(np.int32),
        F.CATEGORY: rng.integers(0, 4, ITEMS).astype(np.int32),
        F.TITLE_TOKENS: rng.integers(0, 20, (ITEMS, 3)).astype(np.int32),
        F.UPLOAD_AGE: rng.uniform(0, 50, ITEMS).astype(np.float32),
    }
    labels = rng.integers(0, ITEMS, n)
    data = {name: values[labels] for name, values in catalog.items()}
    data.update({
        F.ITEM_INDEX: labels.astype(np.int32),
        F.HISTORY: rng.integers(0, ITEMS + 2, (n, 4)).astype(np.int32),
        F.SEARCH_TOKENS: rng.integers(0, 20, (n, 3)).astype(np.int32),
        F.COUNTRY: rng.integers(0, 3, n).astype(np.int32),
        F.REGION: rng.integers(0, 3, n).astype(np.int32),
        F.GENDER: rng.integers(0, 3, n).astype(np.int32),
        F.AGE: rng.uniform(10, 80, n).astype(np.float32),
        F.AGE_KNOWN: np.ones(n, np.float32),
        F.EXAMPLE_AGE: rng.uniform(0, 10, n).astype(np.float32),
        F.LAST_SEARCH_TOKENS: rng.integers(0, 20, (n, 2)).astype(np.int32),
        F.SINCE_LAST_WATCH: rng.uniform(0, 600, n).astype(np.float32),
        F.SINCE_LAST_SEARCH: rng.uniform(0, 600, n).astype(np.float32),
    })

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(GLOBAL_BATCH)
        ds = tf.data.Dataset.from_tensor_slices(data)
        ds = ds.shard(context.num_input_pipelines, context.input_pipeline_id)
        return ds.batch(per_replica, drop_remainder=True).repeat()

    sizes = VocabSizes(ITEMS + 2, 20, 3, 3, 3, 6, 4, None)
    config = ModelConfig(
        item_embedding_dim=8, token_embedding_dim=4, geo_embedding_dim=2,
        gender_embedding_dim=2, channel_embedding_dim=2, category_embedding_dim=2,
        query_layers=(16, 8), candidate_layers=(8,), frequency_buckets=64,
        num_uniform_negatives=4,
    )
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = TwoTowerModel(config, sizes, candidate_corpus=catalog)
        model.compile(optimizer=make_optimizer(TrainConfig(learning_rate=0.1)))
    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    history = model.fit(dataset, epochs=1, steps_per_epoch=STEPS, verbose=0)
    json.dump({
        "replicas": strategy.num_replicas_in_sync,
        "loss": history.history["loss"],
        "frequency_step": int(model.frequency.step.numpy()),
        "frequency_gap_sum": float(model.frequency.gap.numpy().sum()),
        "weights_sum": float(sum(float(tf.reduce_sum(v)) for v in model.trainable_variables)),
    }, open(sys.argv[1], "w"))
    """
)


@pytest.mark.slow
def test_two_worker_multi_worker_mirrored_training(tmp_path: Path) -> None:
    """Two local processes form a cluster and train the two-tower model synchronously."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER_SCRIPT)
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        log = open(tmp_path / f"worker{index}.log", "w")  # noqa: SIM115 (closed below)
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, str(script), str(tmp_path / f"out{index}.json")],
                    env=_env(tf_config),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    deadline = time.monotonic() + 150
    try:
        for proc, _ in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    for index, (proc, _) in enumerate(procs):
        output = (tmp_path / f"worker{index}.log").read_text()[-3000:]
        assert proc.returncode == 0, f"worker {index} failed:\n{output}"

    results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    for result in results:
        assert result["replicas"] == 2  # one CPU replica per worker
        assert len(result["loss"]) == 1
        assert all(math.isfinite(x) for x in result["loss"])
        # Every worker's estimate saw the whole global batch: 3 steps x 16 examples.
        assert result["frequency_step"] == 3 * 16
    # Synchronous training: both workers end with the same weights and the same estimate.
    assert results[0]["weights_sum"] == pytest.approx(results[1]["weights_sum"], rel=1e-6)
    assert results[0]["frequency_gap_sum"] == results[1]["frequency_gap_sum"]
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-6)

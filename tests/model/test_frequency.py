"""Tests for recsys.model.frequency: convergence, TF == numpy reference, and MirroredStrategy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from recsys.model.frequency import FrequencyEstimator, NumpyFrequencyEstimator

# A known stream: 8 items with fixed probabilities.
P = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02])


def _stream(steps: int, batch: int, seed: int = 0) -> np.ndarray:
    """``[steps, batch]`` item ids drawn i.i.d. from P."""
    return np.random.default_rng(seed).choice(len(P), size=(steps, batch), p=P)


def test_numpy_reference_by_hand() -> None:
    est = NumpyFrequencyEstimator(alpha=0.5, num_buckets=8)
    est.update(np.array([3, 5, 3]))  # positions 1, 2, 3
    # Item 3: first seen at 1 -> B = 1 (the gap since the start); again at 3 -> B = 0.5*1 + 0.5*2.
    assert est.gap[0, 3] == 1.5
    assert est.gap[0, 5] == 2.0  # first seen at position 2
    est.update(np.array([5]))  # position 4: gap 2 -> B = 0.5*2 + 0.5*2 = 2
    np.testing.assert_allclose(est.probability(np.array([3, 5, 7])), [1 / 1.5, 1 / 2, 1 / 4])
    # (item 7 was never seen: 1 / step = 1/4)


def test_numpy_reference_converges_to_p() -> None:
    est = NumpyFrequencyEstimator(alpha=0.01, num_buckets=64)
    for batch in _stream(1000, 32):
        est.update(batch)
    relative_error = np.abs(est.probability(np.arange(len(P))) / P - 1)
    # EMA of geometric gaps: relative std about sqrt(alpha / 2) = 0.07 per item.
    assert relative_error[P >= 0.05].max() < 0.25, relative_error


def test_tf_converges_to_p_under_tf_function() -> None:
    est = FrequencyEstimator(alpha=0.01, num_buckets=64)
    update = tf.function(est.update)
    for batch in _stream(1000, 32, seed=1):
        update(tf.constant(batch, tf.int32))
    assert est.step.numpy() == 1000 * 32
    relative_error = np.abs(est.probability(tf.range(len(P))).numpy() / P - 1)
    assert relative_error[P >= 0.05].max() < 0.25, relative_error


@pytest.mark.parametrize(("num_buckets", "num_hashes"), [(64, 1), (5, 3)])
def test_tf_equals_numpy_step_by_step(num_buckets: int, num_hashes: int) -> None:
    # Small batches with duplicates, empty batches, and (with 5 buckets) hash collisions.
    rng = np.random.default_rng(2)
    ref = NumpyFrequencyEstimator(0.2, num_buckets, num_hashes)
    est = FrequencyEstimator(0.2, num_buckets, num_hashes)
    step = tf.function(
        est.update_and_probability, input_signature=[tf.TensorSpec([None], tf.int32)]
    )
    for _ in range(40):
        ids = rng.integers(0, 12, size=rng.integers(0, 9))
        got = step(tf.constant(ids, tf.int32)).numpy()
        ref.update(ids)
        np.testing.assert_allclose(got, ref.probability(ids), rtol=1e-5)
        np.testing.assert_allclose(est.gap.numpy().reshape(num_hashes, -1), ref.gap, rtol=1e-5)
        np.testing.assert_array_equal(est.last_seen.numpy().reshape(num_hashes, -1), ref.last_seen)
    assert est.step.numpy() == ref.step
    probe = np.arange(20)  # includes never-seen ids 12..19
    np.testing.assert_allclose(
        est.probability(tf.constant(probe)).numpy(), ref.probability(probe), rtol=1e-5
    )


def test_multiple_hashes_limit_collision_damage() -> None:
    # 40 items in 16 buckets: with one hash, colliding items share (and inflate) an estimate;
    # the max-gap over 4 hashes comes closer to the truth.
    p = np.full(40, 1 / 40)
    stream = np.random.default_rng(3).choice(40, size=(300, 64), p=p)
    errors = {}
    for hashes in (1, 4):
        est = NumpyFrequencyEstimator(0.02, 16, hashes)
        for batch in stream:
            est.update(batch)
        errors[hashes] = np.median(np.abs(est.probability(np.arange(40)) / p - 1))
    assert errors[4] < errors[1], errors


def test_variables_are_checkpointed_and_not_trainable(tmp_path: Path) -> None:
    est = FrequencyEstimator(0.1, 16)
    est.update(tf.constant([1, 2, 2]))
    assert est.trainable_variables == ()
    path = tf.train.Checkpoint(est=est).save(str(tmp_path / "ckpt"))
    restored = FrequencyEstimator(0.1, 16)
    tf.train.Checkpoint(est=restored).restore(path).assert_consumed()
    np.testing.assert_array_equal(restored.gap.numpy(), est.gap.numpy())
    assert restored.step.numpy() == 3


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import recsys
    import tensorflow as tf
    from recsys.model.frequency import FrequencyEstimator, NumpyFrequencyEstimator

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        est = FrequencyEstimator(0.1, 32)
    ref = NumpyFrequencyEstimator(0.1, 32)

    @tf.function
    def step(ids):
        return strategy.run(est.update_and_probability, (ids,))

    rng = np.random.default_rng(0)
    stream = rng.integers(0, 10, size=35)
    # Global batches of 7: replica 0 gets 4 ids, replica 1 gets 3 (uneven on purpose).
    dataset = tf.data.Dataset.from_tensor_slices(stream.astype(np.int32)).batch(7)
    max_error = 0.0
    for batch in strategy.experimental_distribute_dataset(dataset):
        local = [t.numpy() for t in strategy.experimental_local_results(batch)]
        probs = [t.numpy() for t in strategy.experimental_local_results(step(batch))]
        ref.update(np.concatenate(local))  # the global batch, in replica order
        for ids, got in zip(local, probs):
            max_error = max(max_error, float(np.abs(got / ref.probability(ids) - 1).max()))
    copies = [v.numpy() for v in est.gap.values]
    json.dump({
        "sizes": [len(x) for x in local],
        "max_error": max_error,
        "copies_equal": bool(np.array_equal(copies[0], copies[1])),
        "gap_error": float(np.abs(copies[0] - ref.gap[0]).max()),
        "step": int(est.step.numpy()),
    }, open(sys.argv[1], "w"))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_sees_the_global_batch(tmp_path: Path) -> None:
    """Two CPU replicas, each with part of the batch, equal the reference on the whole batch."""
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED_SCRIPT)
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, str(script), str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["sizes"] == [4, 3]  # both replicas really had different ids
    assert result["step"] == 35  # every example counted once, not once per replica
    assert result["copies_equal"]
    assert result["gap_error"] < 1e-4
    assert result["max_error"] < 1e-5

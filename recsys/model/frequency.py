"""Streaming item-frequency estimate for the logQ correction (Yi et al. 2019, Algorithms 2-3).

For every hashed item the estimator keeps ``A`` (the stream position at which it was last
seen) and ``B`` (an exponential moving average of the gap between its occurrences)::

    B[h(y)] <- (1 - alpha) * B[h(y)] + alpha * (t - A[h(y)]);   A[h(y)] <- t

and the item's sampling probability is ``1 / B``. With several hash functions the largest
``B`` wins, because collisions only ever shorten the observed gaps.

Two choices make the estimate usable across batch sizes and replicas:

- ``t`` counts *examples*, not batches: within a batch, examples are taken in order. So
  ``1 / B`` estimates the per-example probability ``p`` directly (the paper's per-batch ``t``
  gives ``batch_size * p``), and duplicates inside a batch are ordinary short gaps.
- The first time a bucket is seen, ``B`` is set to the observed gap since the start of the
  stream instead of decaying from 0 (an EMA started at 0 would claim a gap of ``alpha * t``,
  that is a probability far above 1, for every new item).

Under ``tf.distribute`` every replica all-gathers the global batch's ids and applies the same
update, so the mirrored variables stay identical without summing anything across replicas;
``ONLY_FIRST_REPLICA`` aggregation then writes one copy to all.

:class:`NumpyFrequencyEstimator` is the item-by-item reference that the TensorFlow version is
tested against.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Universal hashing ((a * x + b) mod P) mod num_buckets with the Mersenne prime P = 2^31 - 1:
# ids below 2^31 times a below P fit in int64. Hash 0 is the identity modulo num_buckets, so a
# single hash over a catalog no larger than num_buckets has no collisions at all.
_PRIME = (1 << 31) - 1
_HASH_SEED = 20190910


def hash_parameters(num_hashes: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed multipliers ``a: [num_hashes]`` and offsets ``b: [num_hashes]`` (int64)."""
    rng = np.random.default_rng(_HASH_SEED)
    a = rng.integers(1, _PRIME, size=num_hashes, dtype=np.int64)
    b = rng.integers(0, _PRIME, size=num_hashes, dtype=np.int64)
    a[0], b[0] = 1, 0
    return a, b


def _check_args(alpha: float, num_buckets: int, num_hashes: int) -> None:
    """Raise ValueError for parameters the algorithm cannot use."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if num_buckets <= 0 or num_hashes <= 0:
        raise ValueError(
            f"num_buckets and num_hashes must be positive, got {num_buckets} and {num_hashes}"
        )


class NumpyFrequencyEstimator:
    """Reference implementation: the paper's loop, one example at a time, in float64."""

    def __init__(self, alpha: float = 0.01, num_buckets: int = 1 << 20, num_hashes: int = 1):
        _check_args(alpha, num_buckets, num_hashes)
        self.alpha = alpha
        self.num_buckets = num_buckets
        self.num_hashes = num_hashes
        self._a, self._b = hash_parameters(num_hashes)
        self.step = 0  # examples seen so far
        self.last_seen = np.zeros((num_hashes, num_buckets), dtype=np.int64)  # A
        self.gap = np.zeros((num_hashes, num_buckets), dtype=np.float64)  # B; 0 = never seen

    def buckets(self, ids: np.ndarray) -> np.ndarray:
        """Bucket of every id under every hash: ``ids: [n]`` -> ``[num_hashes, n]``."""
        ids = np.asarray(ids, dtype=np.int64)
        return ((self._a[:, None] * ids[None, :] + self._b[:, None]) % _PRIME) % self.num_buckets

    def update(self, ids: np.ndarray) -> None:
        """Observe a batch ``ids: [n]`` (non-negative ints below 2^31), in order."""
        for column in self.buckets(ids).T:
            self.step += 1
            for k, h in enumerate(column):
                observed = self.step - self.last_seen[k, h]
                if self.gap[k, h] > 0:
                    self.gap[k, h] = (1 - self.alpha) * self.gap[k, h] + self.alpha * observed
                else:
                    self.gap[k, h] = observed
                self.last_seen[k, h] = self.step

    def probability(self, ids: np.ndarray) -> np.ndarray:
        """Estimated per-example probability of each id: ``[n]`` float64.

        An id never seen gets ``1 / step`` (it occurred at most once in the stream so far).
        """
        gap = self.gap[np.arange(self.num_hashes)[:, None], self.buckets(ids)].max(axis=0)
        unseen = 1.0 / max(self.step, 1)
        return np.where(gap > 0, 1.0 / np.maximum(gap, 1e-12), unseen)


class FrequencyEstimator(tf.Module):
    """The streaming estimate as TensorFlow variables, updated inside the train step.

    Create it under the distribution strategy's scope (as a model attribute, it is); call
    :meth:`update` from the replica function with that replica's ids, then
    :meth:`probability`. Variables are non-trainable and checkpointed with the model.
    """

    def __init__(
        self,
        alpha: float = 0.01,
        num_buckets: int = 1 << 20,
        num_hashes: int = 1,
        name: str = "frequency_estimator",
    ) -> None:
        super().__init__(name=name)
        _check_args(alpha, num_buckets, num_hashes)
        self.alpha = alpha
        self.num_buckets = num_buckets
        self.num_hashes = num_hashes
        a, b = hash_parameters(num_hashes)
        self._hash_a = tf.constant(a, tf.int64)
        self._hash_b = tf.constant(b, tf.int64)
        # Every replica writes the same value (it saw the same global batch), so the first
        # replica's write is the right one for all: no cross-replica reduction needed.
        shared = {
            "trainable": False,
            "synchronization": tf.VariableSynchronization.ON_WRITE,
            "aggregation": tf.VariableAggregation.ONLY_FIRST_REPLICA,
        }
        size = num_hashes * num_buckets  # flattened [num_hashes, num_buckets]
        self.step = tf.Variable(tf.constant(0, tf.int64), name="step", **shared)
        self.last_seen = tf.Variable(tf.zeros([size], tf.int64), name="last_seen", **shared)
        self.gap = tf.Variable(tf.zeros([size], tf.float32), name="gap", **shared)

    def _flat_buckets(self, ids: tf.Tensor) -> tf.Tensor:
        """Flat bucket index of every id under every hash: ``[n]`` -> ``[num_hashes, n]`` int64."""
        ids = tf.cast(tf.reshape(ids, [-1]), tf.int64)
        hashed = tf.math.floormod(
            self._hash_a[:, None] * ids[None, :] + self._hash_b[:, None], _PRIME
        )
        offsets = tf.range(self.num_hashes, dtype=tf.int64)[:, None] * self.num_buckets
        return tf.math.floormod(hashed, self.num_buckets) + offsets

    def update(self, ids: tf.Tensor) -> None:
        """Observe this replica's ids ``[n]`` (int, >= 0): the global batch, in replica order.

        Equivalent to the reference loop over the concatenated batches of all replicas.
        """
        ids = tf.reshape(ids, [-1])
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            ids = context.all_gather(ids, axis=0)
        n = tf.size(ids, out_type=tf.int64)
        # Stream positions 1-based: the i-th example of this batch is at step + 1 + i.
        positions = self.step + 1 + tf.range(n, dtype=tf.int64)
        buckets = tf.reshape(self._flat_buckets(ids), [-1])  # [num_hashes * n]
        positions = tf.tile(positions, [self.num_hashes])

        # Sort occurrences by bucket (stable, so positions stay increasing inside a bucket) and
        # cut them into segments, one per distinct bucket.
        order = tf.argsort(buckets, stable=True)
        buckets = tf.gather(buckets, order)
        positions = tf.gather(positions, order)
        total = tf.shape(buckets)[0]
        # (The slices [:total] keep an empty batch well-formed.)
        is_first = tf.concat([[True], buckets[1:] != buckets[:-1]], axis=0)[:total]
        segment = tf.cumsum(tf.cast(is_first, tf.int32)) - 1
        unique_buckets = tf.boolean_mask(buckets, is_first)
        first_index = tf.boolean_mask(tf.range(total), is_first)
        count = tf.math.segment_sum(tf.ones([total], tf.float32), segment)
        rank = tf.cast(tf.range(total) - tf.gather(first_index, segment), tf.float32)

        old_last = tf.gather(self.last_seen, unique_buckets)
        old_gap = tf.gather(self.gap, unique_buckets)
        seen = old_gap > 0
        previous = tf.where(
            is_first,
            tf.gather(old_last, segment),
            tf.concat([tf.zeros([1], tf.int64), positions[:-1]], axis=0)[:total],
        )
        observed = tf.cast(positions - previous, tf.float32)

        # Unrolling the EMA over a segment's c occurrences (ranks r = 0..c-1):
        #   B_c = d^c B_0 + sum_r alpha d^(c-1-r) gap_r,   d = 1 - alpha,
        # except that an unseen bucket starts at its first gap: B_1 = gap_0.
        decay = 1.0 - self.alpha
        count_e = tf.gather(count, segment)
        seen_e = tf.gather(seen, segment)
        weight = tf.pow(decay, count_e - 1.0 - rank)
        weight = tf.where(seen_e | (rank > 0), self.alpha * weight, weight)
        new_gap = tf.where(seen, tf.pow(decay, count) * old_gap, 0.0) + tf.math.segment_sum(
            weight * observed, segment
        )
        new_last = tf.math.segment_max(positions, segment)

        self.gap.scatter_update(tf.IndexedSlices(new_gap, unique_buckets))
        self.last_seen.scatter_update(tf.IndexedSlices(new_last, unique_buckets))
        self.step.assign_add(n)

    def probability(self, ids: tf.Tensor) -> tf.Tensor:
        """Estimated per-example probability of each id: ``ids: [n]`` -> ``[n]`` float32.

        An id never seen gets ``1 / step`` (it occurred at most once in the stream so far).
        """
        gap = tf.reduce_max(tf.gather(self.gap, self._flat_buckets(ids)), axis=0)
        unseen = 1.0 / tf.cast(tf.maximum(self.step, 1), tf.float32)
        return tf.where(gap > 0, 1.0 / tf.maximum(gap, 1e-12), unseen)

    def update_and_probability(self, ids: tf.Tensor) -> tf.Tensor:
        """:meth:`update` with ``ids: [n]``, then their probabilities ``[n]`` float32."""
        # Eager runs in program order, and tf.function orders the reads of the variables
        # after the writes (automatic control dependencies on the same resources).
        self.update(ids)
        return self.probability(ids)

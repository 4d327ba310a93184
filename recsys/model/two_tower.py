"""The two-tower retrieval model: towers, in-batch softmax with logQ correction, embedding.

The loss is TFRS's :class:`~tensorflow_recommenders.tasks.Retrieval`: every query's softmax
runs over the batch's candidates (plus, optionally, uniform samples from the corpus: mixed
negative sampling, Yang et al. 2020), with a temperature, the logQ correction from the
streaming frequency estimate (Yi et al. 2019) and accidental hits removed. The loss is the
mean over the *global* batch, so it is comparable across batch sizes and replica counts.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys.config import ModelConfig, TrainConfig
from recsys.features import contract as F
from recsys.model.frequency import FrequencyEstimator
from recsys.model.towers import CandidateTower, QueryTower, VocabSizes, build_towers

log = logging.getLogger(__name__)

Features = Mapping[str, Any]

SECONDS_PER_DAY = 86_400
# What TFRS's Retrieval task puts in masked-out logits.
_MIN_LOGIT = float(np.finfo(np.float32).min) / 100.0


@contextlib.contextmanager
def _float32_policy() -> Iterator[None]:
    """Build layers in float32 even when the global policy is mixed precision."""
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


def _num_replicas() -> int:
    """Replicas that each compute a share of the global batch (1 outside a strategy run)."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


class TwoTowerModel(tfrs.models.Model):
    """Query tower + candidate tower + retrieval task; TFRS-style ``compute_loss``.

    ``candidate_corpus`` (needed when ``config.num_uniform_negatives > 0``) holds the
    candidate features of every video that may be sampled as an extra negative: a dict of
    arrays ``[N, ...]`` with the :data:`recsys.features.contract.CANDIDATE_FEATURES` the candidate
    tower reads, and optionally ``item_index [N]`` (defaults to ``0..N-1``). It is kept as
    constants on the host CPU and sampled rows are gathered there.

    The train and test steps report ``loss`` (this step's mean over the global batch, as TFRS
    does) and ``mean_loss`` (the running mean over all examples since the metrics were last
    reset: the epoch in ``fit``, the whole set in ``evaluate``).

    With ``config.freshness`` the logits are not one matrix product: each (query, candidate)
    pair's freshness term uses the candidate's age at the start of the query's UTC day, and
    candidates uploaded after it are masked out (see :meth:`_freshness_loss`, which applies
    the Retrieval task's steps in the same order). Query times come from ``example_age`` and
    ``reference_time`` (the end of the training window, Unix seconds), upload times from the
    label's ``upload_age`` at its watch (and the corpus' ``upload_age`` at ``reference_time``).
    """

    def __init__(
        self,
        config: ModelConfig,
        sizes: VocabSizes,
        candidate_corpus: Features | None = None,
        name: str = "two_tower",
        reference_time: int | None = None,
    ) -> None:
        super().__init__(name=name)
        self.config = config
        self.sizes = sizes
        # Where the reference time falls within its UTC day (0 = midnight), to find day starts.
        self._day_fraction = ((reference_time or 0) % SECONDS_PER_DAY) / SECONDS_PER_DAY
        towers = build_towers(config, sizes)
        self.query_tower: QueryTower = towers[0]
        self.candidate_tower: CandidateTower = towers[1]
        self.frequency: FrequencyEstimator | None = None
        if config.logq_correction:
            self.frequency = FrequencyEstimator(
                config.frequency_alpha, config.frequency_buckets, config.frequency_hashes
            )
        # The task compares float32 embeddings; under a mixed policy Keras would cast its
        # first input to float16 and the logits would lose the precision the softmax needs.
        # Accidental hits are removed with the task's `score_mask` rather than its
        # `remove_accidental_hits`, whose helper layer is built at call time under the global
        # policy and then fails on float16 labels against float32 logits.
        with _float32_policy():
            self._softmax_loss = tf.keras.losses.CategoricalCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.NONE
            )
            self.mean_loss = tf.keras.metrics.Mean(name="mean_loss")
            self.task = tfrs.tasks.Retrieval(
                loss=self._softmax_loss,
                temperature=config.temperature,
                loss_metrics=None if config.freshness else [self.mean_loss],
            )
        self._corpus: dict[str, tf.Tensor] = {}
        self._corpus_size = 0
        if config.num_uniform_negatives > 0:
            if candidate_corpus is None:
                raise ValueError(
                    f"model.num_uniform_negatives={config.num_uniform_negatives} needs a "
                    "candidate_corpus (the catalog's candidate features) to sample from; pass "
                    "one or set model.num_uniform_negatives=0"
                )
            self._corpus, self._corpus_size = _corpus_constants(candidate_corpus)

    def compute_loss(self, inputs: Features, training: bool = False) -> tf.Tensor:
        """This replica's share of the mean softmax loss over the global batch (scalar).

        ``inputs``: a batch of query and candidate features (``[B, ...]``, see
        :mod:`recsys.features.contract`) and ``item_index [B]``, the label video's catalog row. When
        training, the frequency estimate is first updated with the batch's ``item_index``.
        """
        fresh = self.config.freshness
        # With freshness, the towers' main parts: the freshness coordinate is added per pair.
        query_fn = self.query_tower.main if fresh else self.query_tower
        candidate_fn = self.candidate_tower.main if fresh else self.candidate_tower
        query = query_fn(inputs, training=training)  # [B, d]
        candidates = candidate_fn(inputs, training=training)  # [B, d]
        upload_day = None
        if fresh:
            # Upload times in days relative to the reference time: t - upload_age.
            upload_day = -tf.cast(tf.reshape(inputs[F.EXAMPLE_AGE], [-1]), tf.float64) - tf.cast(
                tf.reshape(inputs[F.UPLOAD_AGE], [-1]), tf.float64
            )
        if F.ITEM_INDEX not in inputs:
            raise KeyError(f"the batch needs {F.ITEM_INDEX!r} (the label's catalog row)")
        item_index = tf.reshape(tf.cast(inputs[F.ITEM_INDEX], tf.int32), [-1])  # [B]
        candidate_ids = item_index

        probability = None  # per-example probability that each candidate is a label
        if self.frequency is not None:
            if training:
                probability = self.frequency.update_and_probability(item_index)
            else:
                probability = self.frequency.probability(item_index)

        num_negatives = self.config.num_uniform_negatives
        if num_negatives > 0:
            sampled_ids, sampled_features = self._sample_corpus(num_negatives)
            sampled = candidate_fn(sampled_features, training=training)  # [M, d]
            candidates = tf.concat([candidates, sampled], axis=0)  # [B + M, d]
            if upload_day is not None:  # the corpus' ages are taken at the reference time
                sampled_upload = -tf.cast(sampled_features[F.UPLOAD_AGE], tf.float64)
                upload_day = tf.concat([upload_day, sampled_upload], axis=0)
            candidate_ids = tf.concat([item_index, sampled_ids], axis=0)
            if self.frequency is not None:
                # Each video's expected number of copies among this replica's candidates:
                # B p (in-batch, as labels) + M / N (uniform); the same video gets the same
                # correction whichever way it entered.
                batch = tf.cast(tf.size(item_index), tf.float32)
                labels = tf.concat([probability, self.frequency.probability(sampled_ids)], 0)
                probability = batch * labels + num_negatives / self._corpus_size

        if probability is not None:
            # Only ratios between candidates matter (the correction shifts every logit of a
            # row by log q_j); dividing by the largest keeps q inside TFRS's clip to [1e-6, 1].
            probability = probability / tf.reduce_max(probability)

        score_mask = None
        if self.config.remove_accidental_hits:
            # A candidate that is the same video as a query's label is not a negative for it
            # (another query in the batch watched it too); the label itself stays.
            different = tf.not_equal(item_index[:, None], candidate_ids[None, :])  # [B, C]
            label = tf.eye(tf.size(item_index), tf.size(candidate_ids), dtype=tf.bool)
            score_mask = different | label

        if upload_day is not None:
            per_example = self._freshness_loss(
                inputs, query, candidates, upload_day, probability, score_mask
            )
        else:
            per_example = self.task(
                query,
                candidates,
                candidate_sampling_probability=probability,
                candidate_ids=candidate_ids,
                compute_metrics=False,
                compute_batch_metrics=False,
                score_mask=score_mask,
            )  # [B]
        # Summed over replicas (as gradients are), this is the mean over the global batch.
        global_batch = tf.cast(tf.size(per_example) * _num_replicas(), tf.float32)
        return tf.reduce_sum(per_example) / tf.maximum(global_batch, 1.0)

    def _freshness_loss(
        self,
        inputs: Features,
        query: tf.Tensor,
        candidates: tf.Tensor,
        upload_day: tf.Tensor,
        probability: tf.Tensor | None,
        score_mask: tf.Tensor | None,
    ) -> tf.Tensor:
        """Per-example softmax loss ``[B]`` with each pair's freshness term.

        ``query: [B, d-1]`` and ``candidates: [C, d-1]`` are the towers' unit main parts;
        ``upload_day: [C]`` the candidates' upload times (days, relative to the reference
        time). A pair's logit is the dot product of ``[cos(phi) q, sin(phi)]`` and
        ``[cos(psi) c, sin(psi)]`` with ``psi`` the candidate's freshness at the start of the
        query's day, the very embeddings a catalog embedded that day gives; then the Retrieval
        task's steps: temperature, logQ correction, masks, softmax cross-entropy.
        """
        example_age = tf.cast(tf.reshape(inputs[F.EXAMPLE_AGE], [-1]), tf.float64)
        fraction = tf.constant(self._day_fraction, tf.float64)
        day_start = tf.floor(fraction - example_age) - fraction  # [B] days
        pair_age = day_start[:, None] - upload_day[None, :]  # [B, C] days
        num_queries, num_candidates = tf.shape(query)[0], tf.shape(candidates)[0]
        label = tf.eye(num_queries, num_candidates, dtype=tf.bool)
        # A video uploaded after the day started is not in that day's catalog.
        mask = (pair_age > 0) | label
        if score_mask is not None:
            mask &= score_mask
        sin_psi = self.candidate_tower.freshness(tf.cast(tf.maximum(pair_age, 0.0), tf.float32))
        cos_psi = tf.sqrt(tf.maximum(1.0 - tf.square(sin_psi), 0.0))
        sin_phi = self.query_tower.freshness_sine()
        cos_phi = tf.sqrt(1.0 - tf.square(sin_phi))
        dots = tf.linalg.matmul(query, candidates, transpose_b=True)  # [B, C]
        scores = (cos_phi * cos_psi * dots + sin_phi * sin_psi) / self.config.temperature
        if probability is not None:
            scores -= tf.math.log(tf.clip_by_value(probability, 1e-6, 1.0))[None, :]
        scores = tf.where(mask, scores, _MIN_LOGIT)
        labels = tf.cast(label, tf.float32)
        loss = self._softmax_loss(y_true=labels, y_pred=scores)
        self.mean_loss.update_state(loss)
        return loss

    def _sample_corpus(self, num: int) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """``num`` corpus rows drawn uniformly with replacement: ids ``[num]`` and features."""
        with tf.device(self._corpus[F.ITEM_INDEX].device):
            rows = tf.random.uniform([num], maxval=self._corpus_size, dtype=tf.int32)
            picked = {name: tf.gather(values, rows) for name, values in self._corpus.items()}
        return picked.pop(F.ITEM_INDEX), picked

    def _regularization_loss(self) -> tf.Tensor:
        """Layer losses, divided among replicas so that their sum counts them once."""
        if not self.losses:
            return tf.constant(0.0)
        return tf.add_n([tf.reduce_sum(x) for x in self.losses]) / _num_replicas()

    def train_step(self, inputs: Features) -> dict[str, tf.Tensor]:
        """TFRS's train step, through ``optimizer.minimize`` so that loss scaling works."""
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization_loss = self._regularization_loss()
            total_loss = loss + regularization_loss
        # A LossScaleOptimizer (mixed_float16) scales the loss and unscales the gradients
        # inside minimize; TFRS's own step calls tape.gradient directly and would skip that.
        self.optimizer.minimize(total_loss, self.trainable_variables, tape=tape)
        metrics = {metric.name: metric.result() for metric in self.metrics}
        metrics.update(loss=loss, regularization_loss=regularization_loss, total_loss=total_loss)
        return metrics

    def test_step(self, inputs: Features) -> dict[str, tf.Tensor]:
        """TFRS's test step with the replica-aware regularization loss."""
        loss = self.compute_loss(inputs, training=False)
        regularization_loss = self._regularization_loss()
        metrics = {metric.name: metric.result() for metric in self.metrics}
        metrics.update(
            loss=loss,
            regularization_loss=regularization_loss,
            total_loss=loss + regularization_loss,
        )
        return metrics


def _corpus_constants(corpus: Features) -> tuple[dict[str, tf.Tensor], int]:
    """Validate the candidate corpus and pin it to the host CPU as constants."""
    columns = {name: np.asarray(corpus[name]) for name in F.CANDIDATE_FEATURES if name in corpus}
    if F.ITEM not in columns:
        raise ValueError(
            f"candidate_corpus needs at least {F.ITEM!r}; got {sorted(corpus)}. Pass the "
            "catalog's candidate features (recsys.features.contract.CANDIDATE_FEATURES)."
        )
    size = len(columns[F.ITEM])
    index = np.asarray(corpus[F.ITEM_INDEX]) if F.ITEM_INDEX in corpus else np.arange(size)
    columns[F.ITEM_INDEX] = index
    bad = {name: len(values) for name, values in columns.items() if len(values) != size}
    if size == 0 or bad:
        raise ValueError(
            f"candidate_corpus columns must all have the same non-zero length; {F.ITEM!r} has "
            f"{size} rows, mismatched: {bad}"
        )
    # Eager constants are captured by reference, not baked into the graph, so a large catalog
    # does not hit the 2 GB GraphDef limit; sampled rows are gathered where they live.
    with tf.device("/cpu:0"):
        tensors = {
            name: tf.constant(values, tf.float32 if values.dtype.kind == "f" else tf.int32)
            for name, values in columns.items()
        }
    return tensors, size


def make_optimizer(config: TrainConfig) -> tf.keras.optimizers.Optimizer:
    """The optimizer named by ``config.optimizer`` at ``config.learning_rate``."""
    if config.optimizer == "adagrad":
        # The loss is a mean, so gradients are small; Keras' default initial accumulator
        # (0.1) would then dominate the first steps' denominators and stall training.
        return tf.keras.optimizers.Adagrad(
            learning_rate=config.learning_rate, initial_accumulator_value=1e-3
        )
    if config.optimizer == "adam":
        return tf.keras.optimizers.Adam(learning_rate=config.learning_rate)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")  # TrainConfig validates it


_INFERENCE: weakref.WeakKeyDictionary[tf.keras.Model, Any] = weakref.WeakKeyDictionary()


def inference_fn(tower: tf.keras.Model) -> Any:
    """``tower(batch, training=False)`` as one tf.function per tower, traced once.

    A new ``tf.function`` per call (every epoch's validation) retraces every time, and
    TensorFlow warns about it; the function holds the tower weakly, so it dies with it.
    """
    fn = _INFERENCE.get(tower)
    if fn is None:
        ref = weakref.ref(tower)

        def call(batch: Features) -> tf.Tensor:
            model = ref()
            assert model is not None  # the entry dies with the tower
            return model(batch, training=False)

        fn = tf.function(call, reduce_retracing=True)
        _INFERENCE[tower] = fn
    return fn


def embed_candidates(
    candidate_tower: tf.keras.Model, candidates: Features, batch_size: int = 4096
) -> np.ndarray:
    """Candidate embeddings ``[N, d]`` float32 for a dict of candidate features ``[N, ...]``."""
    size = len(next(iter(candidates.values())))
    if size == 0:
        raise ValueError("no candidates to embed")
    embed = inference_fn(candidate_tower)
    chunks = []
    for start in range(0, size, batch_size):
        batch = {name: values[start : start + batch_size] for name, values in candidates.items()}
        chunks.append(embed(batch).numpy())
    return np.concatenate(chunks, axis=0)

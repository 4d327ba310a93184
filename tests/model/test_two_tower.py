"""Tests for recsys.model.two_tower: the loss by hand, training on a tiny problem, variants."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from recsys.config import ModelConfig, TrainConfig
from recsys.features import contract as F
from recsys.index.recall import recall_at_k
from recsys.index.top_k import exact_top_k
from recsys.model.frequency import NumpyFrequencyEstimator
from recsys.model.towers import VocabSizes
from recsys.model.two_tower import TwoTowerModel, embed_candidates, make_optimizer

# A tiny world: 200 videos in 20 groups of 10 (group = row % 20). A query's history holds three
# videos of its label's group, so the best possible top 10 is exactly that group.
NUM_ITEMS, GROUPS, BATCH = 200, 20, 64
SIZES = VocabSizes(
    num_items=NUM_ITEMS + 2,
    num_tokens=30,
    num_countries=5,
    num_regions=4,
    num_genders=3,
    num_channels=9,
    num_categories=7,
    content_dim=8,
)
CONFIG = ModelConfig(
    item_embedding_dim=16,
    token_embedding_dim=8,
    geo_embedding_dim=4,
    gender_embedding_dim=2,
    channel_embedding_dim=4,
    category_embedding_dim=4,
    content_projection_dim=4,
    query_layers=(32, 16),
    candidate_layers=(32, 16),
    frequency_buckets=256,
)
Batch = dict[str, np.ndarray]


def _catalog(rng: np.random.Generator) -> Batch:
    """Candidate features of every video, row r = catalog row r (item vocab index r + 2)."""
    rows = np.arange(NUM_ITEMS)
    return {
        F.ITEM: (rows + 2).astype(np.int32),
        F.CHANNEL: (rows % 7 + 2).astype(np.int32),
        F.CATEGORY: (rows % 5 + 2).astype(np.int32),
        F.TITLE_TOKENS: rng.integers(0, 30, size=(NUM_ITEMS, 4)).astype(np.int32),
        F.UPLOAD_AGE: rng.uniform(0, 100, NUM_ITEMS).astype(np.float32),
        F.CONTENT_EMBEDDING: rng.normal(size=(NUM_ITEMS, 8)).astype(np.float32),
        F.ITEM_INDEX: rows.astype(np.int32),
    }


def _examples(rng: np.random.Generator, n: int, catalog: Batch) -> tuple[Batch, np.ndarray]:
    """``n`` training examples (query + label features) and their label rows."""
    label = rng.integers(0, NUM_ITEMS, n)
    group_mates = label[:, None] % GROUPS + GROUPS * rng.integers(0, NUM_ITEMS // GROUPS, (n, 3))
    history = np.concatenate([group_mates + 2, np.zeros((n, 2), np.int64)], axis=1)
    batch = {
        F.HISTORY: history.astype(np.int32),
        F.SEARCH_TOKENS: rng.integers(0, 30, (n, 5)).astype(np.int32),
        F.COUNTRY: rng.integers(0, 5, n).astype(np.int32),
        F.REGION: rng.integers(0, 4, n).astype(np.int32),
        F.GENDER: rng.integers(0, 3, n).astype(np.int32),
        F.AGE: rng.uniform(10, 80, n).astype(np.float32),
        F.AGE_KNOWN: rng.integers(0, 2, n).astype(np.float32),
        F.EXAMPLE_AGE: rng.uniform(0, 30, n).astype(np.float32),
        F.LAST_SEARCH_TOKENS: rng.integers(0, 30, (n, 2)).astype(np.int32),
        F.SINCE_LAST_WATCH: rng.uniform(0, 600, n).astype(np.float32),
        F.SINCE_LAST_SEARCH: rng.uniform(0, 600, n).astype(np.float32),
    }
    batch.update({name: values[label] for name, values in catalog.items()})
    return batch, label


@pytest.fixture(scope="module")
def world() -> tuple[Batch, Batch, Batch, np.ndarray]:
    """(catalog, training examples, test examples, test label rows)."""
    rng = np.random.default_rng(0)
    catalog = _catalog(rng)
    train, _ = _examples(rng, BATCH * 100, catalog)
    test, test_labels = _examples(rng, 500, catalog)
    return catalog, train, test, test_labels


def _fit(
    config: ModelConfig, catalog: Batch, train: Batch, epochs: int, steps: int, seed: int = 0
) -> tuple[TwoTowerModel, list[float]]:
    """Build, compile and fit a model from ``seed``; returns it and the per-epoch losses."""
    tf.keras.utils.set_random_seed(seed)
    model = TwoTowerModel(config, SIZES, candidate_corpus=catalog)
    model.compile(optimizer=make_optimizer(TrainConfig(learning_rate=0.1)))
    dataset = tf.data.Dataset.from_tensor_slices(train).batch(BATCH, drop_remainder=True)
    history = model.fit(dataset.repeat(), epochs=epochs, steps_per_epoch=steps, verbose=0)
    return model, [float(x) for x in history.history["loss"]]


def test_training_reduces_loss_and_beats_chance(
    world: tuple[Batch, Batch, Batch, np.ndarray],
) -> None:
    catalog, train, test, test_labels = world
    model, losses = _fit(CONFIG, catalog, train, epochs=3, steps=100)
    # Untrained, every softmax over 64 candidates is near uniform: log(64) = 4.16.
    assert losses[-1] < 0.6 * losses[0], losses
    embeddings = embed_candidates(model.candidate_tower, catalog)
    assert embeddings.shape == (NUM_ITEMS, CONFIG.embedding_dim)
    queries = model.query_tower(test, training=False).numpy()
    ranked, _ = exact_top_k(queries, embeddings, 50)
    recall = {k: recall_at_k(ranked, test_labels, k) for k in (10, 50)}
    # Chance recall@10 = 10 / 200 = 0.05; a perfect model ranks the label's group first: 1.0.
    assert recall[10] > 0.5, recall
    assert recall[50] >= recall[10]


@pytest.mark.parametrize(
    ("logq", "negatives", "accidental"),
    [(True, 0, True), (False, 0, True), (True, 8, True), (False, 8, False)],
)
def test_variants_train(
    world: tuple[Batch, Batch, Batch, np.ndarray], logq: bool, negatives: int, accidental: bool
) -> None:
    catalog, train, _, _ = world
    config = dataclasses.replace(
        CONFIG,
        logq_correction=logq,
        num_uniform_negatives=negatives,
        remove_accidental_hits=accidental,
    )
    model, losses = _fit(config, catalog, train, epochs=1, steps=3)
    assert np.isfinite(losses).all()
    assert (model.frequency is not None) == logq
    if logq:
        assert model.frequency is not None
        assert int(model.frequency.step.numpy()) == 3 * BATCH  # updated once per example


def test_fixed_seed_gives_identical_losses(world: tuple[Batch, Batch, Batch, np.ndarray]) -> None:
    catalog, train, _, _ = world
    config = dataclasses.replace(CONFIG, num_uniform_negatives=8)  # random sampling included
    _, first = _fit(config, catalog, train, epochs=4, steps=1, seed=7)
    _, second = _fit(config, catalog, train, epochs=4, steps=1, seed=7)
    assert first == second  # bit for bit on CPU
    _, other = _fit(config, catalog, train, epochs=4, steps=1, seed=8)
    assert other != first


def _softmax_loss(scores: np.ndarray) -> float:
    """Mean cross-entropy of rows ``scores: [B, C]`` whose positive is the diagonal."""
    top = scores.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(scores - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_z - np.diag(scores[:, : len(scores)])))


@pytest.mark.parametrize("negatives", [0, 2])
def test_loss_by_hand(world: tuple[Batch, Batch, Batch, np.ndarray], negatives: int) -> None:
    catalog, train, _, _ = world
    labels = np.array([0, 1, 0, 2])  # rows 0 and 2 share a label: an accidental hit each
    batch = {name: values[labels] for name, values in catalog.items()}
    batch.update({name: values[:4] for name, values in train.items() if name in F.QUERY_FEATURES})
    # A one-video corpus (catalog row 5) makes the "uniform" negatives deterministic.
    corpus = {name: values[5:6] for name, values in catalog.items()}
    config = dataclasses.replace(CONFIG, temperature=0.5, num_uniform_negatives=negatives)
    model = TwoTowerModel(config, SIZES, candidate_corpus=corpus)
    loss = float(model.compute_loss(batch, training=True).numpy())

    query = model.query_tower(batch).numpy()
    candidates = model.candidate_tower(batch).numpy()
    ids = labels
    reference = NumpyFrequencyEstimator(config.frequency_alpha, config.frequency_buckets)
    reference.update(labels)
    # Row 0 twice: p = 1 / gap; 1 and 2 once each: p = 1 / (first position).
    q = reference.probability(labels)
    if negatives:
        sampled = model.candidate_tower(corpus).numpy()
        candidates = np.concatenate([candidates] + [sampled] * negatives)
        ids = np.concatenate([labels, [5] * negatives])
        # Expected copies among the candidates: B p (in batch) + M / N (uniform, N = 1).
        q = np.concatenate([q, reference.probability(np.array([5] * negatives))]) * 4 + negatives
    scores = query @ candidates.T / config.temperature - np.log(q)[None, :]
    accidental = (ids[None, :] == labels[:, None]) & ~np.eye(4, len(ids), dtype=bool)
    scores[accidental] = -np.inf
    assert accidental.sum() == 2  # (0, 2) and (2, 0)
    assert loss == pytest.approx(_softmax_loss(scores), rel=1e-5)


def test_evaluation_does_not_update_the_frequency_estimate(
    world: tuple[Batch, Batch, Batch, np.ndarray],
) -> None:
    catalog, train, _, _ = world
    model = TwoTowerModel(CONFIG, SIZES)
    batch = {name: values[:8] for name, values in train.items()}
    model.compute_loss(batch, training=False)
    assert model.frequency is not None
    assert int(model.frequency.step.numpy()) == 0
    model.compute_loss(batch, training=True)
    assert int(model.frequency.step.numpy()) == 8
    names = {v.name for v in model.non_trainable_variables}
    assert {"step:0", "gap:0", "last_seen:0"} <= names  # checkpointed with the model
    assert catalog  # (fixture used for symmetry)


def test_uniform_negatives_need_a_corpus() -> None:
    config = dataclasses.replace(CONFIG, num_uniform_negatives=4)
    with pytest.raises(ValueError, match="needs a candidate_corpus"):
        TwoTowerModel(config, SIZES)
    with pytest.raises(ValueError, match="same non-zero length"):
        TwoTowerModel(
            config, SIZES, candidate_corpus={F.ITEM: np.arange(3), F.CHANNEL: np.arange(2)}
        )


@pytest.mark.parametrize(
    ("policy", "freshness"),
    [("mixed_float16", False), ("mixed_bfloat16", False), ("mixed_float16", True)],
)
def test_mixed_precision_trains(
    world: tuple[Batch, Batch, Batch, np.ndarray], policy: str, freshness: bool
) -> None:
    catalog, train, _, _ = world
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        config = dataclasses.replace(CONFIG, freshness=freshness)
        model, losses = _fit(config, catalog, train, epochs=1, steps=2)
        loss_scaled = isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
        assert loss_scaled == (policy == "mixed_float16")  # float16 needs loss scaling
        assert model.query_tower.compute_dtype == policy.removeprefix("mixed_")
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(losses).all()
    out = model.query_tower({name: values[:2] for name, values in train.items()})
    assert out.dtype == tf.float32  # logits stay float32 under mixed precision


def test_freshness_loss_by_hand(world: tuple[Batch, Batch, Batch, np.ndarray]) -> None:
    """Each pair's logit uses the candidate's age at the start of the query's day."""
    catalog, train, _, _ = world
    labels = np.array([0, 1, 2, 3])
    batch = {name: values[labels] for name, values in catalog.items()}
    batch.update({name: values[:4] for name, values in train.items() if name in F.QUERY_FEATURES})
    # Days before the reference time (06:00 UTC): queries on the reference day, the day
    # before, and two days before; their labels uploaded 0.1 .. 3 days before the watch.
    batch[F.EXAMPLE_AGE] = np.array([0.1, 0.5, 1.0, 2.2], np.float32)
    batch[F.UPLOAD_AGE] = np.array([0.5, 3.0, 0.1, 1.0], np.float32)
    reference_time = 1_767_225_600 + 6 * 3600
    config = dataclasses.replace(CONFIG, temperature=0.5, freshness=True)
    tf.keras.utils.set_random_seed(3)
    model = TwoTowerModel(config, SIZES, reference_time=reference_time)
    model.candidate_tower(batch)  # build, then give the curve a shape to test against
    curve = model.candidate_tower.freshness.values
    curve.assign(np.linspace(1.5, -1.5, curve.shape[0]).astype(np.float32))
    loss = float(model.compute_loss(batch, training=True).numpy())

    # By hand, in days relative to the reference time, which is 0.25 days past midnight.
    query_time = -batch[F.EXAMPLE_AGE].astype(np.float64)
    day_start = np.floor(query_time + 0.25) - 0.25
    upload = query_time - batch[F.UPLOAD_AGE]
    pair_age = day_start[:, None] - upload[None, :]  # [query, candidate]
    query = model.query_tower(batch).numpy()
    scores = np.empty((4, 4))
    for i in range(4):  # the catalog as embedded at the start of query i's day
        at_day = {**batch, F.UPLOAD_AGE: np.maximum(pair_age[i], 0).astype(np.float32)}
        scores[i] = model.candidate_tower(at_day).numpy() @ query[i]
    assert model.frequency is not None
    reference = NumpyFrequencyEstimator(config.frequency_alpha, config.frequency_buckets)
    reference.update(labels)
    scores = scores / config.temperature - np.log(reference.probability(labels))[None, :]
    not_yet = (pair_age <= 0) & ~np.eye(4, dtype=bool)
    # Candidates 0 and 2 were uploaded after the days of queries 1, 2 and 3 began (label 2 on
    # its own watch day: it stays the positive of its query).
    assert not_yet.sum() == 5
    scores[not_yet] = -np.inf
    assert loss == pytest.approx(_softmax_loss(scores), rel=1e-5)


def test_freshness_trains_deterministically(
    world: tuple[Batch, Batch, Batch, np.ndarray],
) -> None:
    catalog, train, _, _ = world
    config = dataclasses.replace(CONFIG, freshness=True, num_uniform_negatives=8)
    _, first = _fit(config, catalog, train, epochs=3, steps=2, seed=5)
    _, second = _fit(config, catalog, train, epochs=3, steps=2, seed=5)
    assert np.isfinite(first).all()
    assert first == second

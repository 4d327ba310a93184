"""Tests for recsys.model.towers: shapes, unit norm, padding masks, shared tables and ablation
toggles."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from recsys.config import ModelConfig
from recsys.features import contract as F
from recsys.model.towers import (
    CandidateTower,
    QueryTower,
    VocabSizes,
    build_towers,
    days_features,
    masked_mean,
)

B = 4
SIZES = VocabSizes(
    num_items=30,
    num_tokens=20,
    num_countries=5,
    num_regions=4,
    num_genders=3,
    num_channels=6,
    num_categories=5,
    content_dim=3,
)
CONFIG = ModelConfig(
    item_embedding_dim=8,
    token_embedding_dim=4,
    geo_embedding_dim=2,
    gender_embedding_dim=2,
    channel_embedding_dim=2,
    category_embedding_dim=2,
    content_projection_dim=2,
    query_layers=(12, 6),
    candidate_layers=(10, 6),
)


def _batch(seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of B examples with every query and candidate feature; padded windows."""
    rng = np.random.default_rng(seed)
    history = rng.integers(2, SIZES.num_items, size=(B, 5)).astype(np.int32)
    history[:, 3:] = F.PAD  # two padded slots at the end, as features.tail_window builds them
    tokens = rng.integers(2, SIZES.num_tokens, size=(B, 4)).astype(np.int32)
    tokens[:, 2:] = F.PAD
    return {
        F.HISTORY: history,
        F.SEARCH_TOKENS: tokens,
        F.COUNTRY: rng.integers(0, SIZES.num_countries, B).astype(np.int32),
        F.REGION: rng.integers(0, SIZES.num_regions, B).astype(np.int32),
        F.GENDER: rng.integers(0, SIZES.num_genders, B).astype(np.int32),
        F.AGE: np.array([25.0, 0.0, 61.0, 40.0], np.float32),
        F.AGE_KNOWN: np.array([1.0, 0.0, 1.0, 1.0], np.float32),
        F.EXAMPLE_AGE: np.array([0.0, 1.0, 30.0, 400.0], np.float32),
        F.LAST_SEARCH_TOKENS: tokens[:, :3],
        F.SINCE_LAST_WATCH: np.array([0.5, 20.0, 600.0, F.MAX_GAP_MINUTES], np.float32),
        F.SINCE_LAST_SEARCH: np.array([F.MAX_GAP_MINUTES, 3.0, 45.0, 1.0], np.float32),
        F.ITEM: rng.integers(1, SIZES.num_items, B).astype(np.int32),
        F.CHANNEL: rng.integers(0, SIZES.num_channels, B).astype(np.int32),
        F.CATEGORY: rng.integers(0, SIZES.num_categories, B).astype(np.int32),
        F.TITLE_TOKENS: np.array([[3, 4, 0], [5, 0, 0], [0, 0, 0], [6, 7, 8]], np.int32),
        F.UPLOAD_AGE: np.array([0.0, 2.0, 10.0, 1000.0], np.float32),
        F.CONTENT_EMBEDDING: rng.normal(size=(B, 3)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def towers() -> tuple[QueryTower, CandidateTower]:
    """One pair of towers built from CONFIG and SIZES, sharing their tables."""
    tf.keras.utils.set_random_seed(1)
    return build_towers(CONFIG, SIZES)


def test_masked_mean_by_hand() -> None:
    embeddings = tf.constant(
        [[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]], [[5.0, 6.0], [7.0, 8.0], [1.0, 1.0]]]
    )
    ids = tf.constant([[3, 4, 0], [0, 0, 0]])
    # Row 0: mean of the first two rows = [2, 3]; row 1 is all padding -> zeros.
    np.testing.assert_allclose(masked_mean(embeddings, ids).numpy(), [[2.0, 3.0], [0.0, 0.0]])


def test_days_features_by_hand() -> None:
    # x = log1p(days) / log1p(365): 0 days -> x = 0; 365 days -> x = 1, so x^2 = sqrt(x) = 1.
    out = days_features(tf.constant([0.0, 365.0, -5.0])).numpy()
    np.testing.assert_allclose(out, [[0, 0, 0], [1, 1, 1], [0, 0, 0]], atol=1e-6)


def test_shapes_and_unit_norm(towers: tuple[QueryTower, CandidateTower]) -> None:
    query_tower, candidate_tower = towers
    batch = _batch()
    for out in (query_tower(batch), candidate_tower(batch)):
        assert out.shape == (B, CONFIG.embedding_dim)  # [4, 6]
        assert out.dtype == tf.float32
        np.testing.assert_allclose(np.linalg.norm(out.numpy(), axis=1), np.ones(B), rtol=1e-5)


def test_towers_share_item_and_token_tables(towers: tuple[QueryTower, CandidateTower]) -> None:
    query_tower, candidate_tower = towers
    assert query_tower.item_embedding is candidate_tower.item_embedding
    assert query_tower.token_embedding is candidate_tower.token_embedding


def test_padding_only_history_equals_empty_history(
    towers: tuple[QueryTower, CandidateTower],
) -> None:
    query_tower, _ = towers
    padded = _batch()
    padded[F.HISTORY] = np.zeros((B, 5), np.int32)
    padded[F.SEARCH_TOKENS] = np.zeros((B, 4), np.int32)
    empty = dict(padded)
    empty[F.HISTORY] = np.zeros((B, 0), np.int32)
    empty[F.SEARCH_TOKENS] = np.zeros((B, 0), np.int32)
    np.testing.assert_allclose(query_tower(padded).numpy(), query_tower(empty).numpy(), atol=1e-6)


def test_padded_slots_are_masked(towers: tuple[QueryTower, CandidateTower]) -> None:
    query_tower, candidate_tower = towers
    batch = _batch()
    before_query = query_tower(batch).numpy()
    before_candidate = candidate_tower(batch).numpy()

    # Longer padding does not change the bags.
    wider = dict(batch)
    wider[F.HISTORY] = np.pad(batch[F.HISTORY], ((0, 0), (0, 3)))
    wider[F.TITLE_TOKENS] = np.pad(batch[F.TITLE_TOKENS], ((0, 0), (0, 2)))
    np.testing.assert_allclose(query_tower(wider).numpy(), before_query, atol=1e-6)
    np.testing.assert_allclose(candidate_tower(wider).numpy(), before_candidate, atol=1e-6)

    # Whatever the PAD rows of the tables hold, padded slots contribute nothing.
    tables = [query_tower.item_embedding, query_tower.token_embedding]
    saved = [t.embeddings.numpy().copy() for t in tables]
    try:
        for table, values in zip(tables, saved, strict=True):
            changed = values.copy()
            changed[F.PAD] = 100.0
            table.embeddings.assign(changed)
        # (batch[ITEM] is never PAD: the candidate's own id is not a bag.)
        np.testing.assert_allclose(query_tower(batch).numpy(), before_query, atol=1e-6)
        np.testing.assert_allclose(candidate_tower(batch).numpy(), before_candidate, atol=1e-6)
    finally:
        for table, values in zip(tables, saved, strict=True):
            table.embeddings.assign(values)

    # A real (non-padding) history entry does change the output: the test above is not vacuous.
    changed = dict(batch)
    changed[F.HISTORY] = batch[F.HISTORY].copy()
    changed[F.HISTORY][:, 0] = np.where(changed[F.HISTORY][:, 0] == 7, 8, 7)
    assert not np.allclose(query_tower(changed).numpy(), before_query, atol=1e-4)


def _small(**toggles: bool) -> ModelConfig:
    return dataclasses.replace(CONFIG, **toggles)


def test_use_searches_false_ignores_search_tokens() -> None:
    tf.keras.utils.set_random_seed(2)
    with_searches = QueryTower(CONFIG, SIZES)
    without = QueryTower(_small(use_searches=False), SIZES)
    batch, other = _batch(), _batch()
    other[F.SEARCH_TOKENS] = np.full_like(batch[F.SEARCH_TOKENS], 9)
    np.testing.assert_allclose(without(batch).numpy(), without(other).numpy(), atol=1e-6)
    absent = {k: v for k, v in batch.items() if k != F.SEARCH_TOKENS}
    np.testing.assert_allclose(without(absent).numpy(), without(batch).numpy(), atol=1e-6)
    assert not hasattr(without, "token_embedding")
    # The same change moves a tower that does read searches.
    assert not np.allclose(with_searches(batch).numpy(), with_searches(other).numpy(), atol=1e-4)


@pytest.mark.parametrize(
    ("toggle", "names"),
    [
        ("use_demographics", (F.COUNTRY, F.REGION, F.GENDER, F.AGE, F.AGE_KNOWN)),
        ("use_example_age", (F.EXAMPLE_AGE,)),
        ("use_recency", (F.LAST_SEARCH_TOKENS, F.SINCE_LAST_WATCH, F.SINCE_LAST_SEARCH)),
    ],
)
def test_query_toggles_drop_their_inputs(toggle: str, names: tuple[str, ...]) -> None:
    tower = QueryTower(_small(**{toggle: False}), SIZES)
    batch = _batch()
    absent = {k: v for k, v in batch.items() if k not in names}
    np.testing.assert_allclose(tower(absent).numpy(), tower(batch).numpy(), atol=1e-6)
    with pytest.raises(KeyError, match=names[0]):
        QueryTower(CONFIG, SIZES)(absent)  # the full tower does need them


def test_use_content_false_keeps_only_the_id() -> None:
    tower = CandidateTower(_small(use_content=False), SIZES)
    batch = _batch()
    only_id = {F.ITEM: batch[F.ITEM]}
    np.testing.assert_allclose(tower(only_id).numpy(), tower(batch).numpy(), atol=1e-6)


def test_without_content_embedding() -> None:
    no_modality = dataclasses.replace(SIZES, content_dim=None)
    batch = _batch()
    del batch[F.CONTENT_EMBEDDING]
    for tower in (
        CandidateTower(CONFIG, no_modality),
        CandidateTower(_small(use_content_embedding=False), SIZES),
    ):
        out = tower(batch)
        assert out.shape == (B, CONFIG.embedding_dim)
        assert not hasattr(tower, "content_projection")
    with pytest.raises(KeyError, match="content_embedding"):
        CandidateTower(CONFIG, SIZES)(batch)


def test_vocab_sizes_are_validated() -> None:
    with pytest.raises(ValueError, match="num_items must be at least 2"):
        dataclasses.replace(SIZES, num_items=1)
    with pytest.raises(ValueError, match="content_dim must be positive"):
        dataclasses.replace(SIZES, content_dim=0)
    assert SIZES.to_dict()["content_dim"] == 3


def test_item_id_dropout_trains_the_out_of_vocabulary_path() -> None:
    tf.keras.utils.set_random_seed(5)
    tower = CandidateTower(_small(item_id_dropout=0.9), SIZES)
    batch = _batch()
    oov = {**batch, F.ITEM: np.full_like(batch[F.ITEM], F.OOV)}
    by_id = tower(batch, training=False).numpy()
    by_oov = tower(oov, training=False).numpy()
    assert not np.allclose(by_id, by_oov, atol=1e-4)  # the id matters at inference
    dropped = tower(batch, training=True).numpy()
    # each row is either its own id's embedding or the OOV one; at p=0.9 most are OOV
    is_oov = np.isclose(dropped, by_oov, atol=1e-5).all(axis=1)
    is_id = np.isclose(dropped, by_id, atol=1e-5).all(axis=1)
    assert (is_oov | is_id).all()
    assert is_oov.sum() >= 2
    with pytest.raises(ValueError, match="item_id_dropout"):
        _small(item_id_dropout=1.0)


def test_freshness_coordinate() -> None:
    """With freshness, upload age moves only the last coordinate's angle; rows stay unit."""
    config = dataclasses.replace(CONFIG, freshness=True)
    tf.keras.utils.set_random_seed(2)
    query, candidate = build_towers(config, SIZES)
    batch = _batch()
    candidate(batch)
    candidate.freshness.values.assign(np.linspace(-1, 1, candidate.freshness.values.shape[0]))
    q = query(batch).numpy()
    c = candidate(batch).numpy()
    assert q.shape == c.shape == (B, config.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(q[:, -1], 0.5, rtol=1e-5)  # the initial sine
    older = candidate({**batch, F.UPLOAD_AGE: batch[F.UPLOAD_AGE] + 30.0}).numpy()
    assert not np.allclose(older[:, -1], c[:, -1])
    main = candidate.main(batch).numpy()
    np.testing.assert_allclose(
        candidate.main({**batch, F.UPLOAD_AGE: batch[F.UPLOAD_AGE] + 30.0}), main
    )
    # The rest of the row is the main part scaled by the cosine of the freshness angle.
    np.testing.assert_allclose(c[:, :-1], main * np.sqrt(1 - c[:, -1:] ** 2), rtol=1e-5, atol=1e-6)


ATTENTION = dataclasses.replace(CONFIG, history_encoder="attention", history_max_positions=5)


def test_attention_history_reads_the_order_and_masks_padding() -> None:
    tf.keras.utils.set_random_seed(3)
    attention, _ = build_towers(ATTENTION, SIZES)
    tf.keras.utils.set_random_seed(3)
    bag, _ = build_towers(CONFIG, SIZES)
    batch = _batch()
    out = attention(batch).numpy()
    assert out.shape == (B, 6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # the two older watches swapped (the latest, an input of its own, stays): the bag cannot
    # tell, the sequence encoder can
    swapped = dict(batch)
    swapped[F.HISTORY] = batch[F.HISTORY][:, [1, 0, 2, 3, 4]]
    np.testing.assert_allclose(bag(swapped).numpy(), bag(batch).numpy(), atol=1e-6)
    assert not np.allclose(attention(swapped).numpy(), out, atol=1e-4)
    # longer padding (recency positions past the table are clipped) changes nothing, and an
    # all-padding history is an empty one
    wider = dict(batch)
    wider[F.HISTORY] = np.pad(batch[F.HISTORY], ((0, 0), (0, 4)))
    np.testing.assert_allclose(attention(wider).numpy(), out, atol=1e-5)
    padded, empty = dict(batch), dict(batch)
    padded[F.HISTORY] = np.zeros((B, 5), np.int32)
    empty[F.HISTORY] = np.zeros((B, 0), np.int32)
    np.testing.assert_allclose(attention(padded).numpy(), attention(empty).numpy(), atol=1e-6)


def test_history_encoder_config_is_checked() -> None:
    with pytest.raises(ValueError, match="history_encoder must be one of"):
        dataclasses.replace(CONFIG, history_encoder="gru")
    with pytest.raises(ValueError, match=r"item_embedding_dim \(8\) must be divisible"):
        dataclasses.replace(ATTENTION, history_attention_heads=3)

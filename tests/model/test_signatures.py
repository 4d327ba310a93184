"""Raw-feature SavedModel signatures agree with the Python feature code, after a reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from recsys.config import ModelConfig
from recsys.features import contract as F
from recsys.features.context import RequestContext, encode_request
from recsys.features.contract import FeatureConfig
from recsys.features.tables import ItemTable
from recsys.features.vocab import Vocabularies, Vocabulary
from recsys.model.signatures import (
    QUERY_IDS_SIGNATURE,
    FeatureParityError,
    RawCandidateModel,
    RawQueryModel,
    check_query_parity,
    parity_probes,
    save_candidate_model,
    save_query_model,
)
from recsys.model.towers import VocabSizes, build_towers

CONFIG = FeatureConfig(max_history=3, max_searches=2, max_search_tokens=4, max_last_search_tokens=2)
T0 = 1_767_225_600


def vocabs() -> Vocabularies:
    def v(name: str, values: list[str]) -> Vocabulary:
        return Vocabulary(name, values)

    return Vocabularies(
        items=v("items", ["v1", "v2", "v3", "v4"]),
        tokens=v("tokens", ["cat", "café", "dog", "piano", "live"]),
        countries=v("countries", ["US", "DE"]),
        regions=v("regions", ["na", "eu"]),
        genders=v("genders", ["f", "m"]),
        channels=v("channels", ["c1"]),
        categories=v("categories", ["music", "pets"]),
    )


CONTEXTS = [
    RequestContext(
        watch_history=["v1", "nope", "v3", "v2", "v4"],
        searches=["Cat  DOG!", "   ", "Café-dog piano LIVE", "old"],
        country="US",
        region="na",
        gender="m",
        age=30,
        request_time=T0,
    ),
    RequestContext(),  # nothing known: a brand-new anonymous user
    RequestContext(watch_history=["v2"], searches=["unknown words"], country="FR", age=None),
]


@pytest.fixture(scope="module")
def towers() -> tuple[tf.keras.Model, tf.keras.Model]:
    tf.keras.utils.set_random_seed(3)
    v = vocabs()
    sizes = VocabSizes.of(v, content_dim=3)
    config = ModelConfig(query_layers=(16, 8), candidate_layers=(16, 8), item_embedding_dim=8)
    return build_towers(config, sizes)


def _pad(rows: list[list[str]]) -> np.ndarray:
    width = max(1, *(len(r) for r in rows))
    return np.array([r + [""] * (width - len(r)) for r in rows], dtype=object)


def test_query_signatures_match_the_python_context_code(
    towers: tuple[tf.keras.Model, tf.keras.Model], tmp_path: Path
) -> None:
    query_tower, _ = towers
    save_query_model(RawQueryModel(query_tower, vocabs(), CONFIG), tmp_path / "q")
    loaded = tf.saved_model.load(str(tmp_path / "q"))
    for ctx in CONTEXTS:
        python = encode_request(ctx, vocabs(), CONFIG)
        expected = query_tower(python).numpy()
        by_ids = loaded.signatures[QUERY_IDS_SIGNATURE](**python)["query_embedding"].numpy()
        np.testing.assert_allclose(by_ids, expected, atol=1e-6)
        raw = loaded.signatures["serving_default"](
            history=tf.constant(_pad([list(ctx.watch_history)])),
            searches=tf.constant(_pad([list(ctx.searches)])),
            country=tf.constant([ctx.country or ""]),
            region=tf.constant([ctx.region or ""]),
            gender=tf.constant([ctx.gender or ""]),
            age=tf.constant([float(ctx.age or 0)]),
            example_age=tf.constant([0.0]),
            since_last_watch=tf.constant(python[F.SINCE_LAST_WATCH]),
            since_last_search=tf.constant(python[F.SINCE_LAST_SEARCH]),
        )["query_embedding"].numpy()
        np.testing.assert_allclose(raw, expected, atol=1e-6)


def test_raw_query_features_equal_encoded_ones(
    towers: tuple[tf.keras.Model, tf.keras.Model],
) -> None:
    module = RawQueryModel(towers[0], vocabs(), CONFIG)
    ctx = CONTEXTS[0]
    python = encode_request(ctx, vocabs(), CONFIG)
    # by hand: known history v1 v3 v2 v4 -> last 3 = v3 v2 v4 = ids 4 3 5; the blank search is
    # dropped; the last 2 searches "Café-dog piano LIVE" + "old" -> café dog piano live OOV,
    # last 4 tokens = dog piano live OOV = 4 5 6 1; the latest search alone: "old" -> OOV
    assert python[F.HISTORY].tolist() == [[4, 3, 5]]
    assert python[F.SEARCH_TOKENS].tolist() == [[4, 5, 6, 1]]
    assert python[F.LAST_SEARCH_TOKENS].tolist() == [[1, 0]]
    tf_feats = module.features(
        tf.constant(_pad([list(ctx.watch_history)])),
        tf.constant(_pad([list(ctx.searches)])),
        tf.constant(["US"]),
        tf.constant(["na"]),
        tf.constant(["m"]),
        tf.constant([30.0]),
        tf.constant([0.0]),
        tf.constant(python[F.SINCE_LAST_WATCH]),
        tf.constant(python[F.SINCE_LAST_SEARCH]),
    )
    for name in F.QUERY_FEATURES:
        np.testing.assert_array_equal(tf_feats[name].numpy(), python[name], err_msg=name)


def test_candidate_signature_matches_the_item_table(
    towers: tuple[tf.keras.Model, tf.keras.Model], tmp_path: Path
) -> None:
    _, candidate_tower = towers
    items = pd.DataFrame(
        {
            "item_id": ["v1", "v9", "v3"],
            "channel": ["c1", None, "zz"],
            "category": ["music", "pets", None],
            "title": ["Cat café LIVE piano dog cat", None, "dog"],
            "upload_time": [T0 - 86_400, T0, T0 + 10],
        }
    )
    content = np.arange(9, dtype=np.float32).reshape(3, 3) / 9
    config = FeatureConfig(max_title_tokens=4)
    table = ItemTable.build(items, content, vocabs(), config)
    expected = candidate_tower(table.features(np.arange(3), T0)).numpy()
    save_candidate_model(RawCandidateModel(candidate_tower, vocabs(), config, 3), tmp_path / "c")
    serve = tf.saved_model.load(str(tmp_path / "c")).signatures["serving_default"]
    raw = serve(
        item_id=tf.constant(items["item_id"].tolist()),
        channel=tf.constant(items["channel"].fillna("").tolist()),
        category=tf.constant(items["category"].fillna("").tolist()),
        title=tf.constant(items["title"].fillna("").tolist()),
        upload_age=tf.constant(
            np.maximum(T0 - items["upload_time"].to_numpy(), 0) / 86_400.0, tf.float32
        ),
        content_embedding=tf.constant(content),
    )["candidate_embedding"].numpy()
    np.testing.assert_allclose(raw, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("attribute", "feature"),
    [("max_searches", F.SEARCH_TOKENS), ("max_history", F.HISTORY)],
)
def test_saving_refuses_rules_that_disagree_with_the_encoder(
    towers: tuple[tf.keras.Model, tf.keras.Model], tmp_path: Path, attribute: str, feature: str
) -> None:
    module = RawQueryModel(towers[0], vocabs(), CONFIG)
    check_query_parity(module)  # the rules as written agree
    setattr(module, attribute, getattr(CONFIG, attribute) + 1)  # a deliberate divergence
    with pytest.raises(FeatureParityError, match=repr(feature)):
        save_query_model(module, tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_parity_catches_a_token_rule_that_differs(
    towers: tuple[tf.keras.Model, tf.keras.Model], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TensorFlow split that keeps underscores inside tokens is not the encoder's rule."""
    from recsys.model import signatures

    monkeypatch.setattr(signatures, "TF_TOKEN_SPLIT", r"[^\pL\pN_]+")
    with pytest.raises(FeatureParityError, match="search_tokens"):
        check_query_parity(RawQueryModel(towers[0], vocabs(), CONFIG))


def test_probes_cover_the_edge_cases() -> None:
    probes = parity_probes(vocabs(), CONFIG)
    assert any(not p.history and not p.searches for p in probes)  # an empty context
    assert any(len(p.history) > CONFIG.max_history for p in probes)  # a sliding window
    assert any(len(p.searches) > CONFIG.max_searches for p in probes)
    known = set(vocabs().items.values)
    assert any(h not in known for p in probes for h in p.history)  # unknown videos
    assert any(p.searches and not p.searches[-1].strip() for p in probes)  # a blank last search

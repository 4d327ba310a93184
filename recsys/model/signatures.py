"""SavedModels whose serving signatures take raw features (strings, numbers), not ids.

The vocabularies travel inside the SavedModel as lookup tables, and the raw-to-id rules are
the ones of :mod:`recsys.features.context` and :mod:`recsys.features.tables` written in TensorFlow:
unknown
history videos and blank searches are dropped, the last ``max_history`` watches and the
tokens of the last ``max_searches`` searches are kept. Tests check both paths agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tensorflow as tf

from recsys.features import contract as F
from recsys.features.contract import TF_TOKEN_SPLIT, FeatureConfig
from recsys.features.vocab import RESERVED, Vocabularies, Vocabulary

QUERY_SIGNATURE = "serving_default"
QUERY_IDS_SIGNATURE = "serve_ids"
CANDIDATE_SIGNATURE = "serving_default"


def _table(vocab: Vocabulary) -> tf.lookup.StaticHashTable:
    keys = tf.constant(vocab.values or ["\x00unused"], dtype=tf.string)
    values = tf.range(len(RESERVED), len(RESERVED) + tf.size(keys), dtype=tf.int64)
    init = tf.lookup.KeyValueTensorInitializer(keys, values)
    return tf.lookup.StaticHashTable(init, default_value=F.OOV)


def _ids(table: tf.lookup.StaticHashTable, values: Any) -> Any:
    """Vocabulary ids of a string tensor: 0 for "", 1 for unknown (as Vocabulary.lookup)."""
    ids = table.lookup(values)
    return tf.where(tf.equal(values, ""), tf.constant(F.PAD, tf.int64), ids)


def _tokens(texts: Any) -> Any:
    """Tokenise a 1-D string tensor like :func:`recsys.features.contract.tokenize`: ragged [n,
    (t)]."""
    lowered = tf.strings.lower(texts, encoding="utf-8")
    spaced = tf.strings.regex_replace(lowered, TF_TOKEN_SPLIT, " ")
    return tf.strings.split(tf.strings.strip(spaced))


def _dense(ragged: Any, width: int) -> Any:
    return tf.cast(ragged.to_tensor(default_value=F.PAD, shape=[None, width]), tf.int32)


def query_id_signature(config: FeatureConfig) -> dict[str, tf.TensorSpec]:
    """``tf.TensorSpec`` of every id-level query feature (the contract of
    recsys.features.contract)."""

    def ints(*shape: int) -> tf.TensorSpec:
        return tf.TensorSpec((None, *shape), tf.int32)

    def floats() -> tf.TensorSpec:
        return tf.TensorSpec((None,), tf.float32)

    return {
        F.HISTORY: ints(config.max_history),
        F.SEARCH_TOKENS: ints(config.max_search_tokens),
        F.COUNTRY: ints(),
        F.REGION: ints(),
        F.GENDER: ints(),
        F.AGE: floats(),
        F.AGE_KNOWN: floats(),
        F.EXAMPLE_AGE: floats(),
        F.LAST_SEARCH_TOKENS: ints(config.max_last_search_tokens),
        F.SINCE_LAST_WATCH: floats(),
        F.SINCE_LAST_SEARCH: floats(),
    }


class RawQueryModel(tf.Module):
    """Query tower behind two signatures: raw features (:meth:`serve`) and ids (``serve_ids``).

    ``serve_ids`` takes exactly the features :func:`recsys.features.context.encode_request` builds,
    so a Python server shares the training pipeline's context code; ``serve`` does the same
    rules inside TensorFlow for callers that only have strings.
    """

    def __init__(self, query_tower: Any, vocabs: Vocabularies, config: FeatureConfig) -> None:
        super().__init__()
        self.query_tower = query_tower
        self.items = _table(vocabs.items)
        self.tokens = _table(vocabs.tokens)
        self.countries = _table(vocabs.countries)
        self.regions = _table(vocabs.regions)
        self.genders = _table(vocabs.genders)
        self.max_history = config.max_history
        self.max_searches = config.max_searches
        self.max_search_tokens = config.max_search_tokens
        self.max_last_search_tokens = config.max_last_search_tokens
        specs = query_id_signature(config)
        signature = [
            tf.TensorSpec(specs[n].shape, specs[n].dtype, name=n) for n in F.QUERY_FEATURES
        ]
        self.serve_ids = tf.function(self._serve_ids, input_signature=signature)

    def _serve_ids(
        self,
        history: Any,
        search_tokens: Any,
        country: Any,
        region: Any,
        gender: Any,
        age: Any,
        age_known: Any,
        example_age: Any,
        last_search_tokens: Any,
        since_last_watch: Any,
        since_last_search: Any,
    ) -> dict[str, Any]:
        """Query embeddings ``[B, d]`` from id features, named as in recsys.features.contract."""
        values = (
            history,
            search_tokens,
            country,
            region,
            gender,
            age,
            age_known,
            example_age,
            last_search_tokens,
            since_last_watch,
            since_last_search,
        )
        features = dict(zip(F.QUERY_FEATURES, values, strict=True))
        return {"query_embedding": self.query_tower(features, training=False)}

    def _search_ids(self, searches: Any, keep: int, width: int) -> Any:
        """Token ids of the last ``keep`` searches, flattened, the last ``width`` of them."""
        words = _tokens(searches.flat_values)
        token_ids = words.with_flat_values(_ids(self.tokens, words.flat_values))
        per_user = searches[:, -keep:].with_flat_values(token_ids).merge_dims(1, 2)
        return _dense(per_user[:, -width:], width)

    def features(
        self,
        history: Any,
        searches: Any,
        country: Any,
        region: Any,
        gender: Any,
        age: Any,
        example_age: Any,
        since_last_watch: Any,
        since_last_search: Any,
    ) -> dict[str, Any]:
        """Id features from raw ones (the rules of
        :func:`recsys.features.context.encode_request`)."""
        ids = _ids(self.items, history)
        known = tf.ragged.boolean_mask(ids, ids > F.OOV)
        history_ids = _dense(known[:, -self.max_history :], self.max_history)
        nonblank = tf.ragged.boolean_mask(searches, tf.strings.strip(searches) != "")
        recent = nonblank[:, -self.max_searches :]
        latest = nonblank[:, -1:]
        age = tf.where(tf.math.is_nan(age), tf.zeros_like(age), age)
        known_age = tf.cast(age > 0, tf.float32)
        cap = tf.constant(F.MAX_GAP_MINUTES, tf.float32)
        return {
            F.HISTORY: history_ids,
            F.SEARCH_TOKENS: self._search_ids(recent, self.max_searches, self.max_search_tokens),
            F.COUNTRY: tf.cast(_ids(self.countries, country), tf.int32),
            F.REGION: tf.cast(_ids(self.regions, region), tf.int32),
            F.GENDER: tf.cast(_ids(self.genders, gender), tf.int32),
            F.AGE: age * known_age,
            F.AGE_KNOWN: known_age,
            F.EXAMPLE_AGE: example_age,
            F.LAST_SEARCH_TOKENS: self._search_ids(latest, 1, self.max_last_search_tokens),
            F.SINCE_LAST_WATCH: tf.clip_by_value(since_last_watch, 0.0, cap),
            F.SINCE_LAST_SEARCH: tf.clip_by_value(since_last_search, 0.0, cap),
        }

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.string, name="history"),
            tf.TensorSpec([None, None], tf.string, name="searches"),
            tf.TensorSpec([None], tf.string, name="country"),
            tf.TensorSpec([None], tf.string, name="region"),
            tf.TensorSpec([None], tf.string, name="gender"),
            tf.TensorSpec([None], tf.float32, name="age"),
            tf.TensorSpec([None], tf.float32, name="example_age"),
            tf.TensorSpec([None], tf.float32, name="since_last_watch"),
            tf.TensorSpec([None], tf.float32, name="since_last_search"),
        ]
    )
    def serve(
        self,
        history: Any,
        searches: Any,
        country: Any,
        region: Any,
        gender: Any,
        age: Any,
        example_age: Any,
        since_last_watch: Any,
        since_last_search: Any,
    ) -> dict[str, Any]:
        """Query embeddings ``[B, d]`` from raw context.

        ``history: [B, H]`` video ids oldest first, padded with ""; ``searches: [B, S]``
        query texts oldest first, padded with ""; ``country/region/gender: [B]`` ("" when
        unknown); ``age: [B]`` years (<= 0 or NaN when unknown); ``example_age: [B]``
        days (0 at serving); ``since_last_watch/search: [B]`` minutes since the latest
        watch/search (525600, a year, when there is none).
        """
        feats = self.features(
            history,
            searches,
            country,
            region,
            gender,
            age,
            example_age,
            since_last_watch,
            since_last_search,
        )
        return {"query_embedding": self.query_tower(feats, training=False)}


class RawCandidateModel(tf.Module):
    """Candidate tower behind a raw-feature signature (see :meth:`serve`)."""

    def __init__(
        self,
        candidate_tower: Any,
        vocabs: Vocabularies,
        config: FeatureConfig,
        content_dim: int | None,
    ) -> None:
        super().__init__()
        self.candidate_tower = candidate_tower
        self.items = _table(vocabs.items)
        self.tokens = _table(vocabs.tokens)
        self.channels = _table(vocabs.channels)
        self.categories = _table(vocabs.categories)
        self.max_title_tokens = config.max_title_tokens
        self.content_dim = content_dim
        signature = [
            tf.TensorSpec([None], tf.string, name="item_id"),
            tf.TensorSpec([None], tf.string, name="channel"),
            tf.TensorSpec([None], tf.string, name="category"),
            tf.TensorSpec([None], tf.string, name="title"),
            tf.TensorSpec([None], tf.float32, name="upload_age"),
        ]
        if content_dim is not None:
            signature.append(
                tf.TensorSpec([None, content_dim], tf.float32, name="content_embedding")
            )
        self.serve = tf.function(self._serve, input_signature=signature)

    def features(
        self,
        item_id: Any,
        channel: Any,
        category: Any,
        title: Any,
        upload_age: Any,
        content_embedding: Any = None,
    ) -> dict[str, Any]:
        """Id features from raw ones (the rules of :class:`recsys.features.tables.ItemTable`)."""
        words = _tokens(title)
        ids = words.with_flat_values(_ids(self.tokens, words.flat_values))
        feats = {
            F.ITEM: tf.cast(_ids(self.items, item_id), tf.int32),
            F.CHANNEL: tf.cast(_ids(self.channels, channel), tf.int32),
            F.CATEGORY: tf.cast(_ids(self.categories, category), tf.int32),
            F.TITLE_TOKENS: _dense(ids[:, : self.max_title_tokens], self.max_title_tokens),
            F.UPLOAD_AGE: tf.maximum(upload_age, 0.0),
        }
        if content_embedding is not None:
            feats[F.CONTENT_EMBEDDING] = content_embedding
        return feats

    def _serve(self, *args: Any) -> dict[str, Any]:
        """Candidate embeddings ``[B, d]`` from raw video features.

        ``item_id, channel, category, title: [B]`` strings ("" when unknown);
        ``upload_age: [B]`` days since upload; ``content_embedding: [B, content_dim]`` when
        the model uses content.
        """
        feats = self.features(*args)
        return {"candidate_embedding": self.candidate_tower(feats, training=False)}


def save_query_model(module: RawQueryModel, path: str | Path) -> None:
    """Write the query SavedModel with its raw-feature serving signature."""
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            QUERY_SIGNATURE: module.serve.get_concrete_function(),
            QUERY_IDS_SIGNATURE: module.serve_ids.get_concrete_function(),
        },
    )


def save_candidate_model(module: RawCandidateModel, path: str | Path) -> None:
    """Write the candidate SavedModel with its raw-feature serving signature."""
    tf.saved_model.save(
        module, str(path), signatures={CANDIDATE_SIGNATURE: module.serve.get_concrete_function()}
    )

"""SavedModels whose serving signatures take raw features (strings, numbers), not ids.

The vocabularies travel inside the SavedModel as lookup tables, and the raw-to-id rules are
those of :mod:`recsys.features.encoder` written in TensorFlow from its constants (padding and
out-of-vocabulary ids, the token and whitespace classes, window sizes, the gap cap): unknown
history videos and blank searches are dropped, the last ``max_history`` watches and the tokens
of the last ``max_searches`` searches are kept. TensorFlow cannot run the numpy encoder, so
:func:`save_query_model` first checks the two agree on probe contexts
(:func:`check_query_parity`) and refuses to write a signature that does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from recsys.features import contract as F
from recsys.features.context import RequestContext, encode_request
from recsys.features.contract import FeatureConfig, is_blank
from recsys.features.encoder import TF_TOKEN_SPLIT, TF_WHITESPACE, known_watches
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
    """Tokenise a 1-D string tensor as :func:`recsys.features.encoder.tokenize`: ragged [n, (t)]."""
    # NUL separates tokens anyway, and tf.strings.lower would end the string at it.
    texts = tf.strings.regex_replace(texts, "\x00", " ")
    lowered = tf.strings.lower(texts, encoding="utf-8")
    spaced = tf.strings.regex_replace(lowered, TF_TOKEN_SPLIT, " ")
    return tf.strings.split(tf.strings.strip(spaced))


def _dense(ragged: Any, width: int) -> Any:
    return tf.cast(ragged.to_tensor(default_value=F.PAD, shape=[None, width]), tf.int32)


def _nonblank(texts: Any) -> Any:
    """Mask of the texts that are searches: as :func:`recsys.features.contract.is_blank`."""
    return tf.strings.regex_replace(texts, TF_WHITESPACE + "+", "") != ""


def query_id_signature(config: FeatureConfig) -> dict[str, tf.TensorSpec]:
    """``tf.TensorSpec`` of every id-level query feature (:mod:`recsys.features.contract`)."""
    return {
        name: tf.TensorSpec((None, *shape), tf.as_dtype(dtype))
        for name, (shape, dtype) in F.query_feature_shapes(config).items()
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
        # What the rules are checked against before saving (plain Python: not saved).
        self.encoder_vocabs = vocabs
        self.encoder_config = config
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
        """Id features from raw ones (the rules of :mod:`recsys.features.encoder`).

        Age: a float tensor has no null, so a non-positive or non-finite age reads as unknown.
        """
        ids = _ids(self.items, history)
        known = tf.ragged.boolean_mask(ids, ids > F.OOV)
        history_ids = _dense(known[:, -self.max_history :], self.max_history)
        nonblank = tf.ragged.boolean_mask(searches, _nonblank(searches))
        recent = nonblank[:, -self.max_searches :]
        latest = nonblank[:, -1:]
        known = tf.math.logical_and(tf.math.is_finite(age), age > 0)
        age = tf.where(known, age, tf.zeros_like(age))
        known_age = tf.cast(known, tf.float32)
        cap = tf.constant(F.MAX_GAP_MINUTES, tf.float32)
        return {
            F.HISTORY: history_ids,
            F.SEARCH_TOKENS: self._search_ids(recent, self.max_searches, self.max_search_tokens),
            F.COUNTRY: tf.cast(_ids(self.countries, country), tf.int32),
            F.REGION: tf.cast(_ids(self.regions, region), tf.int32),
            F.GENDER: tf.cast(_ids(self.genders, gender), tf.int32),
            F.AGE: age,
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
        watch of a known video / the latest non-blank search (525600, a year, when there
        is none).
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
    """Write the query SavedModel with its raw-feature serving signature.

    Raises :class:`FeatureParityError` first if the signature's rules disagree with
    :mod:`recsys.features.encoder` (:func:`check_query_parity`).
    """
    check_query_parity(module)
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


class FeatureParityError(ValueError):
    """The raw-feature signature's TensorFlow rules disagree with the numpy encoder."""


@dataclass(frozen=True)
class ParityProbe:
    """A raw context fed to both encoders; its events are ``minutes_ago`` before the moment."""

    name: str
    history: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    country: str | None = None
    region: str | None = None
    gender: str | None = None
    age: float | None = None
    minutes_ago: int = 1

    def minutes_since(self, happened: bool, none: float) -> float:
        """The probe's minutes since an event, or ``none`` when there was none."""
        return float(self.minutes_ago) if happened else none

    def context(self, moment: int) -> RequestContext:
        """The probe as a serving request at ``moment``."""
        then = moment - 60 * self.minutes_ago
        return RequestContext(
            watch_history=self.history,
            watch_times=[then] * len(self.history),
            searches=self.searches,
            search_times=[then] * len(self.searches),
            country=self.country,
            region=self.region,
            age=None if self.age is None else int(self.age),
            gender=self.gender,
            request_time=moment,
        )


def parity_probes(vocabs: Vocabularies, config: FeatureConfig) -> list[ParityProbe]:
    """Contexts that exercise every rule: unknown ids, empty history, long and OOV text."""
    items = list(vocabs.items.values[: config.max_history + 3])
    words = list(vocabs.tokens.values[: config.max_search_tokens + 3])
    unknown = "\x00not-in-the-vocabulary"
    # Mixed case, and underscores (not part of a token) between some words.
    long_text = " ".join(w.upper() if i % 2 else w for i, w in enumerate(words)).replace(
        " ", "_", 3
    )
    many = [f"{w}, {unknown}!" for w in words[: config.max_searches + 2]]
    n = config.max_searches + 2
    return [
        ParityProbe("empty"),
        ParityProbe(
            "full windows",
            history=(*items, unknown, *items[:2]),
            searches=(*many, long_text + " " + long_text, "  \t", "\u3000", "..."),
            country=vocabs.countries.values[0] if vocabs.countries.values else "US",
            region=unknown,
            gender=vocabs.genders.values[-1] if vocabs.genders.values else "",
            age=34.0,
            minutes_ago=90,
        ),
        ParityProbe(
            "unknown only",
            history=(unknown, unknown),
            searches=(unknown, "oov_WORDS--and 42x", "ΟΔΟΣ İstanbul STRAẞE e\u0301t\u00e9"),
            country=unknown,
            gender=unknown,
            minutes_ago=2 * 525_600,  # longer ago than the gap cap
        ),
        ParityProbe("one watch", history=tuple(items[:1]), searches=(" ",), age=71.0),
        # One token a search: the limit on searches shows before the limit on tokens.
        ParityProbe(
            "many short searches",
            searches=tuple((words or [unknown])[i % max(len(words), 1)] for i in range(n)),
        ),
    ]


def check_query_parity(module: RawQueryModel, probes: list[ParityProbe] | None = None) -> None:
    """Raise :class:`FeatureParityError` unless ``module.features`` equals the numpy encoder.

    Every probe (default :func:`parity_probes`) is encoded by
    :func:`recsys.features.context.encode_request` and, from the same raw values, by the
    TensorFlow rules; every query feature must be equal, value for value.
    """
    vocabs, config = module.encoder_vocabs, module.encoder_config
    probes = parity_probes(vocabs, config) if probes is None else probes
    moment = 1_767_225_600
    for probe in probes:
        want = encode_request(probe.context(moment), vocabs, config)
        # The signature takes minutes since the latest watch of a known video and the latest
        # search that counts, as the encoder measures them.
        watched = bool(known_watches(vocabs.items.lookup(list(probe.history))).any())
        searched = not all(is_blank(q) for q in probe.searches)
        got = module.features(
            tf.constant([[*probe.history, ""]]),
            tf.constant([[*probe.searches, ""]]),
            tf.constant([probe.country or ""]),
            tf.constant([probe.region or ""]),
            tf.constant([probe.gender or ""]),
            tf.constant([math.nan if probe.age is None else probe.age], tf.float32),
            tf.constant([0.0]),
            tf.constant([probe.minutes_since(watched, F.MAX_GAP_MINUTES)]),
            tf.constant([probe.minutes_since(searched, F.MAX_GAP_MINUTES)]),
        )
        for name in F.QUERY_FEATURES:
            mine, theirs = got[name].numpy(), want[name]
            if mine.shape != theirs.shape or not np.array_equal(mine, theirs):
                raise FeatureParityError(
                    f"the raw-feature signature disagrees with recsys.features.encoder on "
                    f"{name!r} for the probe {probe.name!r}: TensorFlow gives {mine.tolist()}, "
                    f"the encoder {theirs.tolist()}"
                )

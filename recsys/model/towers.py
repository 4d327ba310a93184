"""The query (user) tower and the candidate (video) tower of the two-tower model.

Both map a dict of feature tensors (:mod:`recsys.features.contract`) to L2-normalised embeddings
``[B, embedding_dim]``, whose dot product is the softmax logit (before the temperature).
The item-id embedding table is shared between the query's watch-history bag and the
candidate's id, and the token table between search tokens and title tokens (Covington et
al. 2016): a video's id means the same thing on both sides, and so does a word.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from recsys.config import ModelConfig
from recsys.features import contract as F
from recsys.features.vocab import Vocabularies

log = logging.getLogger(__name__)

Features = Mapping[str, Any]

# Ages in years are centred and scaled to roughly [-1, 2]; unknown ages become 0 and the
# model learns their effect from `age_known`.
_AGE_CENTER_YEARS = 35.0
_LOG_MAX_GAP = float(np.log1p(F.MAX_GAP_MINUTES))
_SESSION_MINUTES = 30.0  # a gap shorter than this usually means the same session
_AGE_SCALE_YEARS = 15.0
# Durations in days (example age, upload age) span 0 .. years with most mass near 0: a log
# scale puts one day at 0.12, a month at 0.58 and a year at 1.0.
_DAYS_SCALE = 365.0
# Initial sine of the query's freshness coordinate: away from 0, where the query coordinate and
# the freshness curve would both get zero gradient.
_FRESHNESS_INIT = 0.5


@dataclass(frozen=True)
class VocabSizes:
    """Vocabulary sizes (number of indices, including PAD 0 and OOV 1) and the content width."""

    num_items: int
    num_tokens: int
    num_countries: int
    num_regions: int
    num_genders: int
    num_channels: int
    num_categories: int
    content_dim: int | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name == "content_dim":
                if value is not None and value <= 0:
                    raise ValueError(f"content_dim must be positive or None, got {value}")
            elif value < 2:
                raise ValueError(
                    f"{name} must be at least 2 (PAD and OOV are indices 0 and 1), got {value}"
                )

    def to_dict(self) -> dict[str, int | None]:
        """A JSON-friendly dict, for manifests."""
        return asdict(self)

    @classmethod
    def of(cls, vocabs: Vocabularies, content_dim: int | None) -> VocabSizes:
        """The sizes of a model's vocabularies (and its content width, or None)."""
        return cls(
            num_items=len(vocabs.items),
            num_tokens=len(vocabs.tokens),
            num_countries=len(vocabs.countries),
            num_regions=len(vocabs.regions),
            num_genders=len(vocabs.genders),
            num_channels=len(vocabs.channels),
            num_categories=len(vocabs.categories),
            content_dim=content_dim,
        )


def _require(features: Features, name: str, tower: str) -> tf.Tensor:
    """``features[name]``, or a KeyError that names the missing feature and the tower."""
    try:
        return features[name]
    except KeyError:
        raise KeyError(
            f"the {tower} needs feature {name!r}; got {sorted(features)}. Build batches with "
            "recsys.features.contract names, or switch the input off in ModelConfig."
        ) from None


def masked_mean(embeddings: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """Mean of ``embeddings: [B, L, d]`` over the positions where ``ids: [B, L] != PAD``.

    Returns ``[B, d]``; a row with no non-padding id (or ``L == 0``) gives zeros.
    """
    mask = tf.cast(tf.not_equal(ids, F.PAD), embeddings.dtype)[:, :, None]
    total = tf.reduce_sum(embeddings * mask, axis=1)
    count = tf.reduce_sum(mask, axis=1)
    return total / tf.maximum(count, 1.0)


def days_features(days: tf.Tensor) -> tf.Tensor:
    """``days: [B]`` (>= 0) -> ``[B, 3]``: normalised x, x^2 and sqrt(x) (Covington et al.)."""
    x = tf.math.log1p(tf.maximum(tf.cast(days, tf.float32), 0.0)) / tf.math.log1p(_DAYS_SCALE)
    return tf.stack([x, tf.square(x), tf.sqrt(x)], axis=-1)


def _ids(features: Features, name: str, tower: str) -> tf.Tensor:
    """An id feature as int32 (numpy batches may arrive as int64)."""
    return tf.cast(_require(features, name, tower), tf.int32)


def _dense_stack(layers: tuple[int, ...], dropout: float, name: str) -> tf.keras.Sequential:
    """ReLU layers for all widths but the last, then a linear layer of the last width."""
    stack: list[tf.keras.layers.Layer] = []
    for i, width in enumerate(layers[:-1]):
        stack.append(tf.keras.layers.Dense(width, activation="relu", name=f"hidden_{i}"))
        if dropout > 0:
            stack.append(tf.keras.layers.Dropout(dropout, name=f"dropout_{i}"))
    stack.append(tf.keras.layers.Dense(layers[-1], name="output"))
    return tf.keras.Sequential(stack, name=name)


def _embedding(size: int, dim: int, name: str) -> tf.keras.layers.Embedding:
    """A Keras embedding table (uniform(-0.05, 0.05) initialisation)."""
    return tf.keras.layers.Embedding(size, dim, name=name)


def _l2_normalize(x: tf.Tensor) -> tf.Tensor:
    """Unit rows, computed in float32 even under mixed precision (the logits need it)."""
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=-1)


def _main_layers(config: ModelConfig, layers: tuple[int, ...]) -> tuple[int, ...]:
    """The dense stack's widths: with freshness on, the last coordinate is kept for it."""
    return (*layers[:-1], layers[-1] - 1) if config.freshness else layers


def with_freshness(main: tf.Tensor, sine: tf.Tensor) -> tf.Tensor:
    """``[cos * main, sin]``: unit ``main: [..., d-1]`` and sines ``[...]`` -> unit ``[..., d]``."""
    sine = tf.cast(sine, tf.float32)
    cosine = tf.sqrt(tf.maximum(1.0 - tf.square(sine), 0.0))
    return tf.concat([main * cosine[..., None], sine[..., None]], axis=-1)


class FreshnessCurve(tf.keras.layers.Layer):
    """Days since upload (any shape) -> the sine of a video's freshness coordinate, in (-1, 1).

    A learned value per age bucket (:data:`recsys.features.contract.FRESHNESS_EDGES_DAYS`),
    squashed by tanh. The query tower holds the other factor (a learned constant sine), so the
    freshness term of a logit is ``sin(phi) * sin(psi(age))``: a learned function of age
    added to every score, which is how the logQ-corrected softmax can express "fresh videos
    are watched more" once the ages are taken at the query's time (see
    :class:`recsys.model.two_tower.TwoTowerModel`).
    """

    def build(self, input_shape: Any) -> None:
        """One value per bucket, starting at 0 (no effect)."""
        self.values = self.add_weight(
            name="values",
            shape=(len(F.FRESHNESS_EDGES_DAYS) + 1,),
            initializer="zeros",
            dtype=tf.float32,
        )
        super().build(input_shape)

    def call(self, age_days: tf.Tensor) -> tf.Tensor:
        """``age_days`` (float, any shape) -> sines of the same shape (float32)."""
        age = tf.cast(age_days, tf.float32)
        bucket = tf.raw_ops.Bucketize(
            input=age, boundaries=[float(e) for e in F.FRESHNESS_EDGES_DAYS]
        )
        return tf.tanh(tf.gather(tf.cast(self.values, tf.float32), bucket))


class HistoryAttention(tf.keras.layers.Layer):
    """The watch history read as a sequence: attention from the latest watch over all of them.

    ``item_embeddings: [B, H, d]`` of ``history: [B, H]`` (oldest first, 0-padded at the
    end) -> ``[B, d]``. Each watch gets a learned embedding of its recency (0 = the latest
    watch, 1 = the one before, ...) added; the latest watch asks ``heads`` attention queries
    over every watch (padding masked out), and a residual feed-forward block follows: one
    pre-norm transformer block read at the last position (SASRec, Kang and McAuley 2018,
    trained here on that position only), whose residual stream keeps the embeddings' scale.
    An empty history gives zeros.
    Built from matmuls, softmax and reductions only, so TensorFlow Lite converts it with
    builtin ops.
    """

    def __init__(self, max_history: int, dim: int, heads: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if dim % heads:
            raise ValueError(f"the history attention's width {dim} is not divisible by {heads}")
        self.max_history = max_history
        self.dim = dim
        self.heads = heads
        self.recency = tf.keras.layers.Embedding(max_history, dim, name="recency_embedding")
        self.query = tf.keras.layers.Dense(dim, use_bias=False, name="query")
        self.key = tf.keras.layers.Dense(dim, use_bias=False, name="key")
        self.value = tf.keras.layers.Dense(dim, use_bias=False, name="value")
        self.output_projection = tf.keras.layers.Dense(dim, name="output")
        self.norm_input = tf.keras.layers.LayerNormalization(name="norm_input")
        self.norm_attention = tf.keras.layers.LayerNormalization(name="norm_attention")
        self.feed_forward = tf.keras.Sequential(
            [
                tf.keras.layers.Dense(2 * dim, activation="relu", name="hidden"),
                tf.keras.layers.Dense(dim, name="output"),
            ],
            name="feed_forward",
        )

    def call(self, item_embeddings: tf.Tensor, history: tf.Tensor) -> tf.Tensor:
        """``[B, H, d]`` embeddings of ``[B, H]`` ids -> ``[B, d]`` float (the layer's dtype)."""
        x = tf.cast(item_embeddings, self.compute_dtype)
        valid = tf.not_equal(history, F.PAD)  # [B, H]
        count = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)  # [B]
        width = tf.shape(history)[1]
        recency = count[:, None] - 1 - tf.range(width)[None, :]  # [B, H]: 0 = latest
        recency = tf.clip_by_value(recency, 0, self.max_history - 1)
        mask = tf.cast(valid, self.compute_dtype)[:, :, None]
        x = (x + tf.cast(self.recency(recency), self.compute_dtype)) * mask
        normed = self.norm_input(x)
        last = tf.maximum(count - 1, 0)
        # A padding row makes the gathers safe for an empty [B, 0] history.
        latest = tf.gather(tf.pad(x, [[0, 0], [0, 1], [0, 0]]), last, batch_dims=1)  # [B, d]
        latest_normed = tf.gather(tf.pad(normed, [[0, 0], [0, 1], [0, 0]]), last, batch_dims=1)
        head = self.dim // self.heads
        q = tf.reshape(self.query(latest_normed), [-1, 1, self.heads, head])
        k = tf.reshape(self.key(normed), [-1, width, self.heads, head])
        v = tf.reshape(self.value(normed), [-1, width, self.heads, head])
        scores = tf.reduce_sum(q * k, axis=-1) / float(np.sqrt(head))  # [B, H, heads]
        scores = tf.cast(scores, tf.float32) + (1.0 - tf.cast(mask, tf.float32)) * -1e9
        weights = tf.cast(tf.nn.softmax(scores, axis=1), self.compute_dtype)[..., None]
        pooled = tf.reshape(tf.reduce_sum(weights * v, axis=1), [-1, self.dim])  # [B, d]
        y = latest + self.output_projection(pooled)
        y = y + self.feed_forward(self.norm_attention(y))
        return y * tf.cast(count > 0, self.compute_dtype)[:, None]


class QueryTower(tf.keras.Model):
    """User context -> ``[B, embedding_dim]`` unit vectors.

    Inputs (``recsys.features.contract``): ``history [B, H]`` and ``search_tokens [B, S]``
    (0-padded,
    averaged over non-padding entries), ``country, region, gender [B]`` ids, ``age,
    age_known [B]`` floats, ``example_age [B]`` days; with ``use_recency``, the latest watch
    (history's last entry), ``last_search_tokens [B, L]`` and ``since_last_watch,
    since_last_search [B]`` minutes. ``use_searches``, ``use_demographics``,
    ``use_example_age`` and ``use_recency`` switch groups off; switched-off features are not
    read and may be absent. With ``freshness`` the last coordinate is a learned constant
    sine, the query's half of the freshness term; the rest is :meth:`main`.
    ``history_encoder`` "bag" averages the history (Covington et al.); "attention" also reads
    it as a sequence (:class:`HistoryAttention`), beside the average.
    """

    def __init__(
        self,
        config: ModelConfig,
        sizes: VocabSizes,
        item_embedding: tf.keras.layers.Embedding | None = None,
        token_embedding: tf.keras.layers.Embedding | None = None,
        name: str = "query_tower",
    ) -> None:
        super().__init__(name=name)
        self.config = config
        self.sizes = sizes
        self.item_embedding = (
            item_embedding
            if item_embedding is not None
            else _embedding(sizes.num_items, config.item_embedding_dim, "item_embedding")
        )
        if config.use_searches:
            self.token_embedding = (
                token_embedding
                if token_embedding is not None
                else _embedding(sizes.num_tokens, config.token_embedding_dim, "token_embedding")
            )
        if config.use_demographics:
            self.country_embedding = _embedding(
                sizes.num_countries, config.geo_embedding_dim, "country_embedding"
            )
            self.region_embedding = _embedding(
                sizes.num_regions, config.geo_embedding_dim, "region_embedding"
            )
            self.gender_embedding = _embedding(
                sizes.num_genders, config.gender_embedding_dim, "gender_embedding"
            )
        if config.history_encoder == "attention":
            self.history_attention = HistoryAttention(
                config.history_max_positions,
                config.item_embedding_dim,
                config.history_attention_heads,
                name="history_attention",
            )
        self.dense = _dense_stack(
            _main_layers(config, config.query_layers), config.dropout, "query_dense"
        )
        if config.freshness:
            self.freshness_weight = self.add_weight(
                name="freshness_weight",
                shape=(),
                initializer=tf.keras.initializers.Constant(float(np.arctanh(_FRESHNESS_INIT))),
                dtype=tf.float32,
            )

    def freshness_sine(self) -> tf.Tensor:
        """The sine of every query's freshness coordinate (a learned scalar)."""
        return tf.tanh(tf.cast(self.freshness_weight, tf.float32))

    def call(self, features: Features, training: bool | None = None) -> tf.Tensor:
        """``features`` (dict of ``[B, ...]`` tensors) -> ``[B, embedding_dim]`` float32."""
        main = self.main(features, training=training)
        if not self.config.freshness:
            return main
        return with_freshness(main, tf.fill(tf.shape(main)[:1], self.freshness_sine()))

    def main(self, features: Features, training: bool | None = None) -> tf.Tensor:
        """The unit embedding without the freshness coordinate: ``[B, d]`` (``d - 1`` with it)."""
        tower = "query tower"
        history = _ids(features, F.HISTORY, tower)
        watched = self.item_embedding(history)
        parts = [masked_mean(watched, history)]
        if self.config.history_encoder == "attention":
            # The sequence beside the bag: the order and recency, and the long-run average.
            parts.append(self.history_attention(watched, history))
        if self.config.use_searches:
            tokens = _ids(features, F.SEARCH_TOKENS, tower)
            parts.append(masked_mean(self.token_embedding(tokens), tokens))
        if self.config.use_demographics:
            parts.append(self.country_embedding(_ids(features, F.COUNTRY, tower)))
            parts.append(self.region_embedding(_ids(features, F.REGION, tower)))
            parts.append(self.gender_embedding(_ids(features, F.GENDER, tower)))
            known = tf.cast(_require(features, F.AGE_KNOWN, tower), tf.float32)
            age = tf.cast(_require(features, F.AGE, tower), tf.float32)
            age = known * (age - _AGE_CENTER_YEARS) / _AGE_SCALE_YEARS
            parts.append(tf.stack([age, known], axis=-1))
        if self.config.use_example_age:
            parts.append(days_features(_require(features, F.EXAMPLE_AGE, tower)))
        if self.config.use_recency:
            parts.extend(self._recency(features, history))
        x = tf.concat([tf.cast(p, self.compute_dtype) for p in parts], axis=-1)
        return _l2_normalize(self.dense(x, training=training))

    def _recency(self, features: Features, history: tf.Tensor) -> list[tf.Tensor]:
        """The latest watch's embedding, the latest search's tokens, and the time gaps.

        Sessions continue a theme and a search picks the next watch; an average over 50
        watches hides both, so the most recent events also enter on their own.
        """
        tower = "query tower"
        count = tf.reduce_sum(tf.cast(history != F.PAD, tf.int32), axis=1)  # [B]
        # A padding column makes the gather safe for an empty [B, 0] history.
        padded = tf.pad(history, [[0, 0], [0, 1]])
        last = tf.gather(padded, tf.maximum(count - 1, 0), batch_dims=1)  # [B]
        has = tf.cast(count > 0, tf.float32)[:, None]
        parts = [tf.cast(self.item_embedding(last), tf.float32) * has]
        if self.config.use_searches:
            tokens = _ids(features, F.LAST_SEARCH_TOKENS, tower)
            parts.append(masked_mean(self.token_embedding(tokens), tokens))
        for name in (F.SINCE_LAST_WATCH, F.SINCE_LAST_SEARCH):
            minutes = tf.cast(_require(features, name, tower), tf.float32)
            scaled = tf.math.log1p(tf.maximum(minutes, 0.0)) / _LOG_MAX_GAP
            in_session = tf.cast(minutes < _SESSION_MINUTES, tf.float32)
            parts.append(tf.stack([scaled, in_session], axis=-1))
        return parts


class CandidateTower(tf.keras.Model):
    """Video features -> ``[B, embedding_dim]`` unit vectors.

    Inputs: ``item [B]`` id; with ``use_content``, ``channel, category [B]`` ids,
    ``title_tokens [B, T]`` (0-padded, averaged), ``upload_age [B]`` days, and, when
    ``sizes.content_dim`` is set and ``use_content_embedding`` is on, ``content_embedding
    [B, content_dim]`` through a linear projection. Content features let a video nobody has
    watched yet (OOV id) still get a useful embedding. With ``freshness``, ``upload_age`` is
    read whatever ``use_content`` says and sets only the last coordinate
    (:class:`FreshnessCurve`); the rest is :meth:`main`, scaled to keep the row unit.
    """

    def __init__(
        self,
        config: ModelConfig,
        sizes: VocabSizes,
        item_embedding: tf.keras.layers.Embedding | None = None,
        token_embedding: tf.keras.layers.Embedding | None = None,
        name: str = "candidate_tower",
    ) -> None:
        super().__init__(name=name)
        self.config = config
        self.sizes = sizes
        self.item_embedding = (
            item_embedding
            if item_embedding is not None
            else _embedding(sizes.num_items, config.item_embedding_dim, "item_embedding")
        )
        self.use_content_embedding = (
            config.use_content and config.use_content_embedding and sizes.content_dim is not None
        )
        if config.use_content:
            self.token_embedding = (
                token_embedding
                if token_embedding is not None
                else _embedding(sizes.num_tokens, config.token_embedding_dim, "token_embedding")
            )
            self.channel_embedding = _embedding(
                sizes.num_channels, config.channel_embedding_dim, "channel_embedding"
            )
            self.category_embedding = _embedding(
                sizes.num_categories, config.category_embedding_dim, "category_embedding"
            )
        if self.use_content_embedding:
            self.content_projection = tf.keras.layers.Dense(
                config.content_projection_dim, name="content_projection"
            )
        self.dense = _dense_stack(
            _main_layers(config, config.candidate_layers), config.dropout, "candidate_dense"
        )
        if config.freshness:
            # float32 under mixed precision too: its output goes straight into the logits.
            self.freshness = FreshnessCurve(name="freshness", dtype="float32")

    def call(self, features: Features, training: bool | None = None) -> tf.Tensor:
        """``features`` (dict of ``[B, ...]`` tensors) -> ``[B, embedding_dim]`` float32."""
        main = self.main(features, training=training)
        if not self.config.freshness:
            return main
        age = _require(features, F.UPLOAD_AGE, "candidate tower")
        return with_freshness(main, self.freshness(tf.maximum(tf.cast(age, tf.float32), 0.0)))

    def main(self, features: Features, training: bool | None = None) -> tf.Tensor:
        """The unit embedding without the freshness coordinate: ``[B, d]`` (``d - 1`` with it).

        With freshness on, upload age enters only through the freshness coordinate, so that
        this part does not depend on when the video is embedded.
        """
        tower = "candidate tower"
        item = _ids(features, F.ITEM, tower)
        if training and self.config.item_id_dropout > 0:
            # Videos unseen in training all share the OOV id; without this it is never trained.
            drop = tf.random.uniform(tf.shape(item)) < self.config.item_id_dropout
            item = tf.where(drop, tf.fill(tf.shape(item), F.OOV), item)
        parts = [self.item_embedding(item)]
        if self.config.use_content:
            parts.append(self.channel_embedding(_ids(features, F.CHANNEL, tower)))
            parts.append(self.category_embedding(_ids(features, F.CATEGORY, tower)))
            title = _ids(features, F.TITLE_TOKENS, tower)
            parts.append(masked_mean(self.token_embedding(title), title))
            if not self.config.freshness:
                parts.append(days_features(_require(features, F.UPLOAD_AGE, tower)))
        if self.use_content_embedding:
            content = tf.cast(_require(features, F.CONTENT_EMBEDDING, tower), self.compute_dtype)
            parts.append(self.content_projection(content))
        x = tf.concat([tf.cast(p, self.compute_dtype) for p in parts], axis=-1)
        return _l2_normalize(self.dense(x, training=training))


def build_towers(config: ModelConfig, sizes: VocabSizes) -> tuple[QueryTower, CandidateTower]:
    """Both towers, sharing the item-id table and (when both use it) the token table."""
    item_embedding = _embedding(sizes.num_items, config.item_embedding_dim, "item_embedding")
    token_embedding = _embedding(sizes.num_tokens, config.token_embedding_dim, "token_embedding")
    query = QueryTower(config, sizes, item_embedding, token_embedding)
    candidate = CandidateTower(config, sizes, item_embedding, token_embedding)
    log.debug("built towers: %s, %s", config, sizes)
    return query, candidate

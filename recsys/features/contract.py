"""The feature contract between the example pipeline and the towers: names, shapes, dtypes.

A batch is a ``dict[str, np.ndarray | tf.Tensor]``. Id features are vocabulary indices
(:mod:`recsys.features.vocab`): 0 means padding or missing, 1 means out-of-vocabulary, 2.. are known
values. Query features describe the user's context strictly before the label's time; candidate
features describe the label video (or, at export, every catalog video). How raw values become
these ids is :mod:`recsys.features.encoder`.
"""

from __future__ import annotations

from dataclasses import dataclass

PAD = 0
OOV = 1

# ---- query (user) tower inputs; B = batch size
HISTORY = (
    "history"  # int32 [B, max_history]: last watched videos, oldest first, 0-padded at the end
)
SEARCH_TOKENS = "search_tokens"  # int32 [B, max_search_tokens]: tokens of the last searches
COUNTRY = "country"  # int32 [B]
REGION = "region"  # int32 [B]
GENDER = "gender"  # int32 [B]
AGE = "age"  # float32 [B]: years, 0 when unknown
AGE_KNOWN = "age_known"  # float32 [B]: 1 when age is known
# float32 [B]: days from the event to the training window's end; 0 when serving
EXAMPLE_AGE = "example_age"
# Recency: what the user did just before the moment (sessions continue a theme, a search
# picks the next watch). The last watch is history's last entry; these add the rest.
LAST_SEARCH_TOKENS = "last_search_tokens"  # int32 [B, max_last_search_tokens]: latest search
SINCE_LAST_WATCH = "since_last_watch"  # float32 [B]: minutes since the latest watch (capped)
SINCE_LAST_SEARCH = "since_last_search"  # float32 [B]: minutes since the latest search (capped)

# ---- candidate (item) tower inputs
ITEM = "item"  # int32 [B]: video id (vocabulary index; OOV for videos unseen in training)
CHANNEL = "channel"  # int32 [B]
CATEGORY = "category"  # int32 [B]
TITLE_TOKENS = "title_tokens"  # int32 [B, max_title_tokens]
UPLOAD_AGE = "upload_age"  # float32 [B]: days since upload at the reference time (>= 0)
CONTENT_EMBEDDING = "content_embedding"  # float32 [B, content_dim]; absent without the modality

# ---- bookkeeping (not tower inputs)
ITEM_INDEX = (
    "item_index"  # int32 [B]: row of the video in the catalog (ItemTable); unique per video
)
USER_INDEX = "user_index"  # int32 [B]: row of the user in the users table (examples only)

QUERY_FEATURES = (
    HISTORY,
    SEARCH_TOKENS,
    COUNTRY,
    REGION,
    GENDER,
    AGE,
    AGE_KNOWN,
    EXAMPLE_AGE,
    LAST_SEARCH_TOKENS,
    SINCE_LAST_WATCH,
    SINCE_LAST_SEARCH,
)
CANDIDATE_FEATURES = (ITEM, CHANNEL, CATEGORY, TITLE_TOKENS, UPLOAD_AGE, CONTENT_EMBEDDING)

SECONDS_PER_DAY = 86_400.0
# Bucket edges (days since upload) of the learned freshness curve: whole days while a video
# is fresh, coarser later. Bucket 0 is [0, 1 day).
FRESHNESS_EDGES_DAYS: tuple[float, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 17, 21, 28, 35, 45, 60, 90, 180, 365, 730,
)  # fmt: skip
# Gaps are capped at a year; "no such event" reads as a year ago (long enough to mean nothing).
MAX_GAP_MINUTES = 525_600.0


@dataclass(frozen=True)
class FeatureConfig:
    """Sizes of the context windows (the YouTube paper: last 50 watches, last 50 searches)."""

    max_history: int = 50
    max_searches: int = 50
    max_search_tokens: int = 64
    max_title_tokens: int = 16
    max_last_search_tokens: int = 8
    max_examples_per_user: int | None = 200

    def __post_init__(self) -> None:
        for name in (
            "max_history",
            "max_searches",
            "max_search_tokens",
            "max_title_tokens",
            "max_last_search_tokens",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_examples_per_user is not None and self.max_examples_per_user <= 0:
            raise ValueError(
                f"max_examples_per_user must be positive or None, got {self.max_examples_per_user}"
            )


# A feature's shape after the batch dimension and its dtype name ("int32" or "float32").
FeatureShape = tuple[tuple[int, ...], str]


def query_feature_shapes(config: FeatureConfig) -> dict[str, FeatureShape]:
    """Every id-level query feature's shape (after the batch dimension) and dtype."""
    return {
        HISTORY: ((config.max_history,), "int32"),
        SEARCH_TOKENS: ((config.max_search_tokens,), "int32"),
        COUNTRY: ((), "int32"),
        REGION: ((), "int32"),
        GENDER: ((), "int32"),
        AGE: ((), "float32"),
        AGE_KNOWN: ((), "float32"),
        EXAMPLE_AGE: ((), "float32"),
        LAST_SEARCH_TOKENS: ((config.max_last_search_tokens,), "int32"),
        SINCE_LAST_WATCH: ((), "float32"),
        SINCE_LAST_SEARCH: ((), "float32"),
    }


def candidate_feature_shapes(
    config: FeatureConfig, content_dim: int | None
) -> dict[str, FeatureShape]:
    """Every candidate feature's shape and dtype (the content embedding only with a width)."""
    shapes: dict[str, FeatureShape] = {
        ITEM: ((), "int32"),
        CHANNEL: ((), "int32"),
        CATEGORY: ((), "int32"),
        TITLE_TOKENS: ((config.max_title_tokens,), "int32"),
        UPLOAD_AGE: ((), "float32"),
    }
    if content_dim is not None:
        shapes[CONTENT_EMBEDDING] = ((content_dim,), "float32")
    return shapes


def is_blank(text: str | None) -> bool:
    """A search without text (missing, empty or whitespace only): it is not a search at all."""
    return not (text and text.strip())

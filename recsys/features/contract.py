"""The feature contract between the example pipeline and the towers: names, shapes, dtypes.

A batch is a ``dict[str, np.ndarray | tf.Tensor]``. Id features are vocabulary indices
(:mod:`recsys.features.vocab`): 0 means padding or missing, 1 means out-of-vocabulary, 2.. are known
values. Query features describe the user's context strictly before the label's time; candidate
features describe the label video (or, at export, every catalog video).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

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
# Gaps are capped at a year; "no such event" reads as a year ago (long enough to mean nothing).
MAX_GAP_MINUTES = 525_600.0

_TOKEN_SPLIT = re.compile(r"[\W_]+", re.UNICODE)
# The same rule in RE2 syntax for TensorFlow's tf.strings.regex_replace (serving signatures).
TF_TOKEN_SPLIT = r"[^\pL\pN]+"


def tokenize(text: str | None) -> list[str]:
    """Lower-case ``text`` and split it on anything that is not a letter or a digit."""
    if not text:
        return []
    return [t for t in _TOKEN_SPLIT.split(text.lower()) if t]


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


def tail_window(flat: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """The last ``width`` values of each slice ``flat[starts[i]:ends[i]]``, oldest first.

    ``flat: [total]`` int; ``starts, ends: [n]``; returns ``[n, width]`` int32, 0-padded at
    the end. Training examples and serving requests both build their contexts with this.
    """
    if len(ends) == 1:  # a serving request: one slice, no index arithmetic
        return tail_one(flat, int(starts[0]), int(ends[0]), width)
    starts = np.maximum(
        np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64) - width
    )
    ends = np.asarray(ends, dtype=np.int64)
    lengths = np.maximum(ends - starts, 0)
    offsets = np.arange(width, dtype=np.int64)
    idx = starts[:, None] + offsets[None, :]
    valid = offsets[None, :] < lengths[:, None]
    out = np.zeros((len(ends), width), dtype=np.int32)
    if flat.size:
        out[valid] = flat[idx[valid]]
    return out


def tail_one(flat: np.ndarray, start: int, end: int, width: int) -> np.ndarray:
    """:func:`tail_window` of the one slice ``flat[start:end]``: ``[1, width]`` int32."""
    out = np.zeros((1, width), dtype=np.int32)
    lo = max(start, end - width)
    if end > lo:
        out[0, : end - lo] = flat[lo:end]
    return out


def minutes_since(moment: np.ndarray, times: np.ndarray, has_event: np.ndarray) -> np.ndarray:
    """Minutes from ``times`` to ``moment`` (both Unix seconds, ``[n]``), capped at a year.

    Rows without an event (``has_event`` False) read as a year ago.
    """
    gap = (np.asarray(moment, np.float64) - np.asarray(times, np.float64)) / 60.0
    gap = np.clip(gap, 0.0, MAX_GAP_MINUTES)
    return np.where(has_event, gap, MAX_GAP_MINUTES).astype(np.float32)


def minutes_since_one(moment: int, time: int | None) -> np.ndarray:
    """:func:`minutes_since` of one moment (``time`` None: no event): ``[1]`` float32."""
    if time is None:
        return np.array([MAX_GAP_MINUTES], dtype=np.float32)
    gap = (float(moment) - float(time)) / 60.0
    return np.array([min(max(gap, 0.0), MAX_GAP_MINUTES)], dtype=np.float32)

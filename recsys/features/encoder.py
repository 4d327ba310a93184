"""The raw-to-id feature encoder: the one definition of how raw events become query features.

Example building (training and evaluation examples), a serving request
(:func:`recsys.features.context.encode_request`) and serving's stored profiles
(:class:`recsys.inference.profile_features.EncodedProfiles`) all go through these functions:
vocabulary ids with padding and out-of-vocabulary, tokenisation of search text, which events
count (unknown videos and blank searches do not), the tail windows of history and searches,
the minutes since the latest events, example age and demographics. The TensorFlow raw-feature
signature (:mod:`recsys.model.signatures`) writes the same rules in TensorFlow from the
constants here and is checked against this module when a model is exported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.features import contract as F
from recsys.features.contract import FeatureConfig, is_blank
from recsys.features.vocab import Vocabularies

# A token is a run of letters and digits; anything else separates tokens.
_TOKEN_SPLIT = re.compile(r"[\W_]+", re.UNICODE)
# The same rule in RE2 syntax for TensorFlow's tf.strings.regex_replace.
TF_TOKEN_SPLIT = r"[^\pL\pN]+"
# What Python's str.strip() removes, as an RE2 class: TensorFlow's own strip only knows ASCII.
WHITESPACE = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())
TF_WHITESPACE = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE) + "]"


def tokenize(text: str | None) -> list[str]:
    """Lower-case ``text`` and split it on anything that is not a letter or a digit."""
    if not text:
        return []
    return [t for t in _TOKEN_SPLIT.split(text.lower()) if t]


def known_watches(item_ids: np.ndarray) -> np.ndarray:
    """Mask of the watches a context keeps: videos in the vocabulary (unknown ones are left out)."""
    return np.asarray(item_ids) > F.OOV


def encode_texts(
    texts: pd.Series | Sequence[str | None], vocabs: Vocabularies
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise ``texts`` and map tokens to ids: (flat token ids int32, offsets int64 [n+1])."""
    token_lists = [tokenize(t) if isinstance(t, str) else [] for t in texts]
    lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
    offsets = np.zeros(len(token_lists) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = [tok for toks in token_lists for tok in toks]
    ids = vocabs.tokens.lookup(flat) if flat else np.zeros(0, dtype=np.int32)
    return ids, offsets


def distinct_values(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """(code of each string into the distinct ones, the distinct strings); null reads as ""."""
    enc = pc.dictionary_encode(pc.fill_null(values, ""))
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary.to_pylist()


def gather_ragged(
    flat: np.ndarray, offsets: np.ndarray, codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The ragged rows ``codes`` of (flat, offsets): (their values concatenated, offsets)."""
    starts = offsets[:-1][codes]
    lengths = offsets[1:][codes] - starts
    out_off = np.zeros(len(codes) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_off[1:])
    idx = np.repeat(starts - out_off[:-1], lengths) + np.arange(out_off[-1], dtype=np.int64)
    return flat[idx], out_off


def encode_searches(
    texts: pa.Array | pa.ChunkedArray, vocabs: Vocabularies
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The searches that count and their token ids: (kept [n] bool, flat ids, offsets [kept+1]).

    Blank searches are dropped; each distinct text is tokenised once (logs repeat queries).
    """
    codes, distinct = distinct_values(texts)
    blank = np.fromiter((is_blank(q) for q in distinct), dtype=bool, count=len(distinct))
    kept = ~blank[codes]
    tokens, offsets = gather_ragged(*encode_texts(distinct, vocabs), codes[kept])
    return kept, tokens, offsets


def encode_demographics(
    vocabs: Vocabularies,
    country: Sequence[str | None] | pd.Series | np.ndarray,
    region: Sequence[str | None] | pd.Series | np.ndarray,
    gender: Sequence[str | None] | pd.Series | np.ndarray,
    age: np.ndarray,
) -> dict[str, np.ndarray]:
    """Demographic query features of ``n`` users; ``age: [n]`` float64 years, NaN if unknown.

    A non-finite age reads as unknown: age 0 with ``age_known`` 0.
    """
    age = np.asarray(age, dtype=np.float64)
    known = np.isfinite(age)
    return {
        F.COUNTRY: vocabs.countries.lookup(country),
        F.REGION: vocabs.regions.lookup(region),
        F.GENDER: vocabs.genders.lookup(gender),
        F.AGE: np.where(known, age, 0.0).astype(np.float32),
        F.AGE_KNOWN: known.astype(np.float32),
    }


def example_age_days(window_end: int, times: np.ndarray) -> np.ndarray:
    """Days from each event at ``times`` (Unix s) to the training window's end: float32 [n].

    Evaluation examples and serving requests use 0 (a query asked now).
    """
    return ((window_end - np.asarray(times)) / F.SECONDS_PER_DAY).astype(np.float32)


def tail_window(flat: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """The last ``width`` values of each slice ``flat[starts[i]:ends[i]]``, oldest first.

    ``flat: [total]`` int; ``starts, ends: [n]``; returns ``[n, width]`` int32, 0-padded at
    the end.
    """
    if len(ends) == 1:  # one slice (a serving request): no index arithmetic
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
    gap = np.clip(gap, 0.0, F.MAX_GAP_MINUTES)
    return np.where(has_event, gap, F.MAX_GAP_MINUTES).astype(np.float32)


def minutes_since_one(moment: int, time: int | None) -> np.ndarray:
    """:func:`minutes_since` of one moment (``time`` None: no event): ``[1]`` float32."""
    if time is None:
        return np.array([F.MAX_GAP_MINUTES], dtype=np.float32)
    gap = (float(moment) - float(time)) / 60.0
    return np.array([min(max(gap, 0.0), F.MAX_GAP_MINUTES)], dtype=np.float32)


@dataclass
class EventLog:
    """Watches and searches of some users, each user's events contiguous and in time order.

    ``watch_items: [num_watches]`` video ids (vocabulary indices) of the watches contexts
    keep (:func:`known_watches`); ``watch_time`` Unix seconds; ``search_offsets:
    [num_searches + 1]`` into ``search_tokens`` (token ids) of the searches that count
    (:func:`encode_searches`).
    """

    watch_items: np.ndarray
    watch_time: np.ndarray
    search_time: np.ndarray
    search_offsets: np.ndarray
    search_tokens: np.ndarray


def encode_queries(
    log: EventLog,
    watch_range: tuple[np.ndarray, np.ndarray],
    search_range: tuple[np.ndarray, np.ndarray],
    demographics: dict[str, np.ndarray],
    example_age_days: np.ndarray,
    moment: np.ndarray,
    config: FeatureConfig,
) -> dict[str, np.ndarray]:
    """Query features for ``n`` contexts at ``moment: [n]`` (Unix seconds).

    ``watch_range = (starts, ends)``: each context's watches are ``log.watch_items[s:e]``
    (already restricted to events strictly before the moment); likewise ``search_range`` over
    searches. Keeps the last ``max_history`` watches and the tokens of the last
    ``max_searches`` searches (at most ``max_search_tokens``, the most recent), the latest
    search's tokens on their own, and the minutes since the latest watch and search. One
    context takes :func:`encode_query` (the same rules without batch arithmetic).
    """
    w_start, w_end = (np.asarray(r, dtype=np.int64) for r in watch_range)
    s_start, s_end = (np.asarray(r, dtype=np.int64) for r in search_range)
    if len(w_end) == 1:
        watches, searches = (int(w_start[0]), int(w_end[0])), (int(s_start[0]), int(s_end[0]))
        age = float(np.asarray(example_age_days, dtype=np.float32)[0])
        return encode_query(log, watches, searches, demographics, age, int(moment[0]), config)
    history = tail_window(log.watch_items, w_start, w_end, config.max_history)
    s_lo = np.maximum(s_start, s_end - config.max_searches)
    tok_lo = log.search_offsets[s_lo]
    tok_hi = log.search_offsets[s_end]
    tokens = tail_window(log.search_tokens, tok_lo, tok_hi, config.max_search_tokens)
    has_search = s_end > s_start
    last_s = np.where(has_search, s_end - 1, s_end)
    last_tokens = tail_window(
        log.search_tokens, log.search_offsets[last_s], tok_hi, config.max_last_search_tokens
    )
    has_watch = w_end > w_start
    last_w_time = (
        log.watch_time[np.maximum(w_end - 1, 0)] if len(log.watch_time) else np.zeros(len(w_end))
    )
    last_s_time = (
        log.search_time[np.maximum(s_end - 1, 0)] if len(log.search_time) else np.zeros(len(s_end))
    )
    out = {F.HISTORY: history, F.SEARCH_TOKENS: tokens}
    out.update(demographics)
    out[F.EXAMPLE_AGE] = np.asarray(example_age_days, dtype=np.float32)
    out[F.LAST_SEARCH_TOKENS] = last_tokens
    out[F.SINCE_LAST_WATCH] = minutes_since(moment, last_w_time, has_watch)
    out[F.SINCE_LAST_SEARCH] = minutes_since(moment, last_s_time, has_search)
    return out


def encode_query(
    log: EventLog,
    watches: tuple[int, int],
    searches: tuple[int, int],
    demographics: dict[str, np.ndarray],
    example_age_days: float,
    moment: int,
    config: FeatureConfig,
) -> dict[str, np.ndarray]:
    """:func:`encode_queries` of one context (batch of one): ``log.watch_items[a:b]`` for
    ``watches = (a, b)``, likewise ``searches``; a serving request's fast path.
    """
    w_start, w_end = watches
    s_start, s_end = searches
    offsets = log.search_offsets
    tok_hi = int(offsets[s_end])
    tok_lo = int(offsets[max(s_start, s_end - config.max_searches)])
    last_lo = int(offsets[s_end - 1]) if s_end > s_start else tok_hi
    out = {
        F.HISTORY: tail_one(log.watch_items, w_start, w_end, config.max_history),
        F.SEARCH_TOKENS: tail_one(log.search_tokens, tok_lo, tok_hi, config.max_search_tokens),
    }
    out.update(demographics)
    out[F.EXAMPLE_AGE] = np.array([example_age_days], dtype=np.float32)
    out[F.LAST_SEARCH_TOKENS] = tail_one(
        log.search_tokens, last_lo, tok_hi, config.max_last_search_tokens
    )
    out[F.SINCE_LAST_WATCH] = minutes_since_one(
        moment, int(log.watch_time[w_end - 1]) if w_end > w_start else None
    )
    out[F.SINCE_LAST_SEARCH] = minutes_since_one(
        moment, int(log.search_time[s_end - 1]) if s_end > s_start else None
    )
    return out

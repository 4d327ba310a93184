"""The query context: what a user watched and searched strictly before a moment.

One function, :func:`encode_queries`, turns event logs plus (start, end) ranges into query
features. Training examples call it with ranges over a whole partition of users; a serving
request calls it with a one-user log built from the request (:func:`encode_request`), so
training and serving contexts cannot drift apart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.features import contract as F
from recsys.features.contract import FeatureConfig, minutes_since, tail_window
from recsys.features.tables import encode_texts
from recsys.features.vocab import Vocabularies


@dataclass
class EventLog:
    """Watches and searches of some users, each user's events contiguous and in time order.

    ``watch_items: [num_watches]`` video ids (vocabulary indices); ``watch_time`` Unix
    seconds; ``search_offsets: [num_searches + 1]`` into ``search_tokens`` (token ids).
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
    search's tokens on their own, and the minutes since the latest watch and search.
    """
    w_start, w_end = (np.asarray(r, dtype=np.int64) for r in watch_range)
    s_start, s_end = (np.asarray(r, dtype=np.int64) for r in search_range)
    history = tail_window(log.watch_items, w_start, w_end, config.max_history)
    s_lo = np.maximum(
        np.asarray(s_start, dtype=np.int64), np.asarray(s_end, dtype=np.int64) - config.max_searches
    )
    tok_lo = log.search_offsets[s_lo]
    tok_hi = log.search_offsets[np.asarray(s_end, dtype=np.int64)]
    tokens = tail_window(log.search_tokens, tok_lo, tok_hi, config.max_search_tokens)
    has_search = s_end > s_start
    last_s = np.where(has_search, s_end - 1, s_end)
    last_tokens = tail_window(
        log.search_tokens,
        log.search_offsets[last_s],
        log.search_offsets[s_end],
        config.max_last_search_tokens,
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


@dataclass
class RequestContext:
    """A serving request's context: explicit history, searches and demographics.

    ``watch_history`` is oldest first; ``watch_times``/``search_times`` (Unix seconds) are
    optional, and when given only events strictly before ``request_time`` count.
    """

    watch_history: Sequence[str] = ()
    watch_times: Sequence[int] | None = None
    searches: Sequence[str] = ()
    search_times: Sequence[int] | None = None
    country: str | None = None
    region: str | None = None
    age: int | None = None
    gender: str | None = None
    request_time: int | None = None
    unknown_videos: int = field(default=0, init=False)


def encode_request(
    ctx: RequestContext, vocabs: Vocabularies, config: FeatureConfig
) -> dict[str, np.ndarray]:
    """Query features (batch of one) for a serving request; example age is 0 at serving.

    The moment is ``ctx.request_time`` (now when unset). Events without times count as
    just before the moment. Sets ``ctx.unknown_videos`` to the number of history ids the
    model does not know (they are skipped, as training contexts never hold them).
    """
    moment = int(time.time()) if ctx.request_time is None else int(ctx.request_time)
    history = list(ctx.watch_history)
    searches = list(ctx.searches)
    if ctx.watch_times is not None and len(ctx.watch_times) != len(history):
        raise ValueError("watch_times must have one entry per watch_history id")
    if ctx.search_times is not None and len(ctx.search_times) != len(searches):
        raise ValueError("search_times must have one entry per search")
    watch_times = [moment] * len(history) if ctx.watch_times is None else list(ctx.watch_times)
    search_times = [moment] * len(searches) if ctx.search_times is None else list(ctx.search_times)
    if ctx.watch_times is not None:
        kept = [(v, t) for v, t in zip(history, watch_times, strict=True) if t < moment]
        history, watch_times = [v for v, _ in kept], [t for _, t in kept]
    # Blank searches carry nothing (the dataset validator rejects them): they are not searches.
    kept_s = [
        (q, t)
        for q, t in zip(searches, search_times, strict=True)
        if q and q.strip() and (ctx.search_times is None or t < moment)
    ]
    searches, search_times = [q for q, _ in kept_s], [t for _, t in kept_s]
    watch_ids = vocabs.items.lookup(history)
    known = watch_ids > F.OOV
    ctx.unknown_videos = int((watch_ids == F.OOV).sum())
    tokens, offsets = encode_texts(searches, vocabs)
    log = EventLog(
        watch_items=watch_ids[known],
        watch_time=np.asarray(watch_times, dtype=np.int64)[known],
        search_time=np.asarray(search_times, dtype=np.int64),
        search_offsets=offsets,
        search_tokens=tokens,
    )
    return encode_queries(
        log,
        (np.zeros(1, dtype=np.int64), np.array([len(log.watch_items)], dtype=np.int64)),
        (np.zeros(1, dtype=np.int64), np.array([len(searches)], dtype=np.int64)),
        request_demographics(ctx, vocabs),
        np.zeros(1, dtype=np.float32),
        np.array([moment], dtype=np.int64),
        config,
    )


def request_demographics(ctx: RequestContext, vocabs: Vocabularies) -> dict[str, np.ndarray]:
    """One request's demographic features: what :class:`UserTable` gives its user's row.

    Built without pandas (a one-row frame costs about a millisecond per request); a test
    checks it against ``UserTable.build`` on the same values.
    """
    age = ctx.age
    known = age is not None and not isinstance(age, bool) and math.isfinite(float(age))
    return {
        F.COUNTRY: vocabs.countries.lookup([ctx.country]),
        F.REGION: vocabs.regions.lookup([ctx.region]),
        F.GENDER: vocabs.genders.lookup([ctx.gender]),
        F.AGE: np.array([float(age) if known else 0.0], dtype=np.float32),  # type: ignore[arg-type]
        F.AGE_KNOWN: np.array([1.0 if known else 0.0], dtype=np.float32),
    }

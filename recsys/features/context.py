"""A serving request's context (explicit history, searches, demographics) and its query features.

:func:`encode_request` lays a request out as a one-user :class:`~recsys.features.encoder.EventLog`
and encodes it with :mod:`recsys.features.encoder`, the functions training examples are built
with, so training and serving contexts cannot drift apart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.features import contract as F
from recsys.features.contract import FeatureConfig, is_blank
from recsys.features.encoder import (
    EventLog,
    encode_demographics,
    encode_query,
    encode_texts,
    known_watches,
)
from recsys.features.vocab import Vocabularies


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
    kept_s = [
        (q, t)
        for q, t in zip(searches, search_times, strict=True)
        if not is_blank(q) and (ctx.search_times is None or t < moment)
    ]
    searches, search_times = [q for q, _ in kept_s], [t for _, t in kept_s]
    watch_ids = vocabs.items.lookup(history)
    known = known_watches(watch_ids)
    ctx.unknown_videos = int((watch_ids == F.OOV).sum())
    tokens, offsets = encode_texts(searches, vocabs)
    log = EventLog(
        watch_items=watch_ids[known],
        watch_time=np.asarray(watch_times, dtype=np.int64)[known],
        search_time=np.asarray(search_times, dtype=np.int64),
        search_offsets=offsets,
        search_tokens=tokens,
    )
    return encode_query(
        log,
        (0, len(log.watch_items)),
        (0, len(searches)),
        request_demographics(ctx, vocabs),
        0.0,
        moment,
        config,
    )


def request_demographics(ctx: RequestContext, vocabs: Vocabularies) -> dict[str, np.ndarray]:
    """One request's demographic features: what :class:`UserTable` gives its user's row.

    Built without pandas (a one-row frame costs about a millisecond per request); a test
    checks it against ``UserTable.build`` on the same values.
    """
    age = ctx.age
    years = math.nan if age is None or isinstance(age, bool) else float(age)
    return encode_demographics(vocabs, [ctx.country], [ctx.region], [ctx.gender], np.array([years]))

"""Serving profiles encoded once per loaded model: a user_id request's features without strings.

:class:`~recsys.artifact.profiles.Profiles` keeps each user's latest watches and searches as
strings. Turning them into query features at every request (a vocabulary probe per watch,
tokenising every search, a catalog probe per watch for the exclusions) cost more than the query
tower and the index together. :class:`EncodedProfiles` encodes every profile once, when a model
is loaded, with :mod:`recsys.features.encoder` (the encoder training examples are built with)
into one :class:`~recsys.features.encoder.EventLog`; a request then only finds each list's cut at
its moment and calls :func:`~recsys.features.encoder.encode_query`. The features equal what
:func:`~recsys.features.context.encode_request` builds from the same profile: tests check every
user of a trained artifact at several moments, and edge cases (unknown videos, blank searches,
ties).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recsys.artifact.profiles import ProfileError, Profiles
from recsys.features import contract as F
from recsys.features.context import RequestContext, request_demographics
from recsys.features.contract import FeatureConfig
from recsys.features.encoder import (
    EventLog,
    distinct_values,
    encode_demographics,
    encode_query,
    encode_searches,
    encode_texts,
    known_watches,
)
from recsys.features.vocab import Vocabularies
from recsys.live.profiles import LiveProfile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfileQuery:
    """One profile's query at a moment: features (batch of one), as for ``encode_request``."""

    features: dict[str, np.ndarray]
    unknown_videos: int  # stored watches before the moment that the model does not know
    watched_rows: np.ndarray  # int64: catalog rows of the watches before the moment


@dataclass(frozen=True)
class EncodedLive:
    """A live profile's events encoded for one request (few events: encoded per call)."""

    watch_time: np.ndarray  # int64 [w], oldest first
    watch_items: np.ndarray  # vocabulary ids [w] (OOV for videos the model does not know)
    watch_rows: np.ndarray  # int64 catalog rows [w] (-1: not in the catalog)
    search_time: np.ndarray  # int64 [s]
    search_offsets: np.ndarray  # [s + 1] into search_tokens
    search_tokens: np.ndarray


class EncodedProfiles:
    """Every profile's events as vocabulary ids, token ids and catalog rows; read-only."""

    def __init__(
        self,
        profiles: Profiles,
        vocabs: Vocabularies,
        config: FeatureConfig,
        catalog_rows: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        """Encode ``profiles`` (``catalog_rows`` maps an object array of ids to rows or -1)."""
        started = time.perf_counter()
        self.profiles = profiles
        self._vocabs = vocabs
        self._config = config
        ids, self._w_off = profiles.list_column("watch_ids")
        w_time = _times(profiles, "watch_times", self._w_off)
        # Each distinct id is looked up once (a profile table repeats popular videos a lot).
        codes, distinct = distinct_values(ids)
        distinct_ids = np.asarray(distinct, dtype=object)
        w_item = vocabs.items.lookup(distinct_ids)[codes]
        self._w_row = catalog_rows(distinct_ids).astype(np.int32)[codes]
        # The context's history skips unknown videos: the kept ones get their own offsets,
        # the unknown ones a running count.
        known = known_watches(w_item)
        self._w_time = w_time
        self._k_off = _running_count(known)[self._w_off]
        self._oov_before = _running_count(w_item == F.OOV).astype(np.int32)

        searches, s_off = profiles.list_column("searches")
        s_time = _times(profiles, "search_times", s_off)
        kept, tokens, tok_off = encode_searches(searches, vocabs)
        self._s_off = _running_count(kept)[s_off]
        self._log = EventLog(
            watch_items=w_item[known],
            watch_time=w_time[known],
            search_time=s_time[kept],
            search_offsets=tok_off,
            search_tokens=tokens,
        )
        self._demographics = self._encode_demographics(profiles, vocabs)
        log.info(
            "encoded %d profiles (%d watches, %d searches) in %.1f s",
            len(profiles),
            len(w_item),
            len(self._log.search_time),
            time.perf_counter() - started,
        )

    @staticmethod
    def _encode_demographics(profiles: Profiles, vocabs: Vocabularies) -> dict[str, np.ndarray]:
        country, region, age, gender = (
            profiles.column(n) for n in ("country", "region", "age", "gender")
        )
        years = np.asarray(age.cast(pa.float64()).fill_null(np.nan).to_numpy(), dtype=np.float64)
        return encode_demographics(
            vocabs, _objects(country), _objects(region), _objects(gender), years
        )

    def query(self, row: int, moment: int, ctx: RequestContext | None = None) -> ProfileQuery:
        """Profile ``row``'s query at ``moment`` (Unix s); ``ctx``'s demographics win when set.

        Only events strictly before the moment count, as in ``encode_request``; ``ctx``'s
        watch history and searches are not looked at (the caller serves those another way).
        """
        events = self._log
        a, b = int(self._w_off[row]), int(self._w_off[row + 1])
        end = a + int(np.searchsorted(self._w_time[a:b], moment, side="left"))
        ka, kb = int(self._k_off[row]), int(self._k_off[row + 1])
        k_end = ka + int(np.searchsorted(events.watch_time[ka:kb], moment, side="left"))
        sa, sb = int(self._s_off[row]), int(self._s_off[row + 1])
        s_end = sa + int(np.searchsorted(events.search_time[sa:sb], moment, side="left"))
        demographics = self._demographics_of(row, ctx)
        features = encode_query(
            events, (ka, k_end), (sa, s_end), demographics, 0.0, moment, self._config
        )
        rows = self._w_row[a:end]
        return ProfileQuery(
            features=features,
            unknown_videos=int(self._oov_before[end] - self._oov_before[a]),
            watched_rows=rows[rows >= 0].astype(np.int64),
        )

    def encode_live(
        self, live: LiveProfile, catalog_rows: Callable[[np.ndarray], np.ndarray]
    ) -> EncodedLive:
        """``live``'s events as vocabulary ids, catalog rows and token ids."""
        ids = [v for _, v in live.watches]  # a list: a few dict probes, not a pandas index
        tokens, offsets = encode_texts([q for _, q in live.searches], self._vocabs)
        return EncodedLive(
            watch_time=np.asarray([t for t, _ in live.watches], dtype=np.int64),
            watch_items=self._vocabs.items.lookup(ids),
            watch_rows=catalog_rows(np.asarray(ids, dtype=object)),
            search_time=np.asarray([t for t, _ in live.searches], dtype=np.int64),
            search_offsets=offsets,
            search_tokens=tokens,
        )

    def follows(self, row: int | None, live: EncodedLive) -> bool:
        """Whether every live event is later than the stored profile's events of its kind.

        The usual case (events recorded after the export): the merge is then an append, with
        no duplicate possible, which :meth:`query_live` does without strings. Otherwise the
        caller merges the raw profiles (:func:`recsys.live.profiles.merge_profile`).
        """
        if row is None:
            return True
        w_last = self._w_time[self._w_off[row] : self._w_off[row + 1]]
        if len(live.watch_time) and len(w_last) and live.watch_time[0] <= w_last[-1]:
            return False
        s_last = self._log.search_time[self._s_off[row] : self._s_off[row + 1]]
        return not (len(live.search_time) and len(s_last) and live.search_time[0] <= s_last[-1])

    def query_live(
        self,
        row: int | None,
        moment: int,
        live: EncodedLive,
        demographics: RequestContext | None,
    ) -> ProfileQuery:
        """Profile ``row`` (None: a user the artifact does not know) with ``live`` appended.

        Requires :meth:`follows`. ``demographics``: the fields that replace the stored ones
        (the live profile's, then the request's); as :meth:`query` otherwise.
        """
        base = self._log
        if row is None:
            ka = k_end = sa = s_end = a = end = 0
            unknown = 0
            base_rows = np.empty(0, dtype=np.int64)
        else:
            a, b = int(self._w_off[row]), int(self._w_off[row + 1])
            end = a + int(np.searchsorted(self._w_time[a:b], moment, side="left"))
            ka, kb = int(self._k_off[row]), int(self._k_off[row + 1])
            k_end = ka + int(np.searchsorted(base.watch_time[ka:kb], moment, side="left"))
            sa, sb = int(self._s_off[row]), int(self._s_off[row + 1])
            s_end = sa + int(np.searchsorted(base.search_time[sa:sb], moment, side="left"))
            unknown = int(self._oov_before[end] - self._oov_before[a])
            rows = self._w_row[a:end]
            base_rows = rows[rows >= 0].astype(np.int64)
        w_cut = int(np.searchsorted(live.watch_time, moment, side="left"))
        s_cut = int(np.searchsorted(live.search_time, moment, side="left"))
        items, times = live.watch_items[:w_cut], live.watch_time[:w_cut]
        known = known_watches(items)
        merged, watches, searches = base, (ka, k_end), (sa, s_end)
        if known.any() or s_cut:  # else the stored profile alone, as it is
            # Only the tails the features read: the last max_history watches, max_searches
            # searches of the stored profile, then the live ones.
            ka = max(ka, k_end - self._config.max_history)
            sa = max(sa, s_end - self._config.max_searches)
            tok_lo, tok_hi = int(base.search_offsets[sa]), int(base.search_offsets[s_end])
            merged = EventLog(
                watch_items=np.concatenate([base.watch_items[ka:k_end], items[known]]),
                watch_time=np.concatenate([base.watch_time[ka:k_end], times[known]]),
                search_time=np.concatenate([base.search_time[sa:s_end], live.search_time[:s_cut]]),
                search_offsets=np.concatenate(
                    [
                        base.search_offsets[sa : s_end + 1] - tok_lo,
                        live.search_offsets[1 : s_cut + 1] + (tok_hi - tok_lo),
                    ]
                ),
                search_tokens=np.concatenate(
                    [
                        base.search_tokens[tok_lo:tok_hi],
                        live.search_tokens[: int(live.search_offsets[s_cut])],
                    ]
                ),
            )
            watches = (0, len(merged.watch_items))
            searches = (0, len(merged.search_time))
        if row is None:
            features_demographics = request_demographics(
                demographics or RequestContext(), self._vocabs
            )
        else:
            features_demographics = self._demographics_of(row, demographics)
        features = encode_query(
            merged,
            watches,
            searches,
            features_demographics,
            0.0,
            moment,
            self._config,
        )
        live_rows = live.watch_rows[:w_cut]
        return ProfileQuery(
            features=features,
            unknown_videos=unknown + int((items == F.OOV).sum()),
            watched_rows=np.concatenate([base_rows, live_rows[live_rows >= 0]]),
        )

    def _demographics_of(self, row: int, ctx: RequestContext | None) -> dict[str, np.ndarray]:
        if ctx is None or all(v is None for v in (ctx.country, ctx.region, ctx.age, ctx.gender)):
            return {name: values[row : row + 1] for name, values in self._demographics.items()}
        country, region, age, gender = self.profiles.demographics(row)
        merged = RequestContext(
            country=ctx.country if ctx.country is not None else country,
            region=ctx.region if ctx.region is not None else region,
            age=ctx.age if ctx.age is not None else age,
            gender=ctx.gender if ctx.gender is not None else gender,
        )
        return request_demographics(merged, self._vocabs)


def _running_count(flags: np.ndarray) -> np.ndarray:
    """``[len + 1]`` int64: how many of ``flags`` are set before each position."""
    out = np.zeros(len(flags) + 1, dtype=np.int64)
    np.cumsum(flags, out=out[1:])
    return out


def _objects(column: pa.Array) -> np.ndarray:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)


def _times(profiles: Profiles, name: str, offsets: np.ndarray) -> np.ndarray:
    """A times list column as int64, checked to match ``offsets`` and be oldest first."""
    values, own = profiles.list_column(name)
    if not np.array_equal(own, offsets):
        raise ProfileError(f"profiles: {name} does not have one time per event")
    times = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)  # no copy
    if values.null_count:
        raise ProfileError(f"profiles: {name} has nulls")
    later = np.flatnonzero(np.diff(times) < 0) + 1  # positions earlier than their predecessor
    later = later[~np.isin(later, offsets)]  # a user's first event may be earlier than the last
    if len(later):
        user = int(np.searchsorted(offsets, later[0], side="right")) - 1
        raise ProfileError(
            f"profiles: {name} of user {profiles.user_id_at(user)!r} are not oldest first"
        )
    return times

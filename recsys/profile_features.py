"""Serving profiles encoded once per loaded model: a user_id request's features without strings.

:class:`~recsys.profiles.Profiles` keeps each user's latest watches and searches as strings.
Turning them into query features at every request (a vocabulary probe per watch, tokenising
every search, a catalog probe per watch for the exclusions) cost more than the query tower
and the index together. :class:`EncodedProfiles` does that work once, for every profile, when
a model is loaded: watches become vocabulary ids and catalog rows, searches token ids. A
request then only cuts each list at its moment and calls :func:`recsys.context.encode_queries`,
the function training uses, so the features equal what :func:`~recsys.context.encode_request`
builds from the same profile (a test checks every user at several moments).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recsys import features as F
from recsys.catalog import encode_texts
from recsys.context import EventLog, RequestContext, encode_queries, request_demographics
from recsys.features import FeatureConfig
from recsys.profiles import ProfileError, Profiles
from recsys.vocab import Vocabularies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfileQuery:
    """One profile's query at a moment: features (batch of one), as for ``encode_request``."""

    features: dict[str, np.ndarray]
    unknown_videos: int  # stored watches before the moment that the model does not know
    watched_rows: np.ndarray  # int64: catalog rows of the watches before the moment


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
        self._w_time = _times(profiles, "watch_times", self._w_off)
        id_array = ids.to_numpy(zero_copy_only=False)
        self._w_item = vocabs.items.lookup(id_array)
        self._w_row = catalog_rows(id_array).astype(np.int32)

        searches, s_off = profiles.list_column("searches")
        s_time = _times(profiles, "search_times", s_off)
        texts = searches.to_pylist()
        # Blank searches never count (encode_request drops them whatever the moment).
        kept = np.fromiter((bool(q and q.strip()) for q in texts), dtype=bool, count=len(texts))
        if not kept.all():
            before = np.zeros(len(texts) + 1, dtype=np.int64)
            np.cumsum(kept, out=before[1:])
            s_off, s_time = before[s_off], s_time[kept]
            texts = [q for q, k in zip(texts, kept.tolist(), strict=True) if k]
        self._s_off = s_off
        self._s_time = s_time
        self._s_tokens, self._tok_off = encode_texts(texts, vocabs)

        country, region, age, gender = (
            profiles.column(n) for n in ("country", "region", "age", "gender")
        )
        known_age = np.asarray(age.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        self._demographics = {
            F.COUNTRY: vocabs.countries.lookup(_objects(country)),
            F.REGION: vocabs.regions.lookup(_objects(region)),
            F.GENDER: vocabs.genders.lookup(_objects(gender)),
            F.AGE: np.where(known_age, age.fill_null(0).to_numpy(zero_copy_only=False), 0.0).astype(
                np.float32
            ),
            F.AGE_KNOWN: known_age.astype(np.float32),
        }
        self._zero_age = np.zeros(1, dtype=np.float32)
        log.info(
            "encoded %d profiles (%d watches, %d searches) in %.1f s",
            len(profiles),
            len(self._w_item),
            len(texts),
            time.perf_counter() - started,
        )

    def query(self, row: int, moment: int, ctx: RequestContext | None = None) -> ProfileQuery:
        """Profile ``row``'s query at ``moment`` (Unix s); ``ctx``'s demographics win when set.

        Only events strictly before the moment count, as in ``encode_request``; ``ctx``'s
        watch history and searches are not looked at (the caller serves those another way).
        """
        a, b = int(self._w_off[row]), int(self._w_off[row + 1])
        end = a + int(np.searchsorted(self._w_time[a:b], moment, side="left"))
        items = self._w_item[a:end]
        known = items > F.OOV
        if known.all():  # the usual case: the shared arrays with a range, no copies
            watches, w_range = self._w_item, (a, end)
            w_time = self._w_time
        else:
            watches, w_time = items[known], self._w_time[a:end][known]
            w_range = (0, len(watches))
        sa, sb = int(self._s_off[row]), int(self._s_off[row + 1])
        s_end = sa + int(np.searchsorted(self._s_time[sa:sb], moment, side="left"))
        events = EventLog(
            watch_items=watches,
            watch_time=w_time,
            search_time=self._s_time,
            search_offsets=self._tok_off,
            search_tokens=self._s_tokens,
        )
        features = encode_queries(
            events,
            (np.array([w_range[0]]), np.array([w_range[1]])),
            (np.array([sa]), np.array([s_end])),
            self._demographics_of(row, ctx),
            self._zero_age,
            np.array([moment], dtype=np.int64),
            self._config,
        )
        rows = self._w_row[a:end]
        return ProfileQuery(
            features=features,
            unknown_videos=int(np.count_nonzero(items == F.OOV)),
            watched_rows=rows[rows >= 0].astype(np.int64),
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


def _objects(column: pa.Array) -> np.ndarray:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)


def _times(profiles: Profiles, name: str, offsets: np.ndarray) -> np.ndarray:
    """A times list column as int64, checked to match ``offsets`` and be oldest first."""
    values, own = profiles.list_column(name)
    if not np.array_equal(own, offsets):
        raise ProfileError(f"profiles: {name} does not have one time per event")
    times = values.to_numpy(zero_copy_only=False).astype(np.int64)
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

"""A user's live profile (events recorded since the export) and its merge into a served context.

The artifact's profile is the base; the live events are merged in time order, an exact
duplicate (same time and video, or same time and query) counted once. The merged context is
what a request's query features are computed from, so a live watch counts exactly as a
stored one: before the request's moment only, and among the watched videos excluded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from recsys.features.context import RequestContext
from recsys.live.events import Demographics

TimedValue = tuple[int, str]  # (Unix seconds, video id or query text)


@dataclass(frozen=True)
class LiveProfile:
    """What the profile store holds for one user: oldest first, raw ids and texts."""

    watches: tuple[TimedValue, ...] = ()
    searches: tuple[TimedValue, ...] = ()
    demographics: Demographics | None = None

    @property
    def empty(self) -> bool:
        """Whether the store knows nothing of the user."""
        return not (self.watches or self.searches or self.demographics)

    @property
    def num_events(self) -> int:
        """Watches and searches held."""
        return len(self.watches) + len(self.searches)


def merge_timed(base: Iterable[TimedValue], live: Iterable[TimedValue]) -> list[TimedValue]:
    """``base`` and ``live`` in time order (``base`` first on equal times), duplicates once."""
    seen: set[TimedValue] = set()
    merged: list[TimedValue] = []
    for pair in (*base, *live):
        if pair not in seen:
            seen.add(pair)
            merged.append(pair)
    merged.sort(key=lambda pair: pair[0])  # stable: ties keep base-then-live order
    return merged


def _timed(values: Sequence[str], times: Sequence[int] | None) -> list[TimedValue]:
    if times is None:  # a context without times: every event counts as just before the moment
        raise ValueError("a stored profile always has times")
    return [(int(t), v) for v, t in zip(values, times, strict=True)]


def merge_profile(base: RequestContext | None, live: LiveProfile) -> RequestContext:
    """``base`` (the artifact's profile, or None) with ``live``'s events and demographics.

    Live demographics replace the base's field by field (newer information wins).
    """
    base = base or RequestContext(watch_times=[], search_times=[])
    watches = merge_timed(_timed(base.watch_history, base.watch_times), live.watches)
    searches = merge_timed(_timed(base.searches, base.search_times), live.searches)
    demo = live.demographics or Demographics(user_id="")
    return RequestContext(
        watch_history=[v for _, v in watches],
        watch_times=[t for t, _ in watches],
        searches=[q for _, q in searches],
        search_times=[t for t, _ in searches],
        country=demo.country if demo.country is not None else base.country,
        region=demo.region if demo.region is not None else base.region,
        age=demo.age if demo.age is not None else base.age,
        gender=demo.gender if demo.gender is not None else base.gender,
        request_time=base.request_time,
    )

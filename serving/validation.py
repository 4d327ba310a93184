"""Requests checked before any work: proto messages in, the library's typed values out.

Every check names the field it refuses (``context.watch_history[3] ...``,
``events[12].video_id ...``) with a :class:`~recsys.features.limits.FieldError`, which the
servicer answers with INVALID_ARGUMENT. The limits themselves are the library's
(:mod:`recsys.features.limits`, :mod:`recsys.live.events`), one definition for every way in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recsys.features.context import RequestContext
from recsys.features.limits import (
    MAX_EXCLUDE_IDS,
    MAX_HISTORY,
    MAX_ID_BYTES,
    MAX_SEARCH_BYTES,
    MAX_SEARCHES,
    MAX_SHORT_TEXT_BYTES,
    FieldError,
    check_age,
    check_gender,
    check_id,
    check_ids,
    check_text,
    check_time,
)
from recsys.inference.request import MAX_K
from recsys.live.events import Demographics, Event
from recsys_serving.proto import pb2


@dataclass(frozen=True)
class CheckedRecommend:
    """A validated Recommend request in library terms."""

    user_id: str | None
    context: RequestContext | None
    k: int
    exclude_watched: bool
    exclude_ids: tuple[str, ...]
    category: str | None
    use_live_profile: bool


def _check_times(times: Sequence[int], count: int, field: str, of: str) -> list[int] | None:
    if not times:
        return None
    if len(times) != count:
        raise FieldError(
            f"{field} has {len(times)} entries for {count} {of}: send none or exactly one each"
        )
    return [check_time(t, f"{field}[{i}]") for i, t in enumerate(times)]


def _optional_text(message: object, field: str, where: str) -> str | None:
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    value = getattr(message, field)
    return check_text(value, f"{where}.{field}", MAX_SHORT_TEXT_BYTES) or None


def _check_age(message: object, where: str) -> int | None:
    if not message.HasField("age"):  # type: ignore[attr-defined]
        return None
    return check_age(int(message.age), f"{where}.age")  # type: ignore[attr-defined]


def _check_gender(message: object, where: str) -> str | None:
    gender = _optional_text(message, "gender", where)
    return None if gender is None else check_gender(gender, f"{where}.gender")


def _check_context(c: pb2.UserContext, request_time: int | None) -> RequestContext:
    history = check_ids(c.watch_history, "context.watch_history", MAX_HISTORY)
    if len(c.searches) > MAX_SEARCHES:
        raise FieldError(
            f"context.searches has {len(c.searches)} queries; at most {MAX_SEARCHES} are accepted"
        )
    searches = [
        check_text(q, f"context.searches[{i}]", MAX_SEARCH_BYTES) for i, q in enumerate(c.searches)
    ]
    return RequestContext(
        watch_history=history,
        watch_times=_check_times(
            c.watch_times, len(history), "context.watch_times", "watch_history ids"
        ),
        searches=searches,
        search_times=_check_times(
            c.search_times, len(searches), "context.search_times", "searches"
        ),
        country=_optional_text(c, "country", "context"),
        region=_optional_text(c, "region", "context"),
        age=_check_age(c, "context"),
        gender=_check_gender(c, "context"),
        request_time=request_time,
    )


def check_recommend(request: pb2.RecommendRequest) -> CheckedRecommend:
    """Validate a RecommendRequest; FieldError names the bad field."""
    if not 1 <= request.k <= MAX_K:
        raise FieldError(f"k must be in 1..{MAX_K}, got {request.k}")
    user_id = check_id(request.user_id, "user_id") if request.user_id else None
    request_time = None
    if request.HasField("request_time"):
        request_time = check_time(request.request_time, "request_time")
    ctx: RequestContext | None = None
    if request.HasField("context"):
        ctx = _check_context(request.context, request_time)
    elif request_time is not None:
        ctx = RequestContext(request_time=request_time)
    empty = ctx is None or not (
        ctx.watch_history
        or ctx.searches
        or any(v is not None for v in (ctx.country, ctx.region, ctx.age, ctx.gender))
    )
    if empty and user_id is None:
        raise FieldError(
            "context is empty and user_id is unset: send a user_id, a context, or both"
        )
    category = None
    if request.HasField("category"):
        category = check_text(request.category, "category", MAX_ID_BYTES)
    return CheckedRecommend(
        user_id=user_id,
        context=ctx,
        k=request.k,
        exclude_watched=request.exclude_watched if request.HasField("exclude_watched") else True,
        exclude_ids=tuple(check_ids(request.exclude_ids, "exclude_ids", MAX_EXCLUDE_IDS)),
        category=category,
        use_live_profile=(
            request.use_live_profile if request.HasField("use_live_profile") else True
        ),
    )


def events_from_request(
    request: pb2.RecordEventsRequest,
) -> tuple[list[Event], list[Demographics]]:
    """A RecordEventsRequest's events and users in library terms.

    The batch is checked by :func:`recsys.live.events.check_batch` (the store's own rule);
    here only what proto3 adds: "" for an unset country or region means unknown.
    """
    events = [
        Event(
            user_id=e.user_id,
            time=e.time,
            type=e.type,
            video_id=e.video_id,
            query=e.query,
            watch_fraction=e.watch_fraction if e.HasField("watch_fraction") else None,
        )
        for e in request.events
    ]
    users = [
        Demographics(
            user_id=u.user_id,
            country=u.country or None,  # proto3's "" for an unset country: unknown
            region=u.region or None,
            age=u.age if u.HasField("age") else None,
            gender=u.gender if u.HasField("gender") else None,
        )
        for u in request.users
    ]
    return events, users

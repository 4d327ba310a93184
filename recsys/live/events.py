"""Users' events as they arrive (watches, searches, demographics) and the checks of a batch.

A batch is checked whole before any of it is stored: the first bad event raises
:class:`EventError` naming its index and field (``events[12].video_id: ...``), so a batch is
either stored entirely or not at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from recsys.dataset.schema import EVENT_SEARCH, EVENT_TYPES, EVENT_WATCH
from recsys.features.contract import is_blank
from recsys.features.limits import (
    MAX_SEARCH_BYTES,
    MAX_SHORT_TEXT_BYTES,
    FieldError,
    check_age,
    check_gender,
    check_id,
    check_text,
    check_time,
)

MAX_EVENTS_PER_BATCH = 10_000
MAX_USERS_PER_BATCH = 10_000
MAX_FUTURE_S = 86_400  # an event more than a day ahead of the server's clock is a bad clock


class EventError(FieldError):
    """A batch holds a bad event or user; the message names its index and field."""


@dataclass(frozen=True)
class Event:
    """One watch or search, in the canonical dataset's terms (``type``: watch | search).

    A watch has ``video_id`` (and optionally ``watch_fraction`` in 0..1); a search has a
    non-blank ``query``.
    """

    user_id: str
    time: int  # Unix seconds
    type: str
    video_id: str = ""
    query: str = ""
    watch_fraction: float | None = None


@dataclass(frozen=True)
class Demographics:
    """Who a user is, for users the model has not seen (every field optional)."""

    user_id: str
    country: str | None = None
    region: str | None = None
    age: int | None = None
    gender: str | None = None


def _check_event(event: Event, where: str, latest: int) -> None:
    check_id(event.user_id, f"{where}.user_id")
    check_time(event.time, f"{where}.time")
    if event.time > latest:
        raise FieldError(
            f"{where}.time = {event.time} is more than {MAX_FUTURE_S} s ahead of the server's "
            f"clock ({latest - MAX_FUTURE_S})"
        )
    if event.type == EVENT_WATCH:
        check_id(event.video_id, f"{where}.video_id")
        fraction = event.watch_fraction
        if fraction is not None and not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise FieldError(f"{where}.watch_fraction = {fraction} is not in 0..1")
        if event.query:
            raise FieldError(f"{where}.query is set on a watch (only searches have queries)")
    elif event.type == EVENT_SEARCH:
        check_text(event.query, f"{where}.query", MAX_SEARCH_BYTES)
        if is_blank(event.query):
            raise FieldError(f"{where}.query is blank: a search needs its text")
        if event.video_id:
            raise FieldError(f"{where}.video_id is set on a search (only watches have videos)")
    else:
        raise FieldError(f"{where}.type is {event.type!r}; expected one of {EVENT_TYPES}")


def _check_user(user: Demographics, where: str) -> None:
    check_id(user.user_id, f"{where}.user_id")
    for name in ("country", "region"):
        value = getattr(user, name)
        if value is not None:
            check_text(value, f"{where}.{name}", MAX_SHORT_TEXT_BYTES)
    if user.age is not None:
        check_age(user.age, f"{where}.age")
    if user.gender is not None:
        check_gender(user.gender, f"{where}.gender")


def check_batch(events: Sequence[Event], users: Sequence[Demographics], now: int) -> None:
    """Raise :class:`EventError` for the first bad event or user of a batch (nothing if good).

    ``now``: the server's clock (Unix s); events more than a day after it are refused.
    """
    if len(events) > MAX_EVENTS_PER_BATCH:
        raise EventError(
            f"events has {len(events)} entries; at most {MAX_EVENTS_PER_BATCH} per call: "
            "split the batch"
        )
    if len(users) > MAX_USERS_PER_BATCH:
        raise EventError(f"users has {len(users)} entries; at most {MAX_USERS_PER_BATCH}")
    if not events and not users:
        raise EventError("events and users are both empty: nothing to record")
    latest = now + MAX_FUTURE_S
    for i, event in enumerate(events):
        try:
            _check_event(event, f"events[{i}]", latest)
        except FieldError as exc:
            raise EventError(str(exc)) from None
    for i, user in enumerate(users):
        try:
            _check_user(user, f"users[{i}]")
        except FieldError as exc:
            raise EventError(str(exc)) from None

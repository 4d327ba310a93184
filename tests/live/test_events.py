"""A batch of events is checked whole, and the first bad event is named by index and field."""

from __future__ import annotations

import pytest

from recsys.features.limits import MAX_ID_BYTES, MAX_SEARCH_BYTES
from recsys.live.events import (
    MAX_EVENTS_PER_BATCH,
    MAX_FUTURE_S,
    Demographics,
    Event,
    EventError,
    check_batch,
)

NOW = 1_800_000_000


def watch(user: str = "u1", t: int = NOW - 60, video: str = "v1", **kw: object) -> Event:
    return Event(user, t, "watch", video_id=video, **kw)  # type: ignore[arg-type]


def search(user: str = "u1", t: int = NOW - 60, query: str = "cats") -> Event:
    return Event(user, t, "search", query=query)


def test_a_good_batch_passes() -> None:
    check_batch(
        [watch(watch_fraction=0.5), search(), watch(t=NOW + MAX_FUTURE_S)],
        [Demographics("u9", country="US", age=30, gender="f")],
        NOW,
    )


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (Event("u1", NOW, "like", video_id="v1"), "events[1].type"),
        (watch(video=""), "events[1].video_id"),
        (watch(user=""), "events[1].user_id"),
        (watch(user="has space"), "events[1].user_id"),
        (watch(video="v" * (MAX_ID_BYTES + 1)), "events[1].video_id"),
        (watch(t=NOW + MAX_FUTURE_S + 1), "events[1].time"),
        (watch(t=-5), "events[1].time"),
        (watch(watch_fraction=1.5), "events[1].watch_fraction"),
        (watch(watch_fraction=float("nan")), "events[1].watch_fraction"),
        (search(query="   "), "events[1].query"),
        (search(query="q" * (MAX_SEARCH_BYTES + 1)), "events[1].query"),
        (search(query="a\nb"), "events[1].query"),
        (Event("u1", NOW, "search", query="x", video_id="v1"), "events[1].video_id"),
        (Event("u1", NOW, "watch", video_id="v1", query="x"), "events[1].query"),
    ],
)
def test_a_bad_event_is_named_by_index_and_field(bad: Event, named: str) -> None:
    with pytest.raises(EventError) as caught:
        check_batch([watch(), bad, watch()], [], NOW)
    assert str(caught.value).startswith(named), str(caught.value)


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (Demographics("u2", age=0), "users[0].age"),
        (Demographics("u2", gender="q"), "users[0].gender"),
        (Demographics("u2", country="x" * 65), "users[0].country"),
        (Demographics("", country="US"), "users[0].user_id"),
    ],
)
def test_bad_demographics_are_named(bad: Demographics, named: str) -> None:
    with pytest.raises(EventError) as caught:
        check_batch([watch()], [bad], NOW)
    assert str(caught.value).startswith(named), str(caught.value)


def test_batch_size_and_emptiness_are_checked() -> None:
    with pytest.raises(EventError, match="at most 10000 per call"):
        check_batch([watch()] * (MAX_EVENTS_PER_BATCH + 1), [], NOW)
    with pytest.raises(EventError, match="nothing to record"):
        check_batch([], [], NOW)

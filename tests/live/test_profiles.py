"""Live events merge into the artifact's profile in time order, exact duplicates once."""

from __future__ import annotations

from recsys.features.context import RequestContext
from recsys.live.events import Demographics
from recsys.live.profiles import LiveProfile, merge_profile, merge_timed


def test_merge_keeps_time_order_and_drops_exact_duplicates() -> None:
    base = [(10, "a"), (20, "b"), (30, "c")]
    live = [(5, "z"), (20, "b"), (20, "x"), (40, "d")]
    # (20, "b") is in both: once; equal times keep base before live.
    assert merge_timed(base, live) == [
        (5, "z"),
        (10, "a"),
        (20, "b"),
        (20, "x"),
        (30, "c"),
        (40, "d"),
    ]
    # The same video at another time is another watch (a rewatch), not a duplicate.
    assert merge_timed([(10, "a")], [(11, "a")]) == [(10, "a"), (11, "a")]


def test_merge_profile_adds_live_events_and_newer_demographics() -> None:
    base = RequestContext(
        watch_history=["a", "b"],
        watch_times=[10, 20],
        searches=["cats"],
        search_times=[15],
        country="US",
        age=30,
        gender="f",
    )
    live = LiveProfile(
        watches=((25, "c"), (20, "b")),
        searches=((26, "dogs"),),
        demographics=Demographics("u1", country="DE"),
    )
    merged = merge_profile(base, live)
    assert list(merged.watch_history) == ["a", "b", "c"]
    assert list(merged.watch_times or []) == [10, 20, 25]
    assert list(merged.searches) == ["cats", "dogs"]
    assert list(merged.search_times or []) == [15, 26]
    assert (merged.country, merged.age, merged.gender) == ("DE", 30, "f")


def test_a_user_unknown_to_the_artifact_gets_the_live_profile_alone() -> None:
    live = LiveProfile(watches=((5, "v1"),), demographics=Demographics("new", age=41))
    merged = merge_profile(None, live)
    assert list(merged.watch_history) == ["v1"]
    assert list(merged.watch_times or []) == [5]
    assert merged.age == 41
    assert LiveProfile().empty
    assert not live.empty
    assert live.num_events == 1

"""The online evaluation's replay: every request sees exactly the events before its moment."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys.cli.main import main
from recsys.evaluation.online import OnlineService, Served, held_out, replay_and_score
from recsys.live.events import Demographics, Event
from recsys.live.profile_store import Caps
from recsys.live.sqlite_profiles import SQLiteProfileStore
from recsys_serving.server import RecommenderServer, ServerConfig


class Recorder:
    """An OnlineService that keeps what it was sent and answers from it."""

    def __init__(self) -> None:
        self.recorded: list[Event] = []
        self.calls: list[tuple[str, int, bool, int]] = []  # user, time, live, events known

    def recommend(
        self,
        user_id: str,
        k: int,
        request_time: int,
        use_live_profile: bool,
        exclude_watched: bool,
    ) -> Served | None:
        known = [e for e in self.recorded if e.user_id == user_id and e.time < request_time]
        self.calls.append((user_id, request_time, use_live_profile, len(known)))
        if not use_live_profile:
            return None  # the frozen profile knows nobody here
        # "recommends" the videos the user watched, newest first
        return Served([e.video_id for e in reversed(known) if e.type == "watch"][:k])

    def record(self, events: Sequence[Event], users: Sequence[Demographics]) -> None:
        self.recorded.extend(events)


def test_each_request_sees_every_earlier_event_of_its_user_and_none_later() -> None:
    events = [
        Event("a", 10, "watch", video_id="x"),
        Event("b", 11, "watch", video_id="y"),
        Event("a", 12, "search", query="q"),
        Event("a", 13, "watch", video_id="x"),  # a rewatch: the "recommendation" hits
        Event("b", 14, "watch", video_id="z"),
    ]
    service: OnlineService = Recorder()
    live, frozen, unavailable = replay_and_score(events, {}, np.array([3, 4]), service, (1, 10))
    assert isinstance(service, Recorder)
    assert service.calls == [
        ("a", 13, True, 2),
        ("a", 13, False, 2),
        ("b", 14, True, 1),
        ("b", 14, False, 1),
    ]
    assert service.recorded == events  # all of them, in order
    # a at 13 is served ["x"] (a hit at 1), b at 14 ["y"] (label "z": a miss)
    assert live.hits == {1: 1, 10: 1}
    assert frozen.unknown == 2
    assert unavailable == 0


def test_held_out_is_a_seeded_sample_of_watches() -> None:
    events = [
        Event("a", t, "watch", video_id="v") if t % 3 else Event("a", t, "search", query="q")
        for t in range(30)
    ]
    first, again = held_out(events, 5, seed=1), held_out(events, 5, seed=1)
    assert np.array_equal(first, again)
    assert len(first) == 5
    assert all(events[i].type == "watch" for i in first)
    assert list(first) == sorted(first)


@pytest.mark.slow
def test_recsys_evaluate_online_against_a_running_server(
    trained_artifact: Path, tiny_world: Path, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(
        trained_artifact.parent, artifacts / "tiny", ignore=shutil.ignore_patterns(".work")
    )
    server = RecommenderServer(ServerConfig(artifacts=artifacts, name="tiny", grace_s=0.5))
    server.start()
    out = tmp_path / "online"
    try:
        code = main(
            [
                "evaluate",
                "--online",
                "--target",
                f"127.0.0.1:{server.port}",
                "--data",
                str(tiny_world),
                "--out",
                str(out),
                "--max-queries",
                "40",
                "--k",
                "10,100",
            ]
        )
    finally:
        server.stop(0.2)
    assert code == 0
    online = json.loads((out / "online.json").read_text())
    assert online["queries"] == 40
    for key in ("live", "frozen"):
        assert 0.0 <= online["recall"][key]["10"] <= online["recall"][key]["100"] <= 1.0
    assert "frozen (artifact)" in (out / "online.html").read_text()
    # The window's events are now in the server's store, for the users who had them.
    events = pq.read_table(tiny_world / "events.parquet").to_pandas()
    window = events[events["timestamp"] >= online["cutoff"]]
    assert online["events_replayed"] == len(window)
    last = window[window["type"] == "watch"].sort_values("timestamp").iloc[-1]
    store = SQLiteProfileStore(artifacts / "tiny" / "live" / "profiles.sqlite3", Caps())
    assert (int(last["timestamp"]), last["item_id"]) in store.get(last["user_id"]).watches
    store.close()

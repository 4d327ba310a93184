"""RecordEvents and live profiles through a real server: events in, fresh recommendations out."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from recsys.features.context import RequestContext
from recsys.inference.recommender import Recommender
from recsys.live import redis_profiles
from recsys.live.events import Demographics, Event
from recsys.live.profile_store import Caps
from recsys.live.registry import default_store_path
from recsys.live.sqlite_profiles import SQLiteProfileStore
from recsys_serving.client import Context, RecommenderClient, RecommenderError
from recsys_serving.proto import pb2, pb2_grpc
from recsys_serving.server import RecommenderServer, ServerConfig
from tests.live.conftest import REDIS_URL, RedisServer
from tests.serving.test_replicas import _alive, _children, _wait_for

REQUEST_TIME = 1_800_000_000
EVENT_TIME = 1_790_000_000  # after the tiny world's log, before REQUEST_TIME


@pytest.fixture(scope="module")
def artifacts(trained_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("live") / "artifacts"
    shutil.copytree(
        trained_artifact.parent, root / "tiny", ignore=shutil.ignore_patterns(".work", ".tmp-*")
    )
    return root


def _start(artifacts: Path, store: str) -> RecommenderServer:
    config = ServerConfig(artifacts=artifacts, name="tiny", grace_s=0.5, profile_store=store)
    server = RecommenderServer(config)
    server.start()
    return server


@pytest.fixture(scope="module")
def library(trained_artifact: Path) -> Recommender:
    return Recommender.load(trained_artifact)


@pytest.fixture(scope="module")
def client(artifacts: Path) -> Iterator[RecommenderClient]:
    server = _start(artifacts, "embedded")
    with RecommenderClient(f"127.0.0.1:{server.port}", retries=0) as c:
        yield c
    server.stop(0.5)


def _watches(user: str, videos: list[str], start: int = EVENT_TIME) -> list[Event]:
    return [Event(user, start + i, "watch", video_id=v) for i, v in enumerate(videos)]


def test_recorded_watches_change_the_next_recommendations(
    client: RecommenderClient, library: Recommender
) -> None:
    assert library.profiles is not None
    user = library.profiles.user_id_at(3)
    before = client.recommend(user_id=user, k=20, request_time=REQUEST_TIME)
    watched = [i.item_id for i in before.items[:5]]  # the user now watches the top five
    recorded = client.record_events(
        [*_watches(user, watched), Event(user, EVENT_TIME + 9, "search", query="live music")]
    )
    assert (recorded.recorded, recorded.duplicates) == (6, 0)
    assert recorded.profile_store.startswith("sqlite:")

    after = client.recommend(user_id=user, k=20, request_time=REQUEST_TIME)
    assert after.live_events == 6
    assert after.used_profile
    ids = [i.item_id for i in after.items]
    assert not set(watched) & set(ids)  # live watches are excluded like stored ones
    # Exactly what the library serves for the stored profile with the events appended.
    profile = library.profiles.context(user)
    assert profile is not None
    merged = RequestContext(
        watch_history=[*profile.watch_history, *watched],
        watch_times=[*(profile.watch_times or []), *range(EVENT_TIME, EVENT_TIME + 5)],
        searches=[*profile.searches, "live music"],
        search_times=[*(profile.search_times or []), EVENT_TIME + 9],
        country=profile.country,
        region=profile.region,
        age=profile.age,
        gender=profile.gender,
        request_time=REQUEST_TIME,
    )
    expected = library.recommend(merged, None, 20)
    assert ids == [i.item_id for i in expected.items]

    # Before the events' time they do not count; the frozen profile ignores them altogether.
    earlier = client.recommend(user_id=user, k=20, request_time=EVENT_TIME)
    frozen = client.recommend(user_id=user, k=20, request_time=EVENT_TIME, use_live_profile=False)
    assert [i.item_id for i in earlier.items] == [i.item_id for i in frozen.items]
    assert frozen.live_events == 0
    again = client.recommend(user_id=user, k=20, request_time=REQUEST_TIME, use_live_profile=False)
    assert [i.item_id for i in again.items] == [i.item_id for i in before.items]


def test_a_new_user_with_events_gets_personalised_recommendations(
    client: RecommenderClient, library: Recommender
) -> None:
    user = f"new-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RecommenderError) as caught:
        client.recommend(user_id=user, k=10, request_time=REQUEST_TIME)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    videos = [str(v) for v in library.catalog.ids[10:14]]
    client.record_events(_watches(user, videos), [Demographics(user, country="US", age=25)])
    reply = client.recommend(user_id=user, k=10, request_time=REQUEST_TIME)
    assert reply.used_profile
    assert reply.live_events == 4
    expected = library.recommend(
        RequestContext(
            watch_history=videos,
            watch_times=list(range(EVENT_TIME, EVENT_TIME + len(videos))),
            country="US",
            age=25,
            request_time=REQUEST_TIME,
        ),
        None,
        10,
    )
    assert [i.item_id for i in reply.items] == [i.item_id for i in expected.items]


def test_a_bad_batch_is_refused_whole_naming_the_event(
    client: RecommenderClient, artifacts: Path
) -> None:
    user = f"bad-{uuid.uuid4().hex[:8]}"
    good = Event(user, EVENT_TIME, "watch", video_id="v1")
    cases = [
        (Event(user, EVENT_TIME, "watch"), "events[1].video_id"),
        (Event(user, EVENT_TIME, "like", video_id="v1"), "events[1].type"),
        (Event(user, int(time.time()) + 2 * 86_400, "search", query="x"), "events[1].time"),
        (Event("", EVENT_TIME, "search", query="x"), "events[1].user_id"),
    ]
    for bad, field in cases:
        with pytest.raises(RecommenderError) as caught:
            client.record_events([good, bad])
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in caught.value.details
    with pytest.raises(RecommenderError) as caught:
        client.record_events([good], [Demographics(user, gender="q")])
    assert "users[0].gender" in caught.value.details
    store = SQLiteProfileStore(default_store_path(artifacts, "tiny"), Caps())
    assert store.get(user).empty  # nothing of any refused batch was stored
    store.close()
    assert client.model_info().profile_store.startswith("sqlite:")


def test_more_than_10000_events_per_call_are_refused(client: RecommenderClient) -> None:
    batch = _watches("u-many", ["v"] * 10_001)
    with pytest.raises(RecommenderError, match="at most 10000 per call"):
        client.record_events(batch)


def test_without_a_store_record_events_is_unavailable(artifacts: Path) -> None:
    server = _start(artifacts, "none")
    try:
        with RecommenderClient(f"127.0.0.1:{server.port}", retries=0) as c:
            with pytest.raises(RecommenderError) as caught:
                c.record_events(_watches("u1", ["v1"]))
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE
            assert c.model_info().profile_store == ""
    finally:
        server.stop(0.2)


def test_redis_down_record_is_unavailable_recommend_falls_back_then_both_recover(
    artifacts: Path, library: Recommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_profiles, "RETRY_AFTER_S", 0.2)
    own = RedisServer()
    own.start()
    server = _start(artifacts, own.url)
    assert library.profiles is not None
    user = library.profiles.user_id_at(5)
    videos = [str(v) for v in library.catalog.ids[:3]]
    try:
        with RecommenderClient(f"127.0.0.1:{server.port}", retries=0) as c:
            c.record_events(_watches(user, videos))
            assert c.recommend(user_id=user, k=5, request_time=REQUEST_TIME).live_events == 3
            own.stop()
            with pytest.raises(RecommenderError) as caught:
                c.record_events(_watches(user, ["v9"]))
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE
            fallback = c.recommend(user_id=user, k=5, request_time=REQUEST_TIME)
            assert fallback.profile_store_unavailable
            assert fallback.used_profile
            assert fallback.live_events == 0
            frozen = c.recommend(
                user_id=user, k=5, request_time=REQUEST_TIME, use_live_profile=False
            )
            assert [i.item_id for i in fallback.items] == [i.item_id for i in frozen.items]
            own.start()  # no persistence: the restarted Redis is empty
            time.sleep(0.3)
            c.record_events(_watches(user, videos[:2]))
            back = c.recommend(user_id=user, k=5, request_time=REQUEST_TIME)
            assert not back.profile_store_unavailable
            assert back.live_events == 2
    finally:
        server.stop(0.2)
        own.stop()


def test_read_your_writes_across_two_replicas_sharing_redis(
    artifacts: Path, library: Recommender
) -> None:
    url = f"{REDIS_URL}?prefix=recsys-test:{uuid.uuid4().hex}"
    first, second = _start(artifacts, url), _start(artifacts, url)
    videos = [str(v) for v in library.catalog.ids[:40]]
    try:
        with (
            RecommenderClient(f"127.0.0.1:{first.port}", retries=0) as a,
            RecommenderClient(f"127.0.0.1:{second.port}", retries=0) as b,
        ):
            for n in range(20):
                user = f"ryw-{n}"
                a.record_events(_watches(user, videos[n : n + 2]))
                reply = b.recommend(user_id=user, k=10, request_time=REQUEST_TIME)
                assert reply.live_events == 2
                assert not {i.item_id for i in reply.items} & set(videos[n : n + 2])
    finally:
        first.stop(0.2)
        second.stop(0.2)


def test_an_acknowledged_batch_survives_kill_9_of_the_server(
    artifacts: Path, tmp_path: Path
) -> None:
    """The default deployment (a supervisor and its replicas): kill -9 of the supervisor takes
    its replicas down too, and every acknowledged batch is in the store."""
    port_file = tmp_path / "port"
    store_file = tmp_path / "kill9.sqlite3"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recsys_serving.server",
            f"--artifacts={artifacts}",
            "--name=tiny",
            f"--port-file={port_file}",
            f"--profile-store=sqlite:{store_file}",
            "--processes=2",
        ],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert port_file.exists(), "the server did not start"
        with RecommenderClient(f"127.0.0.1:{port_file.read_text().strip()}") as c:
            for batch in range(5):
                events = _watches(
                    "u-kill", [f"v{batch}-{i}" for i in range(10)], EVENT_TIME + batch * 100
                )
                assert c.record_events(events).recorded == 10  # acknowledged
        replicas = _children(proc.pid)
        assert len(replicas) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        _wait_for(lambda: not any(_alive(pid) for pid in replicas), 30, "the replicas to stop")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = SQLiteProfileStore(store_file, Caps(max_history=100))
    assert len(store.get("u-kill").watches) == 50
    store.close()


def test_an_unknown_gender_in_a_context_is_invalid(client: RecommenderClient) -> None:
    with pytest.raises(RecommenderError) as caught:
        client.recommend(context=Context(country="US", gender="q"), k=5)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "context.gender" in caught.value.details


def test_old_clients_without_the_new_fields_are_served(client: RecommenderClient) -> None:
    with grpc.insecure_channel(client.target) as channel:
        stub = pb2_grpc.RecommenderStub(channel)
        reply = stub.Recommend(pb2.RecommendRequest(user_id="u000001", k=3))
    assert len(reply.items) == 3
    assert not reply.profile_store_unavailable

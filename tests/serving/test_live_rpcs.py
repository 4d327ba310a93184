"""AddVideos / RemoveVideos over gRPC: two server processes' worth of servers on one folder.

Two in-process servers on OS-chosen ports serve the same model folder, as ``--processes 2``
replicas do: a video added through one is served by the other within a second, without a
restart or a new version, and by a server started afterwards.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from recsys_serving.client import Context, RecommenderClient, RecommenderError
from recsys_serving.proto import pb2
from recsys_serving.server import RecommenderServer, ServerConfig

UPLOADED = 1_780_000_000


@pytest.fixture
def artifacts(trained_artifact: Path, tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    shutil.copytree(
        trained_artifact.parent, root / "tiny", ignore=shutil.ignore_patterns(".work", ".tmp-*")
    )
    return root


def _start(artifacts: Path) -> RecommenderServer:
    server = RecommenderServer(ServerConfig(artifacts=artifacts, name="tiny", grace_s=0.5))
    server.start()
    return server


@pytest.fixture
def replicas(artifacts: Path) -> Iterator[tuple[RecommenderClient, RecommenderClient]]:
    servers = [_start(artifacts), _start(artifacts)]
    clients = [RecommenderClient(f"127.0.0.1:{s.port}", timeout=30.0) for s in servers]
    yield clients[0], clients[1]
    for client, server in zip(clients, servers, strict=True):
        client.close()
        server.stop(0.5)


def _video(item_id: str, **fields: object) -> pb2.NewVideo:
    values: dict[str, object] = {
        "item_id": item_id,
        "title": "fresh upload",
        "category": "live-only",
        "channel": "ch",
        "upload_time": UPLOADED,
        "duration": 30.0,
    }
    values.update(fields)
    return pb2.NewVideo(**values)


def _served_by(client: RecommenderClient, item_id: str, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.similar_items(item_id, 1)
            return True
        except RecommenderError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                return False
        time.sleep(0.05)


def test_an_addition_reaches_every_replica_and_survives_a_restart(
    replicas: tuple[RecommenderClient, RecommenderClient], artifacts: Path
) -> None:
    first, second = replicas
    assert first.add_videos([_video("up-1"), _video("up-2")]) == 2
    assert _served_by(first, "up-1", 0.0)  # the receiving replica: at once
    started = time.monotonic()
    assert _served_by(second, "up-2", 5.0)
    assert time.monotonic() - started < 2.0  # polled every 0.5 s
    reply = second.recommend(
        None, 5, Context(searches=["upload"]), request_time=UPLOADED + 60, category="live-only"
    )
    assert sorted(i.item_id for i in reply.items) == ["up-1", "up-2"]
    assert second.model_info().model_version == "v0001"  # no new version
    assert first.remove_videos(["up-1"]) == 1
    deadline = time.monotonic() + 5.0
    while _served_by(second, "up-1", 0.0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _served_by(second, "up-1", 0.0)
    restarted = _start(artifacts)
    try:
        with RecommenderClient(f"127.0.0.1:{restarted.port}", timeout=30.0) as client:
            assert _served_by(client, "up-2", 0.0)
            assert not _served_by(client, "up-1", 0.0)
    finally:
        restarted.stop(0.5)


@pytest.mark.parametrize(
    ("video", "message"),
    [
        (_video("bad-1", upload_time=UPLOADED * 2), "video 'bad-1': upload_time"),
        (_video("bad-2", duration=-1.0), "video 'bad-2': duration"),
        (_video("bad 3"), "videos[1].item_id is malformed"),
        (_video("bad-4", content_embedding=[1.0, 2.0]), "video 'bad-4': content_embedding"),
    ],
)
def test_bad_metadata_is_invalid_argument_naming_the_video_and_field(
    replicas: tuple[RecommenderClient, RecommenderClient], video: pb2.NewVideo, message: str
) -> None:
    first, _ = replicas
    with pytest.raises(RecommenderError) as caught:
        first.add_videos([_video("fine"), video])
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details
    assert not _served_by(first, "fine", 0.0)  # nothing of the request was added


def test_removing_an_unknown_video_is_not_found(
    replicas: tuple[RecommenderClient, RecommenderClient],
) -> None:
    first, _ = replicas
    with pytest.raises(RecommenderError) as caught:
        first.remove_videos(["no-such-video"])
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert "no-such-video" in caught.value.details

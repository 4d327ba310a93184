"""The gRPC server on a real port chosen by the OS: answers, errors, health, hot reload, stop."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from recsys.artifact.versions import read_manifest, set_latest, write_version
from recsys.features.context import RequestContext
from recsys.inference.recommender import Recommender
from recsys_serving.client import Context, RecommenderClient, RecommenderError
from recsys_serving.proto import SERVICE_NAME, pb2, pb2_grpc
from recsys_serving.server import RecommenderServer, ServerConfig

REQUEST_TIME = 1_800_000_000


@pytest.fixture(scope="module")
def artifacts(trained_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of the trained model folder: artifacts/tiny/{v0001, LATEST}."""
    root = tmp_path_factory.mktemp("served") / "artifacts"
    shutil.copytree(
        trained_artifact.parent, root / "tiny", ignore=shutil.ignore_patterns(".work", ".tmp-*")
    )
    return root


@pytest.fixture(scope="module")
def server(artifacts: Path) -> Iterator[RecommenderServer]:
    config = ServerConfig(artifacts=artifacts, name="tiny", reload_interval_s=0.2, grace_s=1.0)
    running = RecommenderServer(config)
    running.start()
    yield running
    running.stop(0.5)


@pytest.fixture(scope="module")
def target(server: RecommenderServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def stub(target: str) -> Iterator[pb2_grpc.RecommenderStub]:
    with grpc.insecure_channel(target) as channel:
        yield pb2_grpc.RecommenderStub(channel)


def test_replies_equal_the_library_for_the_same_context(
    server: RecommenderServer, trained_artifact: Path, target: str
) -> None:
    library = Recommender.load(trained_artifact)
    assert library.profiles is not None
    user = library.profiles.user_id_at(11)
    with RecommenderClient(target, retries=0) as client:
        pairs = [
            (
                client.recommend(user_id=user, k=25, request_time=REQUEST_TIME),
                library.recommend(RequestContext(request_time=REQUEST_TIME), user, 25),
            ),
            (
                client.recommend(
                    context=Context(searches=["music live"], country="US", age=30),
                    k=25,
                    request_time=REQUEST_TIME,
                ),
                library.recommend(
                    RequestContext(
                        searches=["music live"], country="US", age=30, request_time=REQUEST_TIME
                    ),
                    None,
                    25,
                ),
            ),
            (
                client.recommend(
                    user_id=user,
                    context=Context(country="JP"),
                    k=25,
                    request_time=REQUEST_TIME,
                    category="music",
                ),
                library.recommend(
                    RequestContext(country="JP", request_time=REQUEST_TIME),
                    user,
                    25,
                    category="music",
                ),
            ),
        ]
    for reply, expected in pairs:
        assert [i.item_id for i in reply.items] == [i.item_id for i in expected.items]
        for got, want in zip(reply.items, expected.items, strict=True):
            assert got.logit == pytest.approx(want.logit, abs=1e-6)
            assert got.probability == pytest.approx(want.probability, rel=1e-5)
            assert (got.title, got.category) == (want.title, want.category)
        assert reply.num_candidates_scored == expected.num_candidates_scored
        assert reply.model_version == "v0001"
        assert reply.used_profile == expected.used_profile
        assert reply.timings.total_ms > 0


def _call(stub: pb2_grpc.RecommenderStub, request: pb2.RecommendRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.Recommend(request, timeout=10)
    return info.value


BAD_REQUESTS = [
    (
        pb2.RecommendRequest(user_id="u000001", k=0),
        "INVALID_ARGUMENT",
        "k must be in 1..1000, got 0",
    ),
    (
        pb2.RecommendRequest(user_id="u000001", k=1001),
        "INVALID_ARGUMENT",
        "k must be in 1..1000, got 1001",
    ),
    (pb2.RecommendRequest(k=10), "INVALID_ARGUMENT", "context is empty and user_id is unset"),
    (pb2.RecommendRequest(k=10, request_time=REQUEST_TIME), "INVALID_ARGUMENT", "context is empty"),
    (pb2.RecommendRequest(user_id="bad id", k=10), "INVALID_ARGUMENT", "user_id is malformed"),
    (
        pb2.RecommendRequest(user_id="nobody", k=10),
        "NOT_FOUND",
        "user_id 'nobody' has no stored profile",
    ),
    (
        pb2.RecommendRequest(k=10, context=pb2.UserContext(watch_history=["v1"] * 1001)),
        "INVALID_ARGUMENT",
        "context.watch_history has 1001 ids; at most 1000",
    ),
    (
        pb2.RecommendRequest(k=10, context=pb2.UserContext(watch_history=["v0000001", ""])),
        "INVALID_ARGUMENT",
        "context.watch_history[1] is malformed",
    ),
    (
        pb2.RecommendRequest(
            k=10, context=pb2.UserContext(watch_history=["v1", "v2"], watch_times=[5])
        ),
        "INVALID_ARGUMENT",
        "context.watch_times has 1 entries for 2 watch_history ids",
    ),
    (
        pb2.RecommendRequest(k=10, context=pb2.UserContext(searches=["a"] * 101)),
        "INVALID_ARGUMENT",
        "context.searches has 101 queries; at most 100",
    ),
    (
        pb2.RecommendRequest(k=10, context=pb2.UserContext(searches=["x" * 2000])),
        "INVALID_ARGUMENT",
        "context.searches[0] is 2000 bytes; at most 1024",
    ),
    (
        pb2.RecommendRequest(k=10, context=pb2.UserContext(age=500)),
        "INVALID_ARGUMENT",
        "context.age must be in 1..120",
    ),
    (
        pb2.RecommendRequest(k=10, context=pb2.UserContext(country="US", gender="F")),
        "INVALID_ARGUMENT",
        "context.gender must be one of f, m, x or unset, got 'F'",
    ),
    (
        pb2.RecommendRequest(k=10, user_id="u000001", request_time=-5),
        "INVALID_ARGUMENT",
        "request_time = -5 is not Unix seconds",
    ),
    (
        pb2.RecommendRequest(k=10, user_id="u000001", exclude_ids=["v1"] * 1001),
        "INVALID_ARGUMENT",
        "exclude_ids has 1001 ids",
    ),
    (
        pb2.RecommendRequest(k=10, context=pb2.UserContext(watch_history=["v0000001", "z" * 300])),
        "INVALID_ARGUMENT",
        "context.watch_history[1] is malformed",  # ids are at most 256 bytes
    ),
    (
        pb2.RecommendRequest(k=10, context=pb2.UserContext(searches=["w" * 1024] * 1100)),
        "RESOURCE_EXHAUSTED",  # over the 1 MiB message limit: refused before any parsing
        "",
    ),
]


def test_every_bad_request_gets_its_code_and_message_and_the_server_keeps_serving(
    stub: pb2_grpc.RecommenderStub,
) -> None:
    for request, code, message in BAD_REQUESTS:
        error = _call(stub, request)
        assert error.code().name == code, error.details()
        assert message in (error.details() or ""), error.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.SimilarItems(pb2.SimilarItemsRequest(item_id="not-a-video", k=5), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        stub.SimilarItems(pb2.SimilarItemsRequest(item_id="v0000001", k=0), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:  # a deadline already gone
        stub.Recommend(pb2.RecommendRequest(user_id="u000001", k=10), timeout=1e-6)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    reply = stub.Recommend(pb2.RecommendRequest(user_id="u000001", k=10), timeout=10)
    assert len(reply.items) == 10


def test_a_known_or_empty_gender_is_served(stub: pb2_grpc.RecommenderStub) -> None:
    for gender in ("f", "m", "x", ""):
        context = pb2.UserContext(country="US", gender=gender)
        reply = stub.Recommend(pb2.RecommendRequest(context=context, k=3), timeout=10)
        assert len(reply.items) == 3


def test_unknown_history_ids_are_counted(stub: pb2_grpc.RecommenderStub) -> None:
    context = pb2.UserContext(watch_history=["v0000001", "no-such-video", "nor-this"])
    reply = stub.Recommend(pb2.RecommendRequest(context=context, k=5), timeout=10)
    assert reply.unknown_videos == 2
    assert len(reply.items) == 5


def test_health_and_reflection_answer(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
        ]
        listed, described = list(reflection.ServerReflectionInfo(iter(requests), timeout=5))
        names = {s.name for s in listed.list_services_response.service}
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
        assert described.file_descriptor_response.file_descriptor_proto  # the .proto itself


def test_model_info(target: str) -> None:
    with RecommenderClient(target) as client:
        info = client.model_info()
    assert (info.model_name, info.model_version) == ("tiny", "v0001")
    assert info.num_items == 1500
    assert info.index_kind == "exact"


def _new_version(artifacts: Path, update_latest: bool = True) -> Path:
    """Write a new version derived from the served one (as `recsys index` does)."""
    model_dir = artifacts / "tiny"
    base = model_dir / (model_dir / "LATEST").read_text().strip()
    manifest = read_manifest(base)
    manifest.parent = manifest.version
    with write_version(artifacts, "tiny", manifest, base=base, update_latest=update_latest):
        pass
    return model_dir / manifest.version


def test_a_model_swap_under_concurrent_load_fails_no_call(
    server: RecommenderServer, artifacts: Path, target: str
) -> None:
    stop = threading.Event()
    failures: list[BaseException] = []
    versions: Counter[str] = Counter()

    def hammer(user: str) -> None:
        with RecommenderClient(target, timeout=10, retries=0) as client:
            while not stop.is_set():
                try:
                    versions[client.recommend(user_id=user, k=20).model_version] += 1
                except Exception as exc:
                    failures.append(exc)

    threads = [threading.Thread(target=hammer, args=(f"u{i:06d}",)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    new = _new_version(artifacts)
    deadline = time.monotonic() + 90
    while versions[new.name] < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert failures == []
    assert versions["v0001"] > 0
    assert versions[new.name] >= 20, versions
    assert server.slot.get() is not None
    assert server.slot.get().version == new.name


def test_a_corrupt_or_half_written_version_is_refused_while_the_old_one_serves(
    server: RecommenderServer, artifacts: Path, target: str
) -> None:
    model_dir = artifacts / "tiny"
    serving = (model_dir / "LATEST").read_text().strip()
    corrupt = _new_version(artifacts, update_latest=False)
    data = bytearray((corrupt / "item_embeddings.npy").read_bytes())
    data[-3] ^= 0x01  # one bit of one embedding
    (corrupt / "item_embeddings.npy").write_bytes(bytes(data))
    set_latest(model_dir, corrupt.name)
    assert server.reload_now() is False
    half = model_dir / "v0099"  # a folder without its manifest: never completed
    shutil.copytree(model_dir / serving, half, ignore=shutil.ignore_patterns("manifest.json"))
    set_latest(model_dir, half.name)
    assert server.reload_now() is False
    with RecommenderClient(target, retries=0) as client:
        assert client.recommend(user_id="u000002", k=5).model_version == serving
        assert client.is_serving()
    set_latest(model_dir, serving)


def test_without_a_model_health_is_not_serving_and_calls_are_unavailable(tmp_path: Path) -> None:
    config = ServerConfig(artifacts=tmp_path, name="none", reload_interval_s=60)
    empty = RecommenderServer(config)
    port = empty.start()
    try:
        with RecommenderClient(f"127.0.0.1:{port}", retries=0) as client:
            assert not client.is_serving()
            with pytest.raises(RecommenderError) as info:
                client.recommend(user_id="u000001", k=5)
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
            assert "no model loaded" in info.value.details
    finally:
        empty.stop(0)


def test_sigterm_stops_the_server_gracefully(artifacts: Path, tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recsys_serving.server",
            "--artifacts",
            str(artifacts),
            "--name",
            "tiny",
            "--port-file",
            str(port_file),
            "--grace",
            "5",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert port_file.exists(), "the server did not start"
        with RecommenderClient(f"127.0.0.1:{port_file.read_text().strip()}") as client:
            assert client.wait_until_serving(60)
            assert len(client.recommend(user_id="u000001", k=5).items) == 5
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-2000:]
    assert "received SIGTERM" in stderr
    assert "stopped" in stderr


class _Exploding:
    """Stands in for a model whose every call fails inside the library."""

    name, version = "broken", "v0000"

    def recommend(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")


def test_an_internal_error_is_internal_logged_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from concurrent import futures

    from recsys_serving.servicer import ModelSlot, RecommenderServicer, add_to_server

    slot = ModelSlot()
    slot.swap(_Exploding())  # type: ignore[arg-type]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add_to_server(RecommenderServicer(slot), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb2_grpc.RecommenderStub(channel)
            for _ in range(3):
                error = _call(stub, pb2.RecommendRequest(user_id="u1", k=5))
                assert error.code() == grpc.StatusCode.INTERNAL
                assert error.details() == "Recommend failed; see the server log"
    finally:
        server.stop(0)
    failures = [r for r in caplog.records if r.getMessage() == "Recommend failed"]
    assert len(failures) == 3
    assert all(r.exc_info and "boom" in str(r.exc_info[1]) for r in failures)


def test_a_call_past_its_deadline_is_deadline_exceeded_and_logged_with_its_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from concurrent import futures

    from recsys_serving.servicer import ModelSlot, RecommenderServicer, add_to_server

    class Slow(RecommenderServicer):
        def Recommend(  # noqa: N802
            self, request: pb2.RecommendRequest, context: grpc.ServicerContext
        ) -> bytes:
            if request.k != 5:
                return super().Recommend(request, context)
            time.sleep(0.3)  # outlives the caller's deadline
            return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add_to_server(Slow(ModelSlot()), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    caplog.set_level("DEBUG", logger="recsys_serving.servicer")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb2_grpc.RecommenderStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Recommend(pb2.RecommendRequest(user_id="u1", k=5), timeout=0.1)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(
                "DEADLINE_EXCEEDED" in r.getMessage() for r in caplog.records
            ):
                time.sleep(0.05)
            error = _call(stub, pb2.RecommendRequest(user_id="u1", k=0))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(0)
    messages = [r.getMessage() for r in caplog.records]
    late = [m for m in messages if m.startswith("Recommend DEADLINE_EXCEEDED in ")]
    assert len(late) == 1, messages
    assert float(late[0].split(" in ")[1].split(" ms")[0]) >= 300
    assert any(m.startswith("Recommend INVALID_ARGUMENT in ") for m in messages), messages

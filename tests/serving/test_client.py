"""The typed client (retries, plain results), the echo server and the load generator."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from recsys.live.events import Demographics, Event
from recsys_serving.client import (
    Context,
    RecommenderClient,
    RecommenderError,
    RetryPolicy,
    build_record_request,
    build_request,
    from_response,
)
from recsys_serving.echo import echo_server_process, make_echo_server
from recsys_serving.loadtest import cold_start_requests, run_loadtest, user_requests
from recsys_serving.proto import pb2, pb2_grpc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def echo() -> Iterator[str]:
    server, port = make_echo_server(workers=2)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def test_requests_carry_exactly_the_fields_set() -> None:
    request = build_request(
        user_id="u1",
        k=7,
        context=Context(watch_history=["v1", "v2"], watch_times=[1, 2], country="US", age=0),
        request_time=1_700_000_000,
        exclude_ids=["v9"],
        category="music",
    )
    assert request.user_id == "u1"
    assert request.k == 7
    assert list(request.context.watch_history) == ["v1", "v2"]
    assert list(request.context.watch_times) == [1, 2]
    assert request.context.HasField("country")
    assert request.context.HasField("age")  # age 0 is sent (and refused by the server)
    assert not request.context.HasField("gender")
    assert request.request_time == 1_700_000_000
    assert request.exclude_watched
    assert request.category == "music"
    bare = build_request(user_id="u1")
    assert not bare.HasField("context")
    assert not bare.HasField("request_time")
    assert not bare.HasField("category")


def test_replies_become_plain_dataclasses() -> None:
    reply = pb2.RecommendResponse(
        items=[
            pb2.RecommendedItem(item_id="v1", title="t", category="c", logit=0.5, probability=0.25)
        ],
        model_name="m",
        model_version="v0002",
        num_candidates_scored=100,
        unknown_videos=1,
        used_profile=True,
        timings=pb2.StageTimings(total_ms=2.0),
    )
    result = from_response(reply)
    assert result.items[0].item_id == "v1"
    assert result.items[0].probability == pytest.approx(0.25)
    assert (result.model_version, result.num_candidates_scored) == ("v0002", 100)
    assert result.unknown_videos == 1
    assert result.timings.total_ms == pytest.approx(2.0)


def test_unavailable_is_retried_with_growing_backoff_then_raised() -> None:
    delays: list[float] = []
    client = RecommenderClient(f"127.0.0.1:{_free_port()}", timeout=0.5, retries=3)
    client.policy = RetryPolicy(retries=3, initial_backoff_s=0.01, sleep=delays.append)
    with client, pytest.raises(RecommenderError) as info:
        client.recommend(user_id="u1", k=5)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(delays) == 3  # 1 attempt + 3 retries
    # full jitter: retry n waits uniformly in [0, 0.01 * 2**n]
    assert all(0 <= d <= 0.01 * 2**n for n, d in enumerate(delays))


def test_a_server_that_comes_up_during_the_retries_is_reached() -> None:
    port = _free_port()
    server, _ = make_echo_server(port=port, workers=2)

    def start_later() -> None:
        time.sleep(0.3)
        server.start()

    starter = threading.Thread(target=start_later)
    starter.start()
    try:
        with RecommenderClient(f"127.0.0.1:{port}", timeout=2.0, retries=8) as client:
            client.policy.initial_backoff_s = 0.05
            result = client.recommend(user_id="u1", k=3)
        assert [i.item_id for i in result.items] == ["v0000000", "v0000001", "v0000002"]
        assert result.model_name == "echo"
    finally:
        starter.join()
        server.stop(0)


class _Refusing(pb2_grpc.RecommenderServicer):
    def __init__(self) -> None:
        self.calls = 0

    def Recommend(  # noqa: N802
        self, request: pb2.RecommendRequest, context: grpc.ServicerContext
    ) -> pb2.RecommendResponse:
        self.calls += 1
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "k must be in 1..1000, got 0")


def test_other_errors_are_raised_at_once_with_code_and_message() -> None:
    servicer = _Refusing()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb2_grpc.add_RecommenderServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with RecommenderClient(f"127.0.0.1:{port}", retries=5) as client:
            with pytest.raises(RecommenderError, match="INVALID_ARGUMENT: k must be in") as info:
                client.recommend(user_id="u1", k=0)
            assert not client.is_serving()  # no health service: not serving
            assert not client.wait_until_serving(0.2, poll_s=0.05)
        assert info.value.details == "k must be in 1..1000, got 0"
        assert servicer.calls == 1
    finally:
        server.stop(0)


def test_model_info_and_similar_items_from_the_echo(echo: str) -> None:
    with RecommenderClient(echo) as client:
        assert client.model_info().model_name == "echo"
        assert client.similar_items("v1", 3) == ()


def test_loadtest_reports_throughput_latency_and_errors(echo: str) -> None:
    result = run_loadtest(
        echo, concurrency=4, duration_s=0.5, request_factory=cold_start_requests(10), warmup_s=0.2
    )
    assert result.ok > 0
    assert result.errors == {}
    assert result.qps == pytest.approx(result.ok / 0.5)
    assert 0 < result.p50_ms <= result.p95_ms <= result.p99_ms <= result.max_ms
    assert "calls/s at concurrency 4" in result.summary()


def test_loadtest_drives_record_events_too(echo: str) -> None:
    batch = [Event("u1", 1_700_000_000 + i, "watch", video_id="v1") for i in range(100)]
    request = build_record_request(batch, [Demographics("u1", age=20)])
    assert len(request.events) == 100
    assert request.users[0].age == 20
    assert not request.users[0].HasField("country")
    result = run_loadtest(
        echo, 2, 0.3, lambda i: request, warmup_s=0.1, num_requests=4, method="RecordEvents"
    )
    assert result.ok > 0
    assert result.errors == {}
    assert result.server_ms == {}  # only Recommend replies carry stage timings
    with RecommenderClient(echo, retries=0) as client:
        assert client.record_events(batch).recorded == 100


def test_loadtest_counts_errors_by_code() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb2_grpc.add_RecommenderServicer_to_server(_Refusing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        result = run_loadtest(
            f"127.0.0.1:{port}",
            concurrency=2,
            duration_s=0.3,
            request_factory=user_requests(["u1"], 10),
            warmup_s=0.1,
        )
    finally:
        server.stop(0)
    assert result.ok == 0
    assert result.qps == 0
    assert set(result.errors) == {"INVALID_ARGUMENT"}
    assert result.calls == result.errors["INVALID_ARGUMENT"] > 0


def test_the_echo_server_runs_in_its_own_process() -> None:
    with echo_server_process(workers=2) as echo:
        result = run_loadtest(
            echo.target,
            concurrency=2,
            duration_s=0.3,
            request_factory=user_requests(["u1"], 100),
            warmup_s=0.1,
        )
    assert result.ok > 0
    assert result.errors == {}


def test_the_loadtest_comparison_gives_medians_and_per_round_ratios() -> None:
    from recsys.cli.serving import comparison
    from recsys_serving.loadtest import LoadTestResult

    def result(qps: float, p50: float) -> LoadTestResult:
        return LoadTestResult(
            target="t",
            concurrency=16,
            duration_s=1.0,
            calls=int(qps),
            ok=int(qps),
            qps=qps,
            p50_ms=p50,
            p95_ms=p50,
            p99_ms=p50,
            mean_ms=p50,
            max_ms=p50,
        )

    rounds = [
        (result(400, 2.0), result(1000, 1.0)),
        (result(600, 3.0), result(1000, 1.0)),
        (result(100, 9.0), result(1000, 1.5)),
    ]
    text = comparison(rounds)
    assert "medians of 3 rounds: recommender 400 calls/s, p50 3.00 ms; echo 1000 calls/s" in text
    assert "throughput: 0.40x the echo server's (rounds 0.40 0.60 0.10)" in text
    assert "p50: 3.00x the echo server's" in text

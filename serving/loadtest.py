"""Load generator: C calls in flight for S seconds; QPS, latency percentiles, errors by code.

One asyncio process with ``grpc.aio`` channels keeps ``concurrency`` calls in flight (each
worker sends its next call when its last one returns: a closed loop, so at concurrency C the
mean latency is C / throughput). Workers share ``channels`` connections round-robin: a server
of several processes on one port (``--processes``) gets each connection in one process, so
use at least as many channels as it has processes. Requests are built before the clock
starts, so the generator spends its time on gRPC only. Run it against the echo server
(:mod:`recsys_serving.echo`) in the same command for the baseline: the ratio of the two
throughputs is what the service costs beyond gRPC itself on this machine.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import numpy as np

from recsys_serving.proto import pb2, pb2_grpc

RequestFactory = Callable[[int], Any]  # the i-th request message of the method under load

_STAGES = ("context_ms", "query_tower_ms", "index_ms", "rescoring_ms", "total_ms")


@dataclass(frozen=True)
class LoadTestResult:
    """What one load test measured; latencies are client-side milliseconds."""

    target: str
    concurrency: int
    duration_s: float
    calls: int  # completed calls in the measured window, successes and errors
    ok: int
    qps: float  # successful calls per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)  # status code name -> count
    server_ms: dict[str, float] = field(default_factory=dict)  # mean server stage timings

    def summary(self) -> str:
        """One line for humans."""
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        return (
            f"{self.target}: {self.qps:.0f} calls/s at concurrency {self.concurrency} over "
            f"{self.duration_s:.1f} s; latency p50 {self.p50_ms:.2f} ms, p95 {self.p95_ms:.2f} "
            f"ms, p99 {self.p99_ms:.2f} ms; errors: {errors}"
        )


async def _run(
    target: str,
    concurrency: int,
    duration_s: float,
    requests: list[Any],
    warmup_s: float,
    timeout_s: float,
    num_channels: int,
    method: str,
) -> tuple[list[int], Counter[str], dict[str, float], float]:
    latencies: list[int] = []
    errors: Counter[str] = Counter()
    stage_sums = dict.fromkeys(_STAGES, 0.0)
    stage_count = 0
    # A local subchannel pool each: otherwise channels to one target share one connection.
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(num_channels)
    ]
    try:
        calls = [getattr(pb2_grpc.RecommenderStub(c), method) for c in channels]
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=max(timeout_s, 10.0))
        loop_start = time.perf_counter()
        measure_from = loop_start + warmup_s
        stop_at = measure_from + duration_s

        async def worker(offset: int) -> None:
            nonlocal stage_count
            call = calls[offset % len(calls)]
            i = offset
            while True:
                request = requests[i % len(requests)]
                i += concurrency
                started = time.perf_counter()
                if started >= stop_at:
                    return
                try:
                    reply = await call(request, timeout=timeout_s)
                    code = None
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                ended = time.perf_counter()
                if started < measure_from or ended > stop_at:
                    continue
                if code is not None:
                    errors[code] += 1
                    continue
                latencies.append(int((ended - started) * 1e9))
                if method != "Recommend":
                    continue
                timings = reply.timings
                for name in _STAGES:
                    stage_sums[name] += getattr(timings, name)
                stage_count += 1

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    finally:
        for channel in channels:
            await channel.close()
    means = {k: v / stage_count for k, v in stage_sums.items()} if stage_count else {}
    return latencies, errors, means, duration_s


def run_loadtest(
    target: str,
    concurrency: int,
    duration_s: float,
    request_factory: RequestFactory,
    warmup_s: float = 1.0,
    timeout_s: float = 5.0,
    num_requests: int = 1024,
    channels: int = 1,
    method: str = "Recommend",
) -> LoadTestResult:
    """Keep ``concurrency`` calls of ``method`` in flight on ``target`` for ``duration_s``.

    ``request_factory(i)`` builds the i-th of ``num_requests`` distinct requests (cycled);
    Recommend replies also give the server's stage timings (``server_ms``).
    the first ``warmup_s`` seconds are not measured. Calls that end after the window are
    not counted either, so the QPS is exact for the window.
    """
    if concurrency <= 0 or duration_s <= 0 or channels <= 0:
        raise ValueError("concurrency, duration and channels must be positive")
    requests = [request_factory(i) for i in range(num_requests)]
    latencies, errors, stages, window = asyncio.run(
        _run(target, concurrency, duration_s, requests, warmup_s, timeout_s, channels, method)
    )
    ms = np.asarray(latencies, dtype=np.float64) / 1e6
    if ms.size == 0:
        ms = np.asarray([np.nan])
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    ok = len(latencies)
    return LoadTestResult(
        target=target,
        concurrency=concurrency,
        duration_s=window,
        calls=ok + sum(errors.values()),
        ok=ok,
        qps=ok / window,
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        mean_ms=float(np.mean(ms)),
        max_ms=float(np.max(ms)),
        errors=dict(errors),
        server_ms=stages,
    )


def cold_start_requests(k: int) -> RequestFactory:
    """Requests needing no user ids: a few searches and a country, varied per request."""
    words = ("music", "live", "news", "guitar", "cooking", "football", "travel", "science")
    countries = ("US", "GB", "DE", "FR", "BR", "IN", "JP")

    def build(i: int) -> pb2.RecommendRequest:
        context = pb2.UserContext(
            searches=[f"{words[i % 8]} {words[(i // 8) % 8]}", words[(i // 64) % 8]],
            country=countries[i % len(countries)],
        )
        return pb2.RecommendRequest(context=context, k=k)

    return build


def user_requests(user_ids: list[str], k: int) -> RequestFactory:
    """user_id-only requests (served from stored profiles), cycling over ``user_ids``."""
    if not user_ids:
        raise ValueError("user_ids is empty")

    def build(i: int) -> pb2.RecommendRequest:
        return pb2.RecommendRequest(user_id=user_ids[i % len(user_ids)], k=k)

    return build

"""Benchmark live profiles: ingest per backend, Recommend with the live store, read-your-writes.

Three measurements, each against a baseline in the same run (servers are child processes of
``python -m recsys_serving.server``; the load comes from this process's ``grpc.aio``
generator, :mod:`recsys_serving.loadtest`):

(a) ingest: RecordEvents with batches of 100 new events (no duplicates), C calls in flight,
    into one server process per backend (embedded SQLite, Redis), against the echo server
    answering the same calls (one process each): events/s and the ratio;
(b) Recommend, user_id only, k=100, for users with live events (``--live-events`` watches
    each, recorded first): the merged live profile against the artifact's profile alone
    (``use_live_profile=false``) on the same server in the same run: p50 one call at a time
    and calls/s at 16 in flight, per backend;
(c) read-your-writes: two replicas sharing Redis; ``--pairs`` times, a new user's watch is
    recorded through one and Recommend asked of the other at once: the share of replies that
    already hold the watch (and exclude it).

    .venv/bin/python benchmarks/bench_live.py --artifacts /tmp/bench-artifacts --name bench \
        --runs 5 --duration 5 --json reports/bench_live.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from recsys.artifact.layout import ITEMS_FILE
from recsys.artifact.versions import resolve_version
from recsys.live.events import Event
from recsys_serving.client import RecommenderClient, build_record_request
from recsys_serving.echo import ServerProcess, echo_server_process
from recsys_serving.loadtest import run_loadtest
from recsys_serving.proto import pb2

sys.path.insert(0, str(Path(__file__).parent))
from bench_serving import _machine, bench_users, recommender_process

log = logging.getLogger("bench_live")

REDIS = "redis://127.0.0.1:6379/0"
EVENT_TIME = 1_790_000_000  # after the worlds' logs, before the requests' moment
REQUEST_TIME = 1_800_000_000
TARGETS = {"ingest_embedded": 20_000, "ingest_redis": 50_000, "recommend_ratio": 1.2}


def _store_urls(tmp: Path) -> dict[str, str]:
    return {
        "embedded": f"sqlite:{tmp / 'profiles.sqlite3'}",
        "redis": f"{REDIS}?prefix=bench-live:{uuid.uuid4().hex}",
    }


def ingest_requests(
    batch: int, count: int, videos: list[str], tag: str
) -> list[pb2.RecordEventsRequest]:
    """``count`` RecordEvents requests of ``batch`` new watches each (no two alike), 10 users
    per request; ``tag`` makes the users of each run new."""
    requests = []
    for r in range(count):
        events = [
            Event(f"{tag}-{r}-{i % 10}", EVENT_TIME + i, "watch", video_id=videos[i % len(videos)])
            for i in range(batch)
        ]
        requests.append(build_record_request(events))
    return requests


def bench_ingest(
    artifacts: Path, name: str, args: argparse.Namespace, tmp: Path, videos: list[str]
) -> dict[str, Any]:
    """(a): events/s into each backend and into the echo server, alternating per run."""
    out: dict[str, Any] = {}
    # More than a run can send (up to 200,000 events/s): no request is sent twice.
    count = int((args.warmup + args.duration) * 200_000 / args.batch)
    with echo_server_process(processes=1) as echo:
        for backend, url in _store_urls(tmp).items():
            extra = ["--processes=1", f"--profile-store={url}"]
            with recommender_process(artifacts, name, 8, extra) as server:
                runs = []
                for run in range(args.runs):
                    requests = ingest_requests(args.batch, count, videos, f"{backend}{run}")
                    order = [("server", server), ("echo", echo)]
                    row = {}
                    for label, target in order if run % 2 == 0 else order[::-1]:
                        result = run_loadtest(
                            target.target,
                            args.ingest_concurrency,
                            args.duration,
                            lambda i, rq=requests: rq[i],  # type: ignore[misc]
                            warmup_s=args.warmup,
                            num_requests=count,
                            channels=4,
                            method="RecordEvents",
                        )
                        row[label] = result.qps * args.batch
                        row[f"{label}_errors"] = result.errors
                    runs.append(row)
                    log.info("ingest %s run %d: %s", backend, run, row)
            server_eps = statistics.median(r["server"] for r in runs)
            echo_eps = statistics.median(r["echo"] for r in runs)
            out[backend] = {
                "events_per_s": server_eps,
                "echo_events_per_s": echo_eps,
                "ratio_vs_echo": server_eps / echo_eps,
                "runs": runs,
            }
    return out


def _recommend_requests(users: list[str], live: bool) -> list[pb2.RecommendRequest]:
    requests = []
    for user in users:
        request = pb2.RecommendRequest(user_id=user, k=100, request_time=REQUEST_TIME)
        request.use_live_profile = live
        requests.append(request)
    return requests


def _record_live(target: str, users: list[str], videos: list[str], per_user: int) -> None:
    rng = np.random.default_rng(1)
    with RecommenderClient(target, timeout=30) as client:
        for start in range(0, len(users), 100):
            events = [
                Event(u, EVENT_TIME + j, "watch", video_id=videos[int(rng.integers(len(videos)))])
                for u in users[start : start + 100]
                for j in range(per_user)
            ]
            client.record_events(events)


def bench_recommend(
    artifacts: Path, name: str, args: argparse.Namespace, tmp: Path, videos: list[str]
) -> dict[str, Any]:
    """(b): Recommend with the merged live profile against the artifact's profile alone."""
    version = resolve_version(artifacts / name)
    users = bench_users(version, args.users)
    live_requests = _recommend_requests(users, True)
    frozen_requests = _recommend_requests(users, False)
    out: dict[str, Any] = {}
    for backend, url in _store_urls(tmp).items():
        extra = [f"--processes={args.processes}", f"--profile-store={url}"]
        with recommender_process(artifacts, name, 8, extra) as server:
            _record_live(server.target, users, videos, args.live_events)
            runs = []
            for run in range(args.runs):
                row: dict[str, float] = {}
                order = [("live", live_requests), ("frozen", frozen_requests)]
                for label, requests in order if run % 2 == 0 else order[::-1]:
                    for concurrency in (1, 16):
                        r = run_loadtest(
                            server.target,
                            concurrency,
                            args.duration,
                            lambda i, rq=requests: rq[i % len(rq)],  # type: ignore[misc]
                            warmup_s=1.0 if run == 0 else 0.5,
                            num_requests=len(requests),
                            channels=max(args.processes, 4),
                        )
                        row[f"{label}_c{concurrency}_qps"] = r.qps
                        row[f"{label}_c{concurrency}_p50_ms"] = r.p50_ms
                        row[f"{label}_c{concurrency}_context_ms"] = r.server_ms.get(
                            "context_ms", 0.0
                        )
                runs.append(row)
                log.info("recommend %s run %d: %s", backend, run, row)
            med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            out[backend] = {
                "medians": med,
                "p50_ratio_live_vs_frozen": med["live_c1_p50_ms"] / med["frozen_c1_p50_ms"],
                "qps_ratio_frozen_vs_live": med["frozen_c16_qps"] / med["live_c16_qps"],
                "runs": runs,
            }
    return out


@contextmanager
def _replicas(artifacts: Path, name: str, url: str) -> Iterator[tuple[ServerProcess, ...]]:
    extra = ["--processes=1", f"--profile-store={url}"]
    with (
        recommender_process(artifacts, name, 8, extra) as a,
        recommender_process(artifacts, name, 8, extra) as b,
    ):
        yield a, b


def bench_read_your_writes(
    artifacts: Path, name: str, args: argparse.Namespace, videos: list[str]
) -> dict[str, Any]:
    """(c): record through one replica, Recommend through the other, ``pairs`` times."""
    url = f"{REDIS}?prefix=bench-ryw:{uuid.uuid4().hex}"
    seen = excluded = 0
    pair_ms = []
    with (
        _replicas(artifacts, name, url) as (a, b),
        RecommenderClient(a.target, timeout=10) as writer,
        RecommenderClient(b.target, timeout=10) as reader,
    ):
        for i in range(args.pairs):
            user, video = f"ryw-{i}", videos[i % len(videos)]
            started = time.perf_counter()
            writer.record_events([Event(user, EVENT_TIME, "watch", video_id=video)])
            reply = reader.recommend(user_id=user, k=100, request_time=REQUEST_TIME)
            pair_ms.append((time.perf_counter() - started) * 1000)
            seen += int(reply.live_events == 1)
            excluded += int(all(item.item_id != video for item in reply.items))
    return {
        "pairs": args.pairs,
        "read_your_writes": seen / args.pairs,
        "recorded_video_excluded": excluded / args.pairs,
        "pair_p50_ms": float(np.median(pair_ms)),
    }


def main() -> int:
    """Run the benchmark; print the figures and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--batch", type=int, default=100, help="events per RecordEvents call")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before each measurement")
    parser.add_argument("--ingest-concurrency", type=int, default=8)
    parser.add_argument("--users", type=int, default=2000, help="users asked in (b)")
    parser.add_argument("--live-events", type=int, default=20, help="live watches per user (b)")
    parser.add_argument("--processes", type=int, default=2, help="server processes in (b)")
    parser.add_argument("--pairs", type=int, default=10_000, help="record-recommend pairs (c)")
    parser.add_argument("--only", choices=["ingest", "recommend", "ryw"], action="append")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    version = resolve_version(args.artifacts / args.name)
    ids = pq.read_table(version / ITEMS_FILE, columns=["item_id"]).column(0).to_pylist()[:5000]
    videos = [str(v) for v in ids]
    parts = args.only or ["ingest", "recommend", "ryw"]
    report: dict[str, Any] = {"machine": _machine(), "args": vars(args) | {"json": None}}
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        if "ingest" in parts:
            report["ingest"] = bench_ingest(args.artifacts, args.name, args, Path(tmp), videos)
        if "recommend" in parts:
            report["recommend"] = bench_recommend(
                args.artifacts, args.name, args, Path(tmp), videos
            )
    if "ryw" in parts:
        report["read_your_writes"] = bench_read_your_writes(args.artifacts, args.name, args, videos)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does the hand-encoded Recommend reply still pay? Both reply paths and the echo server, one run.

Starts three servers on their own ports, each of ``--processes`` replicas (as ``recsys serve
--processes``): the recommender answering with the bytes :mod:`recsys_serving.reply` encodes
from each video's cached fields (what it serves), the same recommender building the reply
through the generated protobuf classes, and the echo server (:mod:`recsys_serving.echo`).
Then, round after round and in a rotating order, the ``grpc.aio`` load generator
(:mod:`recsys_serving.loadtest`) measures each: p50 with one call at a time, calls/s with
``--concurrency`` in flight. Prints per-round figures and the medians. Requests are
``recsys loadtest``'s defaults (cold-start contexts) unless ``--users`` asks for profile users.

    .venv/bin/python benchmarks/bench_reply.py --artifacts /tmp/srv-art --name demo \
        --rounds 5 --duration 5
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import statistics
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from recsys.artifact.versions import resolve_version
from recsys_serving.client import RecommenderClient
from recsys_serving.echo import echo_server_process
from recsys_serving.loadtest import (
    RequestFactory,
    cold_start_requests,
    run_loadtest,
    user_requests,
)
from recsys_serving.replicas import ReplicaSet

log = logging.getLogger("bench_reply")

VARIANTS = ("encoded", "protobuf")


def serve_variant(args: argparse.Namespace) -> int:
    """A replica: the recommender server with ``args.child``'s reply path, until SIGTERM."""
    # Imported here: the parent process (the load generator) never loads the model's stack.
    from recsys.inference.recommender import Recommender
    from recsys.inference.request import RecommendResult
    from recsys_serving.proto import pb2
    from recsys_serving.reply import response_fields
    from recsys_serving.server import RecommenderServer, ServerConfig
    from recsys_serving.servicer import RecommenderServicer

    class ProtobufReplies(RecommenderServicer):
        """Replies built through the generated classes, one message per item."""

        def _reply(
            self,
            model: Recommender,
            result: RecommendResult,
            started: float,
            store_unavailable: bool = False,
        ) -> pb2.RecommendResponse:
            ids, titles, categories = result.catalog.describe(result.rows)
            item = pb2.RecommendedItem
            items = [
                item(item_id=i, title=t, category=c, logit=lg, probability=p)
                for i, t, c, lg, p in zip(
                    ids,
                    titles,
                    categories,
                    result.logits.tolist(),
                    result.probabilities.tolist(),
                    strict=True,
                )
            ]
            reply = response_fields(result, started, store_unavailable)
            reply.items.extend(items)
            return reply

    config = ServerConfig(
        artifacts=args.artifacts,
        name=args.name,
        port=args.port,
        reuse_port=True,
        reload_interval_s=3600.0,
        grace_s=1.0,
    )
    servicer = ProtobufReplies if args.child == "protobuf" else RecommenderServicer
    server = RecommenderServer(config, servicer=servicer)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    tmp = args.port_file.with_name(f".{args.port_file.name}.tmp")
    tmp.write_text(f"{server.port}\n")
    tmp.replace(args.port_file)
    stop.wait()
    server.stop(0.5)
    return 0


@contextmanager
def variant_replicas(args: argparse.Namespace, variant: str) -> Iterator[str]:
    """``args.processes`` replicas of ``variant`` on one port, once SERVING: their target."""

    def command(port: int, port_file: Path) -> list[str]:
        return [
            sys.executable,
            str(Path(__file__).resolve()),
            f"--artifacts={args.artifacts}",
            f"--name={args.name}",
            f"--child={variant}",
            f"--port={port}",
            f"--port-file={port_file}",
        ]

    replicas = ReplicaSet(command, args.processes, grace_s=2.0)
    try:
        replicas.start()
        target = f"127.0.0.1:{replicas.port}"
        with RecommenderClient(target) as client:
            if not client.wait_until_serving(300):
                raise RuntimeError(f"{variant}: no model loaded")
        yield target
    finally:
        replicas.stop()


def _factory(args: argparse.Namespace) -> RequestFactory:
    if not args.users:
        return cold_start_requests(args.k)
    version = resolve_version(args.artifacts / args.name)
    ids = pq.read_table(version / "profiles.parquet", columns=["user_id"]).column(0)
    return user_requests([str(u) for u in ids[: args.users]], args.k)


def run(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Every round's figures per server."""
    factory = _factory(args)
    figures: dict[str, list[dict[str, Any]]] = {v: [] for v in (*VARIANTS, "echo")}
    with ExitStack() as stack:
        targets = {v: stack.enter_context(variant_replicas(args, v)) for v in VARIANTS}
        echo = stack.enter_context(echo_server_process(processes=args.processes))
        targets["echo"] = echo.target
        for target in targets.values():  # every replica warm, reply caches filled
            run_loadtest(target, args.concurrency, args.warmup, factory, channels=args.channels)
        names = list(targets)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                one = run_loadtest(targets[name], 1, args.duration, factory, channels=1)
                many = run_loadtest(
                    targets[name], args.concurrency, args.duration, factory, channels=args.channels
                )
                figures[name].append(
                    {"p50_ms": one.p50_ms, "qps": many.qps, "errors": one.errors | many.errors}
                )
            line = ", ".join(
                f"{n} {figures[n][-1]['qps']:.0f}/s p50 {figures[n][-1]['p50_ms']:.2f} ms"
                for n in names
            )
            log.info("round %d (load %.1f): %s", r + 1, os.getloadavg()[0], line)
    return figures


def main() -> int:
    """Run the comparison (or, with --child, one replica of a variant)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load first, each")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--users", type=int, default=0, help="profile users (0: cold start)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.child:
        logging.getLogger().setLevel(logging.WARNING)
        return serve_variant(args)
    load_start = os.getloadavg()
    figures = run(args)
    echo_qps = [f["qps"] for f in figures["echo"]]
    print(
        f"{args.rounds} rounds of {args.duration:g} s, {args.processes} processes each, "
        f"k={args.k}, load average {load_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    print("| server | p50, 1 in flight | calls/s, 16 in flight | x echo (per round) | errors |")
    print("|---|---|---|---|---|")
    for name, rounds in figures.items():
        ratios = [f["qps"] / e for f, e in zip(rounds, echo_qps, strict=True)]
        errors = sum(sum(f["errors"].values()) for f in rounds)
        print(
            f"| {name} | {statistics.median(f['p50_ms'] for f in rounds):.2f} ms | "
            f"{statistics.median(f['qps'] for f in rounds):.0f} | "
            f"{statistics.median(ratios):.2f}x ({' '.join(f'{x:.2f}' for x in ratios)}) | "
            f"{errors} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

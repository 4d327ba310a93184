"""Benchmark the gRPC service on a large artifact against an echo gRPC server, same machine.

Starts the recommender server (``python -m recsys_serving.server``) and the echo server
(``python -m recsys_serving.echo``, same worker threads) as child processes, then drives both
from this process with the ``grpc.aio`` load generator (:mod:`recsys_serving.loadtest`):

(a) one call at a time: Recommend, user_id only (context from the stored profile: up to 50
    watches and 50 searches), k=100: p50 / p99 latency;
(b) C calls in flight (default 16): throughput of the recommender and of the echo server,
    measured back to back in the same run, their ratio, errors, p50 / p99.

Each run repeats both; the report gives the median over runs and where the time goes per
request (server stage timings returned in every reply; gRPC = client latency - server time).
This process never imports TensorFlow.

    .venv/bin/python benchmarks/bench_serving.py --artifacts /tmp/bench-artifacts \
        --name bench --runs 3 --duration 10 --json reports/bench_serving.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from recsys.artifact.versions import resolve_version
from recsys_serving.client import RecommenderClient
from recsys_serving.echo import ServerProcess, echo_server_process
from recsys_serving.loadtest import LoadTestResult, run_loadtest, user_requests

log = logging.getLogger("bench_serving")

TARGETS = {"single_p50_ms": 3.0, "single_p99_ms": 6.0, "throughput_ratio_vs_echo": 0.4}


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError):
            found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (Linux /proc).

    Descendants count for a server of several processes (``--processes``), whose pid is the
    supervisor's; replicas that live through the measurement are counted whole.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) for child in _children(pid))


def measure(
    server: ServerProcess,
    concurrency: int,
    duration_s: float,
    factory: Any,
    warmup_s: float,
    channels: int = 1,
) -> tuple[LoadTestResult, float, float]:
    """A load test plus the server's and this generator's CPU ms per successful call."""
    server_before, self_before = cpu_seconds(server.pid), time.process_time()
    result = run_loadtest(
        server.target, concurrency, duration_s, factory, warmup_s=warmup_s, channels=channels
    )
    calls = max(result.ok, 1) * (warmup_s + duration_s) / duration_s  # warm-up calls cost too
    server_ms = (cpu_seconds(server.pid) - server_before) * 1000 / calls
    generator_ms = (time.process_time() - self_before) * 1000 / calls
    return result, server_ms, generator_ms


@contextmanager
def recommender_process(
    artifacts: Path, name: str, workers: int, extra: list[str], timeout_s: float = 600.0
) -> Iterator[ServerProcess]:
    """The recommender server in a child process, once it is SERVING."""
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        port_file = Path(tmp) / "port"
        log_file = Path(tmp) / "server.log"
        with log_file.open("w") as log_handle:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "recsys_serving.server",
                    "--artifacts",
                    str(artifacts),
                    "--name",
                    name,
                    "--workers",
                    str(workers),
                    "--port-file",
                    str(port_file),
                    "--reload-interval",
                    "3600",
                    *extra,
                ],
                stdout=log_handle,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + timeout_s
                while not port_file.exists():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"server did not start:\n{log_file.read_text()[-3000:]}")
                    time.sleep(0.1)
                target = f"127.0.0.1:{port_file.read_text().strip()}"
                with RecommenderClient(target) as client:
                    if not client.wait_until_serving(timeout_s):
                        raise RuntimeError(f"no model loaded:\n{log_file.read_text()[-3000:]}")
                yield ServerProcess(target, proc.pid)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                for line in log_file.read_text().splitlines():
                    if "query tower:" in line:
                        log.info("server: %s", line.split(": ", 1)[1])


def bench_users(version: Path, count: int) -> list[str]:
    """The profile users the requests name: ``count`` drawn with seed 0 (the same every run)."""
    user_ids = pq.read_table(version / "profiles.parquet", columns=["user_id"]).column(0)
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(user_ids), size=min(count, len(user_ids)), replace=False)
    return [str(user_ids[int(i)]) for i in chosen]


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "commit": commit,
    }


def _result(r: LoadTestResult) -> dict[str, Any]:
    return {
        "qps": r.qps,
        "p50_ms": r.p50_ms,
        "p95_ms": r.p95_ms,
        "p99_ms": r.p99_ms,
        "mean_ms": r.mean_ms,
        "calls": r.calls,
        "errors": r.errors,
        "server_ms": r.server_ms,
    }


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def main() -> int:
    """Run the benchmark; print a Markdown report and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each measurement")
    parser.add_argument(
        "--initial-warmup", type=float, default=15.0, help="seconds of load before the first run"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--workers", type=int, default=8, help="server worker threads (both)")
    parser.add_argument("--users", type=int, default=2000, help="distinct users in the requests")
    parser.add_argument(
        "--processes", type=int, default=1, help="server processes on the port (both servers)"
    )
    parser.add_argument(
        "--channels", type=int, default=1, help="generator connections (spread over processes)"
    )
    parser.add_argument(
        "--pin-cpus", action="store_true", help="replica i on CPU i (both servers' --pin-cpus)"
    )
    parser.add_argument("--server-arg", action="append", default=[], help="extra server flag")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    version = resolve_version(args.artifacts / args.name)
    users = bench_users(version, args.users)
    factory = user_requests(users, args.k)
    machine = _machine()
    machine["load_average_start"] = os.getloadavg()
    runs: list[dict[str, Any]] = []
    with (
        recommender_process(
            args.artifacts,
            args.name,
            args.workers,
            [
                f"--processes={args.processes}",
                *(["--pin-cpus"] if args.pin_cpus else []),
                *args.server_arg,
            ],
        ) as server,
        echo_server_process(
            workers=args.workers, processes=args.processes, pin_cpus=args.pin_cpus
        ) as echo,
    ):
        # Steady state: every path of every replica warm, and each replica's reply cache
        # (serialised fields per video, filled on first use) holding the videos these
        # requests return; a cold video costs ~2 us more per item.
        run_loadtest(
            server.target,
            args.concurrency,
            args.initial_warmup,
            factory,
            warmup_s=0.5,
            channels=args.channels,
        )
        for run in range(args.runs):
            single, single_cpu, _ = measure(
                server, 1, args.duration, factory, args.warmup, args.channels
            )
            echo_single, _, _ = measure(echo, 1, args.duration, factory, args.warmup, args.channels)
            # the two in-flight measurements back to back, in alternating order per run
            order = ["echo", "recommender"] if run % 2 == 0 else ["recommender", "echo"]
            loaded: dict[str, tuple[LoadTestResult, float, float]] = {}
            for which in order:
                loaded[which] = measure(
                    echo if which == "echo" else server,
                    args.concurrency,
                    args.duration,
                    factory,
                    args.warmup,
                    args.channels,
                )
            rec, echo_result = loaded["recommender"][0], loaded["echo"][0]
            runs.append(
                {
                    "single": _result(single) | {"server_cpu_ms": single_cpu},
                    "echo_single": _result(echo_single),
                    "loaded": _result(rec)
                    | {
                        "server_cpu_ms": loaded["recommender"][1],
                        "generator_cpu_ms": loaded["recommender"][2],
                    },
                    "echo": _result(echo_result)
                    | {
                        "server_cpu_ms": loaded["echo"][1],
                        "generator_cpu_ms": loaded["echo"][2],
                    },
                    "ratio": rec.qps / echo_result.qps,
                }
            )
            log.info(
                "run %d: single p50 %.2f p99 %.2f ms; C=%d %.0f vs echo %.0f calls/s (%.2fx); "
                "server CPU per call %.2f vs %.2f ms, generator %.2f vs %.2f ms",
                run + 1,
                single.p50_ms,
                single.p99_ms,
                args.concurrency,
                rec.qps,
                echo_result.qps,
                runs[-1]["ratio"],
                loaded["recommender"][1],
                loaded["echo"][1],
                loaded["recommender"][2],
                loaded["echo"][2],
            )
    machine["load_average_end"] = os.getloadavg()

    singles = [r["single"] for r in runs]
    loadeds = [r["loaded"] for r in runs]
    echos = [r["echo"] for r in runs]
    echo_singles = [r["echo_single"] for r in runs]
    stages = ("context_ms", "query_tower_ms", "index_ms", "rescoring_ms", "total_ms")

    def stage_median(results: list[dict[str, Any]], stage: str) -> float:
        return float(statistics.median(r["server_ms"].get(stage, float("nan")) for r in results))

    summary = {
        "single_p50_ms": _median(singles, "p50_ms"),
        "single_p99_ms": _median(singles, "p99_ms"),
        "single_mean_ms": _median(singles, "mean_ms"),
        "echo_single_p50_ms": _median(echo_singles, "p50_ms"),
        "echo_single_p99_ms": _median(echo_singles, "p99_ms"),
        "loaded_qps": _median(loadeds, "qps"),
        "loaded_p50_ms": _median(loadeds, "p50_ms"),
        "loaded_p99_ms": _median(loadeds, "p99_ms"),
        "echo_qps": _median(echos, "qps"),
        "echo_p50_ms": _median(echos, "p50_ms"),
        "echo_p99_ms": _median(echos, "p99_ms"),
        "throughput_ratio_vs_echo": float(statistics.median(r["ratio"] for r in runs)),
        "loaded_errors": sum(sum(r["errors"].values()) for r in loadeds),
        "single_server_cpu_ms": _median(singles, "server_cpu_ms"),
        "loaded_server_cpu_ms": _median(loadeds, "server_cpu_ms"),
        "loaded_generator_cpu_ms": _median(loadeds, "generator_cpu_ms"),
        "echo_server_cpu_ms": _median(echos, "server_cpu_ms"),
        "echo_generator_cpu_ms": _median(echos, "generator_cpu_ms"),
        "single_stages_ms": {s: stage_median(singles, s) for s in stages},
        "loaded_stages_ms": {s: stage_median(loadeds, s) for s in stages},
    }
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine,
        "artifact": str(version),
        "settings": vars(args) | {"artifacts": str(args.artifacts), "json": str(args.json)},
        "targets": TARGETS,
        "summary": summary,
        "runs": runs,
    }
    s = summary
    single_stages = s["single_stages_ms"]
    grpc_single = s["single_mean_ms"] - single_stages["total_ms"]
    lines = [
        f"Serving benchmark, {machine['date']}, {machine['cpus']} CPUs ({machine['cpu']}), "
        f"load average at start {machine['load_average_start'][0]:.1f}, "
        f"median of {args.runs} runs of {args.duration:.0f} s, k={args.k}, "
        f"{len(users)} profile users, server workers {args.workers}, "
        f"{args.processes} server process(es) each"
        + (" pinned to CPUs" if args.pin_cpus else "")
        + f", {args.channels} client connection(s)",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| (a) 1 in flight: p50 | {s['single_p50_ms']:.2f} ms | <= 3 ms |",
        f"| (a) 1 in flight: p99 | {s['single_p99_ms']:.2f} ms | <= 6 ms |",
        f"| (a) 1 in flight, echo (gRPC floor) | p50 {s['echo_single_p50_ms']:.2f} ms, "
        f"p99 {s['echo_single_p99_ms']:.2f} ms | |",
        f"| (b) {args.concurrency} in flight: recommender | {s['loaded_qps']:.0f} calls/s, "
        f"p50 {s['loaded_p50_ms']:.2f} ms, p99 {s['loaded_p99_ms']:.2f} ms, "
        f"{s['loaded_errors']} errors | |",
        f"| (b) {args.concurrency} in flight: echo | {s['echo_qps']:.0f} calls/s, "
        f"p50 {s['echo_p50_ms']:.2f} ms, p99 {s['echo_p99_ms']:.2f} ms | |",
        f"| (b) throughput ratio | {s['throughput_ratio_vs_echo']:.2f}x echo | >= 0.4x |",
        f"| CPU per call, recommender: server / generator | "
        f"{s['loaded_server_cpu_ms']:.2f} / {s['loaded_generator_cpu_ms']:.2f} ms "
        f"(1 in flight: server {s['single_server_cpu_ms']:.2f} ms) | |",
        f"| CPU per call, echo: server / generator | {s['echo_server_cpu_ms']:.2f} / "
        f"{s['echo_generator_cpu_ms']:.2f} ms | |",
        "",
        "Where the time goes (mean per request, ms; server stages from the replies):",
        "",
        f"| stage | 1 in flight | {args.concurrency} in flight |",
        "|---|---|---|",
    ]
    for stage in stages[:-1]:
        lines.append(
            f"| {stage[:-3]} | {single_stages[stage]:.3f} | {s['loaded_stages_ms'][stage]:.3f} |"
        )
    loaded_grpc = s["loaded_p50_ms"] - s["loaded_stages_ms"]["total_ms"]
    lines.append(
        f"| gRPC + queueing (client mean - server total) | {grpc_single:.3f} | "
        f"{loaded_grpc:.3f} (p50 - server mean) |"
    )
    lines.append(
        f"| server total | {single_stages['total_ms']:.3f} | "
        f"{s['loaded_stages_ms']['total_ms']:.3f} |"
    )
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark synthetic world generation: events/s and peak RSS, next to plain pyarrow writing.

Each repeat runs in a fresh child process, so its peak RSS (``getrusage`` maxrss) is its own.
The reference is the throughput of writing the same number of event rows, with the same
schema and chunking, straight with ``pyarrow.parquet`` (no simulation).

    .venv/bin/python benchmarks/bench_synth.py --preset bench --repeats 3 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_EVENTS_PER_S = 1_000_000 / 30  # issue target: 1M events per 30 s on 2 cores


def _peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _generate(args: argparse.Namespace) -> dict[str, Any]:
    """One timed generation (runs in the child process)."""
    from recsys_data.synth import generate_world
    from recsys_data.world import world_config

    config = world_config(
        args.preset, seed=args.seed, users=args.users, items=args.items, days=args.days
    )
    load = os.getloadavg()[0]  # the machine is shared: say how busy it was
    started = time.perf_counter()
    meta = generate_world(config, args.out, overwrite=True)
    seconds = time.perf_counter() - started
    events = meta.counts["events"]
    return {
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "peak_rss_mib": _peak_rss_mib(),
        "load_1min": load,
        "days": config.days,
        "users": config.users,
        "items": config.items,
        "counts": meta.counts,
    }


def _pyarrow_baseline(rows: int, chunks: int, out: Path) -> dict[str, Any]:
    """Write ``rows`` event-like rows in ``chunks`` row groups with plain pyarrow."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsys.dataset.schema import EVENTS

    per_chunk = max(1, rows // max(chunks, 1))
    rng = np.random.default_rng(0)
    search = rng.random(per_chunk) < 0.12
    user_ids = pa.array([f"u{i:06d}" for i in range(100_000)])
    item_ids = pa.array([f"v{i:07d}" for i in range(100_000)])
    chunk = pa.table(
        {
            "user_id": user_ids.take(pa.array(rng.integers(0, 100_000, per_chunk))),
            "timestamp": pa.array(np.sort(rng.integers(1_767_225_600, 1_769_817_600, per_chunk))),
            "type": pa.array(np.where(search, "search", "watch")),
            "item_id": item_ids.take(pa.array(rng.integers(0, 100_000, per_chunk), mask=search)),
            "query": pa.array(np.full(per_chunk, "word other"), mask=~search, type=pa.string()),
            "watch_fraction": pa.array(rng.random(per_chunk).astype(np.float32), mask=search),
        },
        schema=EVENTS.arrow_schema(),
    )
    started = time.perf_counter()
    written = 0
    with pq.ParquetWriter(out, chunk.schema) as writer:
        while written < rows:
            part = chunk.slice(0, min(per_chunk, rows - written))
            writer.write_table(part)
            written += part.num_rows
    seconds = time.perf_counter() - started
    return {"rows": written, "seconds": seconds, "events_per_s": written / seconds}


def _child(args: argparse.Namespace, out: Path, mode: str, **extra: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--_child", mode, "--out", str(out), "--preset", args.preset]
    cmd += ["--seed", str(args.seed)]
    for name in ("users", "items", "days"):
        value = getattr(args, name)
        if value is not None:
            cmd += [f"--{name}", str(value)]
    for name, value in extra.items():
        cmd += [f"--_{name}", str(value)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table (units: events/s, seconds, MiB)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["tiny", "demo", "bench"], default="bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=3, help="timed generations (default 3)")
    parser.add_argument("--users", type=int, help="override the preset's users")
    parser.add_argument("--items", type=int, help="override the preset's videos")
    parser.add_argument("--days", type=int, help="override the preset's days")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--_child", choices=["generate", "pyarrow"], help=argparse.SUPPRESS)
    parser.add_argument("--_rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_chunks", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._child == "generate":
        print(json.dumps(_generate(args)))
        return 0
    if args._child == "pyarrow":
        print(json.dumps(_pyarrow_baseline(args._rows, args._chunks, args.out)))
        return 0
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out, prefix="bench_synth-") as scratch:
        runs = []
        for i in range(args.repeats):
            run = _child(args, Path(scratch) / "world", "generate")
            runs.append(run)
            print(
                f"run {i + 1}/{args.repeats}: {run['events']:,} events in {run['seconds']:.1f} s",
                file=sys.stderr,
            )
        first = runs[0]
        baseline = _child(
            args,
            Path(scratch) / "baseline.parquet",
            "pyarrow",
            rows=first["events"],
            chunks=first["days"],
        )

    median = {
        key: statistics.median(r[key] for r in runs)
        for key in ("seconds", "events_per_s", "peak_rss_mib")
    }
    result = {
        "preset": args.preset,
        "seed": args.seed,
        "users": first["users"],
        "items": first["items"],
        "days": first["days"],
        "events": first["events"],
        "counts": first["counts"],
        "runs": runs,
        "median": median,
        "pyarrow_baseline": baseline,
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "meets_target": median["events_per_s"] >= TARGET_EVENTS_PER_S,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(
        f"synthetic world generation: preset {args.preset}, seed {args.seed}, "
        f"{first['users']:,} users, {first['items']:,} videos, {first['days']} days, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"{'run':>6} {'events':>12} {'wall (s)':>9} {'events/s':>11} {'peak RSS (MiB)':>15} "
        f"{'load (1 min)':>13}"
    )
    for i, r in enumerate(runs, 1):
        print(
            f"{i:>6} {r['events']:>12,} {r['seconds']:>9.1f} {r['events_per_s']:>11,.0f} "
            f"{r['peak_rss_mib']:>15,.0f} {r['load_1min']:>13.1f}"
        )
    print(
        f"{'median':>6} {first['events']:>12,} {median['seconds']:>9.1f} "
        f"{median['events_per_s']:>11,.0f} {median['peak_rss_mib']:>15,.0f}"
    )
    print(
        f"reference, plain pyarrow Parquet write of the same {baseline['rows']:,} rows in "
        f"{first['days']} row groups: {baseline['seconds']:.1f} s, "
        f"{baseline['events_per_s']:,.0f} events/s"
    )
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(
        f"target >= {TARGET_EVENTS_PER_S:,.0f} events/s (1M events per 30 s): {verdict} it "
        f"({median['events_per_s'] / TARGET_EVENTS_PER_S:.1f}x)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: example building on Apache Beam's local runner vs the local builder, same run.

Each build runs in its own fresh process (so each peak RSS is that build's alone), the two
builders alternating, --repeats times each, on the same dataset, split and partitions; the
Beam output is checked to equal the local one (examples.json). Prints, per builder, the
median seconds, examples/s and events/s, the median peak RSS, and Beam's time as a multiple
of the local builder's (the target is at most 3x). Usage:

    .venv/bin/python benchmarks/bench_beam.py --data data/generated/bench --repeats 3

``--runner-arg`` passes Beam options (e.g. ``--runner-arg=--direct_num_workers=2``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

BUILDERS = ("local", "beam")


def _one_build(builder: str, data: Path, out: Path, partitions: int | None, beam_args: list[str]):
    """Run one build in this process; print its figures as JSON on stdout."""
    from recsys.dataset.splits import Split
    from recsys.examples.building import build_examples
    from recsys.features.contract import FeatureConfig

    started = time.perf_counter()
    if builder == "local":
        result = build_examples(data, out, Split("time"), FeatureConfig(), partitions=partitions)
    else:
        from recsys.examples.beam_building import build_examples_beam

        result = build_examples_beam(
            data, out, Split("time"), FeatureConfig(), partitions=partitions, beam_args=beam_args
        )
    seconds = time.perf_counter() - started
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "train": result.counts["train"],
                "eval": result.counts["eval"],
                "shards": len(result.train_shards) + len(result.eval_shards),
                "cpu_seconds": cpu.ru_utime + cpu.ru_stime,
                "peak_rss_mib": cpu.ru_maxrss / 1024,
            }
        )
    )


def _spawn(builder: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--one", builder, "--data", str(args.data), "--out", str(out)]
    if args.partitions:
        cmd += ["--partitions", str(args.partitions)]
    cmd += [f"--runner-arg={a}" for a in args.runner_arg]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(f"{builder} build failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Run the comparison (or, with --one, a single build) and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="canonical dataset folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--partitions", type=int, help="user partitions (default: the builder's)")
    parser.add_argument("--runner-arg", action="append", default=[], help="a Beam option")
    parser.add_argument("--work", type=Path, help="where to write examples (default: temp)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--one", choices=BUILDERS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        _one_build(args.one, args.data, args.out, args.partitions, args.runner_arg)
        return 0

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-beam-"))
    events = pq.read_metadata(args.data / "events.parquet").num_rows
    runs: dict[str, list[dict[str, float]]] = {b: [] for b in BUILDERS}
    for r in range(args.repeats):
        for builder in BUILDERS:
            figures = _spawn(builder, args, work / builder)
            runs[builder].append(figures)
            print(f"run {r + 1} {builder}: {json.dumps(figures)}", file=sys.stderr)
    local_meta = (work / "local" / "examples.json").read_text()
    same = local_meta == (work / "beam" / "examples.json").read_text()

    def median(builder: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[builder])

    figures = {
        "data": str(args.data),
        "events": events,
        "repeats": args.repeats,
        "same_examples_json": same,
        "load_average": os.getloadavg(),
    }
    print(f"dataset {args.data}: {events:,} events; median of {args.repeats} runs per builder")
    header = f"{'builder':<28}{'seconds':>9}{'examples/s':>12}{'events/s':>12}"
    print(f"{header}{'CPU s':>8}{'peak MiB':>10}")
    for builder in BUILDERS:
        secs = median(builder, "seconds")
        train = runs[builder][-1]["train"]
        figures[builder] = {
            "seconds": secs,
            "runs_seconds": [run["seconds"] for run in runs[builder]],
            "train_examples": train,
            "examples_per_s": train / secs,
            "events_per_s": events / secs,
            "cpu_seconds": median(builder, "cpu_seconds"),
            "peak_rss_mib": median(builder, "peak_rss_mib"),
        }
        name = "local builder" if builder == "local" else "Beam (local runner)"
        f = figures[builder]
        print(
            f"{name:<28}{secs:>9.1f}{f['examples_per_s']:>12,.0f}{f['events_per_s']:>12,.0f}"
            f"{f['cpu_seconds']:>8.1f}{f['peak_rss_mib']:>10,.0f}"
        )
    ratio = figures["beam"]["seconds"] / figures["local"]["seconds"]
    figures["beam_over_local_time"] = ratio
    print(f"Beam / local time: {ratio:.2f}x (target <= 3x); same examples.json: {same}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

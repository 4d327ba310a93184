"""Live additions: videos/s through AddVideos' path, and Recommend before and after them.

(1) In this process, pinned to one CPU (TensorFlow on one thread): the served model
    (`Recommender.load` with its live catalog) adds --additions new videos in batches of
    --batch through `Recommender.add_videos` (checked, embedded by the candidate SavedModel,
    logged durably, served); the median videos/s over batches, and in the same run the
    embedding alone on the same batches (the floor).
(2) `bench_serving.py` (one call at a time p50; 16 in flight calls/s) on the same model,
    --rounds times each "before" (an empty live catalog) and "after" (the additions of (1)
    present: every replica loads them at start), in alternating order; medians and ratios.

    .venv/bin/python benchmarks/bench_live_serving.py --artifacts /tmp/bench-artifacts \
        --name bench --additions 10000 --rounds 2 -- --runs 3 --duration 5 --processes 2
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recsys.artifact.versions import resolve_version
from recsys.live.catalog import LIVE_DIR, LiveVideo

HERE = Path(__file__).resolve().parent


def _videos(version: Path, count: int, content_dim: int | None, seed: int) -> list[LiveVideo]:
    """``count`` new videos with metadata drawn from the catalog's, ids of their own."""
    items = pq.read_table(version / "items.parquet", columns=["title", "category", "channel"])
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, items.num_rows, size=count)
    now = int(time.time())
    titles, categories, channels = (items.column(c).to_pylist() for c in items.column_names)
    return [
        LiveVideo(
            f"live-{seed}-{i:06d}",
            titles[r] or "",
            categories[r] or "",
            channels[r] or "",
            now - int(rng.integers(0, 2 * 86_400)),
            60.0,
            None
            if content_dim is None
            else rng.normal(size=content_dim).astype(np.float32) / np.sqrt(content_dim),
        )
        for i, r in enumerate(rows.tolist())
    ]


def add_phase(version: Path, live_dir: Path, count: int, batch: int) -> dict[str, float]:
    """Add ``count`` videos to ``version``'s model; videos/s (all, and embedding alone)."""
    os.sched_setaffinity(0, {0})
    # TensorFlow: this phase embeds with the candidate SavedModel; one thread, one CPU.
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from recsys.artifact.reader import open_version
    from recsys.inference.recommender import Recommender
    from recsys.live.catalog import CATALOG_FILE

    content_dim = open_version(version, verify=False).settings.content_dim
    model = Recommender.load(version, verify=False, live_catalog=live_dir / CATALOG_FILE)
    assert model.live is not None
    videos = _videos(version, count, content_dim, seed=1)
    model.live.embed(videos[:batch])  # the model loaded and traced before timing
    whole, embed_only = [], []
    for start in range(0, count, batch):
        chunk = videos[start : start + batch]
        began = time.perf_counter()
        model.live.embed(chunk)
        embed_only.append(len(chunk) / (time.perf_counter() - began))
        began = time.perf_counter()
        model.add_videos(chunk)
        whole.append(len(chunk) / (time.perf_counter() - began))
    served = int(model.live.delta.active.sum())
    del model
    gc.collect()
    return {
        "videos": served,
        "batch": batch,
        "add_videos_per_s": statistics.median(whole),
        "embed_only_videos_per_s": statistics.median(embed_only),
    }


def serving_run(artifacts: Path, name: str, extra: list[str]) -> dict[str, float]:
    """One bench_serving.py run; its summary."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "serving.json"
        subprocess.run(
            [
                sys.executable,
                str(HERE / "bench_serving.py"),
                "--artifacts",
                str(artifacts),
                "--name",
                name,
                "--json",
                str(out),
                *extra,
            ],
            check=True,
        )
        return json.loads(out.read_text())["summary"]


def main() -> int:
    """Run both phases and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--additions", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("serving_args", nargs="*", help="after --: bench_serving.py flags")
    args = parser.parse_args()
    model_dir = args.artifacts / args.name
    version = resolve_version(model_dir)
    live_dir, aside = model_dir / LIVE_DIR, model_dir / f"{LIVE_DIR}.aside"
    for folder in (live_dir, aside):
        shutil.rmtree(folder, ignore_errors=True)
    added = add_phase(version, live_dir, args.additions, args.batch)
    print(
        f"added {added['videos']} videos in batches of {args.batch} on one CPU: median "
        f"{added['add_videos_per_s']:,.0f} videos/s through add_videos; embedding alone "
        f"{added['embed_only_videos_per_s']:,.0f} videos/s",
        flush=True,
    )
    live_dir.rename(aside)
    results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for round_ in range(args.rounds):
        for state in ("before", "after") if round_ % 2 == 0 else ("after", "before"):
            if state == "after":
                shutil.rmtree(live_dir, ignore_errors=True)  # the empty one "before" opened
                aside.rename(live_dir)
            try:
                results[state].append(serving_run(args.artifacts, args.name, args.serving_args))
            finally:
                if state == "after":
                    live_dir.rename(aside)
            summary = results[state][-1]
            print(
                f"round {round_ + 1} {state}: p50 {summary['single_p50_ms']:.2f} ms, "
                f"16 in flight {summary['loaded_qps']:,.0f} calls/s "
                f"(echo {summary['echo_qps']:,.0f})",
                flush=True,
            )
    shutil.rmtree(live_dir, ignore_errors=True)
    aside.rename(live_dir)

    def med(state: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results[state]))

    print("\n| Recommend, 1M-video model | before | after 10k live additions | after / before |")
    print("|---|---|---|---|")
    for key, label in (
        ("single_p50_ms", "1 in flight, p50 ms"),
        ("single_p99_ms", "1 in flight, p99 ms"),
        ("loaded_qps", "16 in flight, calls/s"),
        ("throughput_ratio_vs_echo", "16 in flight, ratio to echo"),
    ):
        before, after = med("before", key), med("after", key)
        print(f"| {label} | {before:.2f} | {after:.2f} | {after / before:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

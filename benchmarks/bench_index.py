"""Benchmark the ScaNN candidate index against the exact (numpy) baseline in one run.

Measures build time, a tuned ScaNN setting (target recall@k on held-out queries), recall@k,
single-query latency p50/p99 and queries/s for both indexes (single-threaded: BLAS is held
to one thread), batched queries/s, resident memory and size on disk.

    .venv/bin/python benchmarks/bench_index.py --items 1000000 --dim 64 --queries 1000 \
        --repeats 3 --json reports/bench_index.json
"""

from __future__ import annotations

import os

# Single-threaded figures need a single-threaded matvec; set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import datetime
import gc
import json
import logging
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from recsys.index.base import Index, IndexConfig
from recsys.index.exact import ExactIndex
from recsys.index.recall import per_query_recall
from recsys.index.scann_index import ScannIndex
from recsys.index.tuning import tune_scann

logger = logging.getLogger("bench_index")

TARGETS = {
    "recall": 0.95,
    "scann_p50_ms": 1.0,
    "speedup_vs_exact": 20.0,
    "build_s": 90.0,
}
_GENERATION_CHUNK = 100_000


@dataclasses.dataclass(frozen=True)
class Mixture:
    """A gaussian mixture on the unit sphere with heavy-tailed cluster sizes."""

    centers: np.ndarray  # [num_clusters, dim]
    weights: np.ndarray  # [num_clusters], sums to 1
    spreads: np.ndarray  # [num_clusters], noise norm relative to the (unit) center

    @classmethod
    def make(cls, num_clusters: int, dim: int, seed: int) -> Mixture:
        """Random unit centers; Pareto(1.2) cluster weights (a few clusters hold many items)."""
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((num_clusters, dim))
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        weights = rng.pareto(1.2, num_clusters) + 1.0
        return cls(centers, weights / weights.sum(), rng.uniform(0.5, 1.0, num_clusters))

    def sample(self, num_points: int, seed: int) -> np.ndarray:
        """Unit-norm float32 points `[num_points, dim]`, generated in chunks to bound memory."""
        rng = np.random.default_rng(seed)
        dim = self.centers.shape[1]
        out = np.empty((num_points, dim), dtype=np.float32)
        for start in range(0, num_points, _GENERATION_CHUNK):
            size = min(_GENERATION_CHUNK, num_points - start)
            labels = rng.choice(len(self.weights), size, p=self.weights)
            noise = (
                rng.standard_normal((size, dim)) * (self.spreads[labels] / np.sqrt(dim))[:, None]
            )
            points = self.centers[labels] + noise
            points /= np.linalg.norm(points, axis=1, keepdims=True)
            out[start : start + size] = points
        return out


def noisy_copies(embeddings: np.ndarray, num: int, seed: int, noise: float = 0.5) -> np.ndarray:
    """Queries near random items (for real embeddings): `[num, dim]`, unit norm."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, embeddings.shape[0], num)
    base = embeddings[rows].astype(np.float64)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    points = base + noise / np.sqrt(base.shape[1]) * rng.standard_normal(base.shape)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (from /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def dir_size_mb(path: Path) -> float:
    """Bytes of all files under `path`, in MiB."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def time_single_queries(index: Index, queries: np.ndarray, k: int) -> dict[str, float]:
    """Latency p50/p99 (ms), queries/s and CPU/wall of a loop of single-query searches."""
    for query in queries[:10]:
        index.search(query, k)
    timings = np.empty(len(queries))
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for i, query in enumerate(queries):
        started = time.perf_counter()
        index.search(query, k)
        timings[i] = time.perf_counter() - started
    wall = time.perf_counter() - wall_start
    return {
        "p50_ms": float(np.percentile(timings, 50) * 1e3),
        "p99_ms": float(np.percentile(timings, 99) * 1e3),
        "qps": len(queries) / wall,
        "cpu_per_wall": (time.process_time() - cpu_start) / wall,
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per-key median over repeated runs."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole benchmark; return every figure in a JSON-ready dict."""
    k = args.k
    started = time.perf_counter()
    if args.embeddings:
        embeddings = np.load(args.embeddings, allow_pickle=False).astype(np.float32)
        tune_queries = noisy_copies(embeddings, args.tune_queries, args.seed + 1)
        eval_queries = noisy_copies(embeddings, args.queries, args.seed + 2)
        source = str(args.embeddings)
    else:
        mixture = Mixture.make(args.clusters, args.dim, args.seed)
        embeddings = mixture.sample(args.items, args.seed + 1)
        tune_queries = mixture.sample(args.tune_queries, args.seed + 2)
        eval_queries = mixture.sample(args.queries, args.seed + 3)
        source = f"mixture of {args.clusters} gaussians, Pareto(1.2) sizes, seed {args.seed}"
    num_items, dim = embeddings.shape
    ids = [f"v{row:08d}" for row in range(num_items)]
    logger.info(
        "data: %d x %d (%s) in %.1f s", num_items, dim, source, time.perf_counter() - started
    )

    gc.collect()
    rss_before = rss_mb()
    started = time.perf_counter()
    exact = ExactIndex.build(ids, embeddings)
    exact_build_s = time.perf_counter() - started
    exact_rss_mb = rss_mb() - rss_before

    started = time.perf_counter()
    tune_truth = exact.search_batch(tune_queries, k).ids
    eval_truth = exact.search_batch(eval_queries, k).ids
    exact_batch_qps = (len(tune_queries) + len(eval_queries)) / (time.perf_counter() - started)
    logger.info("exact ground truth at %.0f queries/s", exact_batch_qps)

    started = time.perf_counter()
    import scann  # noqa: F401  (TensorFlow's import is timed apart from the build)

    scann_import_s = time.perf_counter() - started

    gc.collect()
    rss_before = rss_mb()
    started = time.perf_counter()
    config = IndexConfig(kind="scann").resolve(num_items)
    scann_index = ScannIndex.build(ids, embeddings, config)
    scann_build_s = time.perf_counter() - started
    scann_rss_mb = rss_mb() - rss_before
    logger.info("ScaNN build %.1f s: %s", scann_build_s, scann_index.config)

    started = time.perf_counter()
    tuned = tune_scann(
        scann_index,
        tune_queries,
        k,
        args.target_recall,
        exact=tune_truth,
        latency_queries=min(200, len(tune_queries)),
        stderr_margin=args.stderr_margin,
    )
    tune_s = time.perf_counter() - started

    started = time.perf_counter()
    found = scann_index.search_batch(eval_queries, k)
    scann_batch_qps = len(eval_queries) / (time.perf_counter() - started)
    recalls = per_query_recall(found.ids, eval_truth)
    recall, recall_stderr = float(recalls.mean()), float(recalls.std(ddof=1) / len(recalls) ** 0.5)

    exact_runs, scann_runs = [], []
    exact_queries = eval_queries[: args.exact_latency_queries]
    for repeat in range(args.repeats):
        scann_runs.append(time_single_queries(scann_index, eval_queries, k))
        exact_runs.append(time_single_queries(exact, exact_queries, k))
        logger.info("repeat %d: scann %s exact %s", repeat, scann_runs[-1], exact_runs[-1])
    scann_single, exact_single = median_of(scann_runs), median_of(exact_runs)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_index_"))
    try:
        started = time.perf_counter()
        scann_index.save(workdir / "scann")
        scann_save_s = time.perf_counter() - started
        exact.save(workdir / "exact")
        started = time.perf_counter()
        loaded = ScannIndex.load(workdir / "scann")
        scann_load_s = time.perf_counter() - started
        same = np.array_equal(loaded.search_batch(eval_queries[:50], k).ids, found.ids[:50])
        disk = {
            "scann_mb": dir_size_mb(workdir / "scann"),
            "exact_mb": dir_size_mb(workdir / "exact"),
        }
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "args": vars(args),
        "data": {"items": num_items, "dim": dim, "source": source, "k": k},
        "config": scann_index.config.to_dict(),
        "build_s": {"exact": exact_build_s, "scann": scann_build_s},
        "rss_delta_mb": {"exact": exact_rss_mb, "scann": scann_rss_mb},
        "tuning": {
            "seconds": tune_s,
            "leaves_to_search": tuned.leaves_to_search,
            "reorder_k": tuned.reorder_k,
            "tune_recall": tuned.recall,
            "tune_recall_stderr": tuned.recall_stderr,
            "met_target": tuned.met_target,
            "trials": [dataclasses.asdict(trial) for trial in tuned.trials],
        },
        "recall_at_k": recall,
        "recall_at_k_stderr": recall_stderr,
        "scann_import_s": scann_import_s,
        "single_query": {"exact": exact_single, "scann": scann_single},
        "speedup_single_qps": scann_single["qps"] / exact_single["qps"],
        "batch_qps": {"exact_1_blas_thread": exact_batch_qps, "scann_all_cores": scann_batch_qps},
        "disk_mb": disk,
        "save_s": scann_save_s,
        "load_s": scann_load_s,
        "load_round_trip_identical": bool(same),
        "repeats": args.repeats,
        "exact_latency_queries": len(exact_queries),
    }


def report(figures: dict[str, Any]) -> str:
    """Format the figures as a table with units and the issue's targets."""
    data, single = figures["data"], figures["single_query"]
    scann = single["scann"]
    k = data["k"]

    def pair(key: str, values: dict[str, Any], fmt: str) -> str:
        return f"exact {values['exact' + key]:{fmt}}   scann {values['scann' + key]:{fmt}}"

    timing = {
        f"{name}_{key}": value for name in ("exact", "scann") for key, value in single[name].items()
    }
    batch, tuning = figures["batch_qps"], figures["tuning"]
    rows = [
        ("data", f"{data['items']:,} x {data['dim']} float32, k={k}"),
        ("ScaNN config", _config_text(figures)),
        ("build time (s)", pair("", figures["build_s"], ".1f")),
        ("import scann + TensorFlow (s)", f"{figures['scann_import_s']:.1f} (not in build time)"),
        ("RSS delta after build (MiB)", pair("", figures["rss_delta_mb"], ".0f")),
        ("size on disk (MiB)", pair("_mb", figures["disk_mb"], ".0f")),
        (
            "tuning (s)",
            f"{tuning['seconds']:.1f} ({len(tuning['trials'])} settings tried; recall on "
            f"tuning queries {tuning['tune_recall']:.4f} +- {tuning['tune_recall_stderr']:.4f})",
        ),
        (
            f"recall@{k} (held-out queries)",
            f"{figures['recall_at_k']:.4f} +- {figures['recall_at_k_stderr']:.4f} (1 s.e.)",
        ),
        ("single query p50 (ms)", pair("_p50_ms", timing, ".3f")),
        ("single query p99 (ms)", pair("_p99_ms", timing, ".3f")),
        ("single-thread queries/s", pair("_qps", timing, ".0f")),
        ("CPU/wall while timing", pair("_cpu_per_wall", timing, ".2f")),
        ("speedup (queries/s ratio)", f"{figures['speedup_single_qps']:.1f}x"),
        (
            "batched queries/s",
            f"exact (1 BLAS thread) {batch['exact_1_blas_thread']:.0f}   "
            f"scann (all cores) {batch['scann_all_cores']:.0f}",
        ),
        (
            "save / load (s)",
            f"{figures['save_s']:.1f} / {figures['load_s']:.1f} "
            f"(same results after load: {figures['load_round_trip_identical']})",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append(
        f"latency: median of {figures['repeats']} repeats; exact timed on "
        f"{figures['exact_latency_queries']} queries, ScaNN on {figures['args']['queries']}"
    )
    checks = [
        (f"recall@{k} >= {TARGETS['recall']}", figures["recall_at_k"] >= TARGETS["recall"]),
        (f"p50 <= {TARGETS['scann_p50_ms']} ms", scann["p50_ms"] <= TARGETS["scann_p50_ms"]),
        (
            f">= {TARGETS['speedup_vs_exact']:.0f}x exact queries/s",
            figures["speedup_single_qps"] >= TARGETS["speedup_vs_exact"],
        ),
        (f"build <= {TARGETS['build_s']:.0f} s", figures["build_s"]["scann"] <= TARGETS["build_s"]),
    ]
    lines.extend(f"target {name}: {'PASS' if ok else 'FAIL'}" for name, ok in checks)
    return "\n".join(lines)


def _config_text(figures: dict[str, Any]) -> str:
    config, tuning = figures["config"], figures["tuning"]
    return (
        f"{config['num_leaves']} leaves, search {tuning['leaves_to_search']}, "
        f"reorder {tuning['reorder_k']}, AH {config['dims_per_block']} dims/block, "
        f"threshold {config['anisotropic_quantization_threshold']}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="corpus size")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension")
    parser.add_argument("--clusters", type=int, default=1500, help="mixture components")
    parser.add_argument("--queries", type=int, default=1000, help="held-out evaluation queries")
    parser.add_argument("--tune-queries", type=int, default=1000, help="held-out tuning queries")
    parser.add_argument(
        "--exact-latency-queries", type=int, default=300, help="queries timed on the exact index"
    )
    parser.add_argument("--k", type=int, default=100, help="neighbours per query")
    parser.add_argument("--target-recall", type=float, default=TARGETS["recall"])
    parser.add_argument(
        "--stderr-margin",
        type=float,
        default=2.0,
        help="tuning keeps settings whose recall less this many standard errors meets the target",
    )
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the latency timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embeddings", type=Path, help="a [n, dim] float .npy to use instead")
    parser.add_argument("--workdir", type=Path, help="keep the saved indexes here")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table, write JSON when asked."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    figures = run(args)
    print(report(figures))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

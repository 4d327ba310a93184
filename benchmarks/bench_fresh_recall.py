"""Served-index recall against exact search, by how the freshness term is re-applied.

Loads `recsys evaluate`'s queries (the same sample) for a demo-style artifact, ranks them
exactly (the catalog at each query's day) and through the served path
(`ArtifactModel.rank_served`, the serving Retriever) at each --setting WIDEN:YOUNG_DAYS
(`recsys.inference.retrieval.FRESH_WIDEN` / `YOUNG_DAYS`), and prints R@100, its ratio to
exact search's, and the overlap of the two top 100s.

    .venv/bin/python benchmarks/bench_fresh_recall.py --artifact artifacts/demo \
        --data data/generated/demo --setting 2:10 --setting 4:14
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recsys.evaluation import evaluate as ev
from recsys.inference import retrieval


def _setting(text: str) -> tuple[int, float]:
    widen, _, young = text.partition(":")
    try:
        return int(widen), float(young)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--setting takes WIDEN:DAYS, got {text!r}") from None


def main() -> int:
    """Measure each --setting and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--setting", type=_setting, action="append", default=[])
    parser.add_argument(
        "--day-start", action="store_true", help="also serve at each query's day start"
    )
    args = parser.parse_args()
    model, _ = ev._open_artifact(args.artifact, args.data)
    split, _ = ev.resolve_split(model, args.data, None)
    with tempfile.TemporaryDirectory() as work:
        queries = ev.load_queries(
            model, args.data, split, Path(work), args.queries, model.config.train.seed, False
        )
    q_emb, exact = ev.rank_model_exact(model, queries, 100, False)
    labels = queries.labels[:, None]

    def r100(ranked: np.ndarray) -> float:
        return float((ranked[:, :100] == labels).any(axis=1).mean())

    print(f"exact search R@100 {r100(exact):.4f} on {len(queries)} queries\n")
    print("| widen | young days | moment | R@100 | / exact | overlap | seconds |")
    print("|---|---|---|---|---|---|---|")
    moments = [("query time", queries.times)]
    if args.day_start:
        moments.append(("day start", queries.times // 86_400 * 86_400))
    for widen, young in args.setting or [(retrieval.FRESH_WIDEN, retrieval.YOUNG_DAYS)]:
        retrieval.FRESH_WIDEN, retrieval.YOUNG_DAYS = widen, young
        for label, times in moments:
            started = time.perf_counter()
            served = model.rank_served(q_emb, times, 100)
            if served is None:
                print("the artifact has no index")
                return 1
            got = r100(served[0])
            print(
                f"| {widen} | {young:g} | {label} | {got:.4f} | {got / r100(exact):.3f} | "
                f"{ev._overlap(served[0], exact, 100):.3f} | "
                f"{time.perf_counter() - started:.1f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

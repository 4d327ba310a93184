"""What re-applying the freshness term per request costs, in the library, same process.

Loads the served model (user_id-only requests for the profile users bench_serving.py picks,
k=100) and times `Recommender.recommend` per request, alternating --rounds times between the
served path (the freshness term at the request's moment) and the index's exported scores
alone (`Retriever.aged` unset: the path before). Medians per round, in ms.

    .venv/bin/python benchmarks/bench_fresh_cost.py --artifacts /tmp/bench-artifacts \
        --name bench --users 300 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from bench_serving import bench_users  # this folder is on sys.path when run as a script

from recsys.artifact.versions import resolve_version
from recsys.inference.recommender import Recommender


def main() -> int:
    """Time both paths and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    version = resolve_version(args.artifacts / args.name)
    model = Recommender.load(version, verify=False)
    users = bench_users(version, args.users)
    retriever = model._retriever  # the benchmark switches the path it measures
    aged = retriever.aged
    if aged is None:
        print("the model has no freshness term: nothing to compare")
        return 1
    print("| round | path | total ms (median) | index ms (median) |")
    print("|---|---|---|---|")
    for round_ in range(args.rounds):
        for label, setting in (("freshness at the request", aged), ("exported scores", None)):
            retriever.aged = setting
            total, index = [], []
            for user in users:
                began = time.perf_counter()
                result = model.recommend(None, user, 100)
                total.append(time.perf_counter() - began)
                index.append(result.timings.index_ms)
            print(
                f"| {round_ + 1} | {label} | {statistics.median(total) * 1e3:.3f} | "
                f"{statistics.median(index):.3f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

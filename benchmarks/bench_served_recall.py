"""How close the served top k is to exact search, per ScaNN search setting, on real requests.

The serving benchmark's requests (user_id only, the same users bench_serving.py picks) go
through the library at each setting (leaves searched, reorder depth); the exact top k comes
from all the catalog's embeddings. Watched videos are not excluded here, so both sides rank
the whole catalog. The query embedding is recovered from the reply itself: its logits are
``E[rows] @ q`` (exact dot products, the Index contract), so ``q`` is their least-squares
solution (checked to reproduce the logits). Reports recall@k (served ∩ exact, mean and
standard error) and the library's mean index time per request at each setting.

    .venv/bin/python benchmarks/bench_served_recall.py --artifacts /tmp/bench-artifacts \
        --name bench --setting 50:250 --setting 100:1000 --setting 150:2000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
from bench_serving import bench_users  # this folder is on sys.path when run as a script

from recsys.artifact.versions import resolve_version
from recsys.inference.recommender import Recommender
from recsys.inference.request import RecommenderOptions

log = logging.getLogger("bench_served_recall")


def _setting(text: str) -> tuple[int, int]:
    leaves, _, reorder = text.partition(":")
    try:
        return int(leaves), int(reorder)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--setting takes LEAVES:REORDER, got {text!r}") from None


def measure(
    model: Recommender, users: list[str], k: int, exact_block: int = 256
) -> dict[str, float]:
    """Recall@k of ``model``'s served top k against exact search, and its mean index ms."""
    embeddings = np.asarray(model.embeddings, dtype=np.float32)
    queries, served, index_ms = [], [], []
    for user in users:
        result = model.recommend(None, user, k, exclude_watched=False)
        rows = result.rows
        vectors = embeddings[rows]
        q, *_ = np.linalg.lstsq(vectors.astype(np.float64), result.logits, rcond=None)
        error = float(np.max(np.abs(vectors @ q.astype(np.float32) - result.logits)))
        if error > 1e-3:
            raise RuntimeError(f"user {user!r}: the logits do not pin down q (error {error})")
        queries.append(q.astype(np.float32))
        served.append(rows)
        index_ms.append(result.timings.index_ms)
    recalls = []
    stacked = np.stack(queries)
    for start in range(0, len(users), exact_block):
        scores = stacked[start : start + exact_block] @ embeddings.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        for offset, exact in enumerate(top):
            found = np.intersect1d(served[start + offset], exact).size
            recalls.append(found / k)
    values = np.asarray(recalls)
    return {
        "recall": float(values.mean()),
        "recall_stderr": float(values.std(ddof=1) / np.sqrt(len(values))),
        "index_ms": float(np.mean(index_ms)),
    }


def main() -> int:
    """Measure each --setting and print a table (and write --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument(
        "--setting",
        type=_setting,
        action="append",
        default=[],
        metavar="LEAVES:REORDER",
        help="ScaNN leaves searched and reorder depth (repeatable; none: the index's defaults)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    version = resolve_version(args.artifacts / args.name)
    users = bench_users(version, args.users)  # the users bench_serving.py's requests name
    model = Recommender.load(version)
    config = model.index.config
    settings: list[tuple[int | None, int | None]] = list(args.setting) or [(None, None)]
    rows: list[dict[str, Any]] = []
    for leaves, reorder in settings:
        options = RecommenderOptions(leaves_to_search=leaves, reorder_k=reorder)
        served = model.with_options(options)
        served.recommend(None, users[0], args.k)  # warm
        figures = measure(served, users, args.k)
        row = {
            "leaves_to_search": leaves or config.num_leaves_to_search,
            "reorder_k": reorder or config.reorder_k,
            **figures,
        }
        log.info("%s", row)
        rows.append(row)
    print(
        f"Served top {args.k} vs exact search, {len(users)} users of {version} "
        f"(index: {config.num_leaves} leaves; C = {RecommenderOptions().num_candidates(args.k)} "
        "candidates re-scored)\n"
    )
    print("| leaves searched | reorder | recall@k (± s.e.) | index ms per request |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['leaves_to_search']} | {row['reorder_k']} | {row['recall']:.4f} "
            f"± {row['recall_stderr']:.4f} | {row['index_ms']:.3f} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"command": " ".join(sys.argv), "results": rows}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Recall through the gRPC service, on the evaluation's own held-out queries, as a client asks.

Reads the queries ``recsys evaluate`` scores (the artifact's examples, the same seeded
sample), and for each sends ``Recommend`` to a running server with the user's whole watch
history before that moment (ids and times), the user's demographics, ``request_time`` = the
held-out watch's time and the default ``exclude_watched``; reports recall@K of the true next
watch, to set beside ``recsys evaluate``'s served-index row under ``--exclude-watched yes``.

    recsys serve --artifacts A --name mlatt --port 0 --port-file /tmp/port &
    PYTHONPATH=build/typecheck .venv/bin/python benchmarks/bench_served_quality.py \
        --artifact A/mlatt --data /tmp/ml --target 127.0.0.1:$(cat /tmp/port)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import pandas as pd

from recsys.dataset.validation import read_dataset
from recsys.evaluation.artifact_model import ArtifactModel
from recsys.evaluation.evaluate import prepare_evaluation_examples, resolve_split
from recsys.examples.building import LABEL_TIME, read_examples
from recsys.features import contract as F
from recsys_serving.client import Context, RecommenderClient


def _context(users: pd.DataFrame, watches: pd.DataFrame, user: int, moment: int) -> Context:
    """User row ``user``'s watches strictly before ``moment`` and demographics."""
    mine = watches[(watches["user"] == user) & (watches["timestamp"] < moment)]
    row = users.iloc[user]

    def value(name: str) -> object:
        v = row[name]
        return None if pd.isna(v) else v

    age = value("age")
    return Context(
        watch_history=mine["item_id"].astype(str).tolist(),
        watch_times=mine["timestamp"].astype(int).tolist(),
        country=value("country"),  # type: ignore[arg-type]
        region=value("region"),  # type: ignore[arg-type]
        age=None if age is None else int(age),  # type: ignore[call-overload]
        gender=value("gender"),  # type: ignore[arg-type]
    )


def main() -> None:
    """Ask the server for every query; print recall@K and the time taken."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--max-queries", type=int, default=5000)
    p.add_argument("--ks", default="10,50,100")
    args = p.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    model = ArtifactModel(args.artifact)
    split, _ = resolve_split(model, args.data, None)
    # The artifact's own examples when its training folder has them, else built in a temp dir.
    work = Path(tempfile.mkdtemp(prefix="served-quality-"))
    examples = prepare_evaluation_examples(model, args.data, split, work, progress=False)
    queries = read_examples(examples, "eval", limit=args.max_queries, seed=model.config.train.seed)
    dataset = read_dataset(args.data, validate=False)
    ev = dataset.events[dataset.events["type"] == "watch"]
    watches = pd.DataFrame(
        {
            "user": pd.Index(dataset.users["user_id"]).get_indexer(ev["user_id"]),
            "timestamp": ev["timestamp"].to_numpy(np.int64),
            "item_id": ev["item_id"].to_numpy(),
        }
    ).sort_values(["user", "timestamp"], kind="stable")
    labels = dataset.items["item_id"].astype(str).to_numpy()[queries[F.ITEM_INDEX]]
    hits = np.zeros((len(labels), len(ks)))
    started = time.perf_counter()
    with RecommenderClient(args.target, timeout=10.0) as client:
        for i, (user, moment) in enumerate(
            zip(queries[F.USER_INDEX], queries[LABEL_TIME], strict=True)
        ):
            ctx = _context(dataset.users, watches, int(user), int(moment))
            reply = client.recommend(context=ctx, k=max(ks), request_time=int(moment))
            ranked = [item.item_id for item in reply.items]
            hits[i] = [labels[i] in ranked[:k] for k in ks]
    seconds = time.perf_counter() - started
    recalls = ", ".join(f"R@{k} {hits[:, j].mean():.4f}" for j, k in enumerate(ks))
    print(f"{len(labels)} queries through {args.target} in {seconds:.1f} s: {recalls}")


if __name__ == "__main__":
    main()

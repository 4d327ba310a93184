"""The query-tower stage of serving: one query with 50 watches, TensorFlow Lite, per tower.

Loads each artifact's query tower as serving does (``load_query_tower``, runtime ``tflite``:
the exported Lite copy, checked against the SavedModel) and times single calls of one
request's features (50 watches with times, 5 searches, demographics), interleaving the
towers round by round so that both see the same machine load. Prints p50 and p99 per round,
the median over rounds, and each tower's median p50 against the first artifact's.

    PYTHONPATH=build/typecheck .venv/bin/python benchmarks/bench_query_tower.py \
        --artifact artifacts/demo --artifact artifacts/demo-attention --rounds 7 --calls 2000
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np

from recsys.artifact.layout import QUERY_MODEL_DIR, TFLITE_FILE, VOCAB_FILE
from recsys.artifact.reader import open_version
from recsys.features.context import RequestContext, encode_request
from recsys.features.vocab import Vocabularies
from recsys.inference.query_tower import LiteTower, load_query_tower

REQUEST_TIME = 1_800_000_000


def _tower(artifact: Path) -> tuple[str, LiteTower, dict[str, np.ndarray]]:
    """An artifact's Lite query tower, its history encoder and one 50-watch request."""
    version = open_version(artifact)
    config = version.settings.config
    vocabs = Vocabularies.load(version.path / VOCAB_FILE)
    videos = vocabs.items.values[: config.features.max_history]
    ctx = RequestContext(
        watch_history=videos,
        watch_times=[REQUEST_TIME - 600 * (len(videos) - i) for i in range(len(videos))],
        searches=["guitar lesson", "evening news", "red guitar", "live", "news tonight"],
        search_times=[REQUEST_TIME - 900 * (5 - i) for i in range(5)],
        country="US",
        age=30,
        gender="f",
        request_time=REQUEST_TIME,
    )
    features = encode_request(ctx, vocabs, config.features)
    lite = load_query_tower(
        version.path / QUERY_MODEL_DIR,
        [features],
        "tflite",
        version.path / TFLITE_FILE,
    )
    assert isinstance(lite, LiteTower)
    label = f"{version.manifest.name}/{version.manifest.version} ({config.model.history_encoder})"
    return label, lite, features


def _round(tower: LiteTower, features: dict[str, np.ndarray], calls: int) -> tuple[float, float]:
    """p50 and p99 milliseconds of ``calls`` single calls."""
    times = np.empty(calls)
    for i in range(calls):
        started = time.perf_counter()
        tower(features)
        times[i] = time.perf_counter() - started
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def main() -> None:
    """Time every artifact's Lite tower, rounds interleaved; print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", type=Path, action="append", required=True)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=2000)
    args = p.parse_args()
    towers = [_tower(a) for a in args.artifact]
    for _, tower, features in towers:  # warm-up: allocation and first-call costs
        _round(tower, features, 200)
    p50s: dict[str, list[float]] = {label: [] for label, _, _ in towers}
    for r in range(args.rounds):
        for label, tower, features in towers:
            p50, p99 = _round(tower, features, args.calls)
            p50s[label].append(p50)
            print(f"round {r + 1}: {label}: p50 {p50:.4f} ms, p99 {p99:.4f} ms", flush=True)
    first = statistics.median(p50s[towers[0][0]])
    for label, values in p50s.items():
        median = statistics.median(values)
        print(
            f"{label}: median p50 {median:.4f} ms over {args.rounds} rounds of {args.calls} "
            f"calls ({median / first:.2f}x the first)"
        )


if __name__ == "__main__":
    main()

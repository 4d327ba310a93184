"""Benchmark: training throughput (examples/s), live input pipeline vs cached input.

In one process, on one example set (built or reused for the dataset and split):
  cached    the first N batches read into memory once, then fed from a cache: the step time
            of the model alone (the baseline);
  live      the same model fed by the real streaming pipeline (`make_dataset`).
If live/cached is close to 1, the input pipeline is not the bottleneck. Each measurement is
--repeats fits of --steps steps after a warm-up fit; the table gives medians. Usage:

    .venv/bin/python benchmarks/bench_training.py --data data/generated/demo \
        --config training/configs/demo.toml --steps 100 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from recsys.catalog import ItemTable
from recsys.config import load_config
from recsys.examples import VOCAB_FILE, load_catalog
from recsys.pipeline import make_dataset
from recsys.splits import Split
from recsys.vocab import Vocabularies
from recsys_training.job import prepare_examples


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--set", action="append", default=[], help="config override")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="examples cache folder (default: temp)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import tensorflow as tf

    from recsys.model import TwoTowerModel, make_optimizer
    from recsys.towers import VocabSizes

    config = load_config(args.config, args.set)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-training-"))
    examples_dir, example_set = prepare_examples(args.data, work, Split("time"), config, False)
    vocabs = Vocabularies.load(examples_dir / VOCAB_FILE)
    _, items_df, content = load_catalog(args.data)
    items = ItemTable.build(items_df, content, vocabs, config.features)
    sizes = VocabSizes.of(vocabs, items.content_dim)
    batch = config.train.batch_size
    tf.keras.utils.set_random_seed(config.train.seed)
    model = TwoTowerModel(config.model, sizes)
    model.compile(optimizer=make_optimizer(config.train))
    live = make_dataset(examples_dir, "train", items, batch, drop_remainder=True).repeat()
    cached = live.take(args.steps).cache().repeat()
    for _ in cached.take(args.steps):  # fill the cache outside the timed fits
        pass

    def fit_seconds(ds: tf.data.Dataset) -> float:
        started = time.perf_counter()
        model.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0)
        return time.perf_counter() - started

    fit_seconds(cached)  # warm-up: tracing and first-step costs
    results: dict[str, list[float]] = {"cached": [], "live": []}
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        results["cached"].append(fit_seconds(cached))
        results["live"].append(fit_seconds(live))
    med = {k: statistics.median(v) for k, v in results.items()}
    examples = args.steps * batch
    figures = {
        "data": str(args.data),
        "train_examples": example_set.counts["train"],
        "batch_size": batch,
        "steps": args.steps,
        "repeats": args.repeats,
        "cached_s": med["cached"],
        "live_s": med["live"],
        "cached_examples_per_s": examples / med["cached"],
        "live_examples_per_s": examples / med["live"],
        "cached_step_ms": 1000 * med["cached"] / args.steps,
        "live_step_ms": 1000 * med["live"] / args.steps,
        "live_over_cached": med["live"] / med["cached"],
        "runs": results,
        "model": config.to_dict()["model"],
    }
    print(f"{args.data}: batch {batch}, {args.steps} steps per fit, median of {args.repeats}")
    print(f"{'input':<24}{'step ms':>10}{'examples/s':>14}")
    for name, key in (("cached (baseline)", "cached"), ("live pipeline", "live")):
        step_ms, rate = figures[f"{key}_step_ms"], figures[f"{key}_examples_per_s"]
        print(f"{name:<24}{step_ms:>10.1f}{rate:>14,.0f}")
    print(f"live / cached step time: {figures['live_over_cached']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

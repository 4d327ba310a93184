"""Benchmark: training throughput (examples/s), live input pipeline vs cached input.

In one process, on one example set (built or reused for the dataset and split):
  cached     the first N batches read into memory once, then fed from a `tf.data` cache
             (prefetched): the step time of the model alone (the baseline);
  live       the same model fed by `make_dataset` as training calls it (the in-memory path
             when the examples fit `IN_MEMORY_MAX_BYTES`, streaming otherwise);
  streaming  (with --streaming) `make_dataset(in_memory=False)`: the path of big worlds.
If live/cached is close to 1, the input pipeline is not the bottleneck. Each input has one
iterator for the whole run (as one training fit over many epochs has), a warm-up of 5 steps,
then --repeats rounds of --steps training steps per input, interleaved (in a rotating order)
so that machine noise hits all alike; the table gives median step times and, per input, the
median over rounds of (its time / the cached time of the same round). After the rounds, each
live input reads a whole pass of batches --repeats times without the model: its own wall and
CPU time per batch (CPU of all threads, so it includes tf.data's workers). Usage:

    .venv/bin/python benchmarks/bench_training.py --data data/generated/demo \
        --config training/configs/demo.toml --steps 60 --repeats 7 --streaming
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from recsys.config import load_config
from recsys.dataset.splits import Split
from recsys.examples.building import VOCAB_FILE, load_catalog
from recsys.examples.cache import prepare_examples
from recsys.examples.pipeline import IN_MEMORY_MAX_BYTES, example_bytes, make_dataset
from recsys.features.tables import ItemTable
from recsys.features.vocab import Vocabularies


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
    parser.add_argument(
        "--streaming", action="store_true", help="also time the streaming path (big worlds)"
    )
    args = parser.parse_args(argv)

    import tensorflow as tf

    from recsys.model.towers import VocabSizes
    from recsys.model.two_tower import TwoTowerModel, make_optimizer

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
    # The baseline prefetches too, so that reading its cache is off the step's critical path.
    cached = live.take(args.steps).cache().repeat().prefetch(tf.data.AUTOTUNE)
    inputs = {"cached": cached, "live": live}
    if args.streaming:
        streaming = make_dataset(
            examples_dir, "train", items, batch, drop_remainder=True, in_memory=False
        )
        inputs["streaming"] = streaming.repeat()
    for _ in inputs["cached"].take(args.steps):  # fill the cache outside the timed steps
        pass

    # One long-lived iterator per input, as in training (one fit over many epochs): per-pass
    # costs (a new permutation, the first shuffle buffer) are paid once per epoch, not once
    # per timed round. Steps run through Keras' own train function, as `fit` runs them.
    train_function = model.make_train_function()
    iterators = {name: iter(ds) for name, ds in inputs.items()}

    def train_seconds(name: str, steps: int) -> float:
        started = time.perf_counter()
        for _ in range(steps):
            logs = train_function(iterators[name])
        float(logs["loss"])  # the last step is done
        return time.perf_counter() - started

    def read_seconds(name: str, steps: int) -> tuple[float, float]:
        """Wall and CPU (all threads) seconds to read ``steps`` batches without the model."""
        wall, cpu = time.perf_counter(), cpu_seconds()
        for _ in range(steps):
            next(iterators[name])
        return time.perf_counter() - wall, cpu_seconds() - cpu

    # Reading alone covers a whole pass, so that per-pass costs (the permutation, every
    # shuffle buffer's read and join) are in it, not hidden by batches prefetched earlier.
    alone_steps = max(args.steps, example_set.counts["train"] // batch)
    for name in inputs:  # warm-up: tracing, first-iterator and first-read costs
        train_seconds(name, 5)
    results: dict[str, list[float]] = {name: [] for name in inputs}
    alone: dict[str, list[tuple[float, float]]] = {name: [] for name in inputs if name != "cached"}
    names = list(inputs)
    for r in range(args.repeats):  # the order rotates, so that no input always goes first
        for name in names[r % len(names) :] + names[: r % len(names)]:
            results[name].append(train_seconds(name, args.steps))
    # After the training rounds: refilling the prefetch buffers that a read alone drained
    # would otherwise steal CPU from the next round's other inputs.
    for _ in range(args.repeats):
        for name, runs in alone.items():
            runs.append(read_seconds(name, alone_steps))
    med = {k: statistics.median(v) for k, v in results.items()}
    ratio = {
        k: statistics.median(x / c for x, c in zip(v, results["cached"], strict=True))
        for k, v in results.items()
    }
    examples = args.steps * batch
    figures: dict[str, object] = {
        "data": str(args.data),
        "train_examples": example_set.counts["train"],
        "in_memory_bytes": example_bytes(examples_dir, "train", items),
        "in_memory_max_bytes": IN_MEMORY_MAX_BYTES,
        "batch_size": batch,
        "steps": args.steps,
        "alone_steps": alone_steps,
        "repeats": args.repeats,
        "runs": results,
        "model": config.to_dict()["model"],
    }
    for name in inputs:
        figures[f"{name}_s"] = med[name]
        figures[f"{name}_examples_per_s"] = examples / med[name]
        figures[f"{name}_step_ms"] = 1000 * med[name] / args.steps
        figures[f"{name}_over_cached"] = ratio[name]
    for name, runs in alone.items():
        figures[f"{name}_alone_ms_per_batch"] = (
            1000 * statistics.median(w for w, _ in runs) / alone_steps
        )
        figures[f"{name}_alone_cpu_ms_per_batch"] = (
            1000 * statistics.median(c for _, c in runs) / alone_steps
        )
    print(f"{args.data}: batch {batch}, {args.steps} steps per round, median of {args.repeats}")
    print(f"{'input':<24}{'step ms':>10}{'examples/s':>14}{'/ cached':>10}")
    labels = {"cached": "cached (baseline)", "live": "live pipeline", "streaming": "streaming"}
    for name in inputs:
        step_ms, rate = figures[f"{name}_step_ms"], figures[f"{name}_examples_per_s"]
        print(f"{labels[name]:<24}{step_ms:>10.1f}{rate:>14,.0f}{ratio[name]:>10.2f}")
    for name in alone:
        wall, cpu = figures[f"{name}_alone_ms_per_batch"], figures[f"{name}_alone_cpu_ms_per_batch"]
        print(f"{labels[name]} alone (no model): {wall:.1f} ms/batch, {cpu:.1f} ms CPU/batch")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

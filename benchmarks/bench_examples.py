"""Benchmark: canonical dataset -> next-watch examples -> shuffled batches (examples/s).

Measures, in one process on one dataset (the bench world by default):
  baseline  scanning events.parquet's columns with pyarrow (the floor any pipeline pays);
  build     `build_examples` (partitioning, vocabularies, contexts, shards);
  batches   one pass of `example_batches` (shuffled, candidate features joined);
  tf.data   one pass of `make_dataset` (the same through tf.data, what training consumes).
Each timed step runs --repeats times; the table gives medians, the ratio to the baseline, and
peak RSS. Usage:

    .venv/bin/python benchmarks/bench_examples.py --data data/generated/bench --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from recsys.dataset.splits import Split
from recsys.examples.building import VOCAB_FILE, ExampleSet, build_examples, load_catalog
from recsys.examples.pipeline import example_batches, make_dataset
from recsys.features.contract import FeatureConfig
from recsys.features.tables import ItemTable
from recsys.features.vocab import Vocabularies


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    """Median seconds of ``fn`` over ``repeats`` runs, and the count it returned."""
    times, count = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        count = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), count


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="canonical dataset folder")
    parser.add_argument("--split", choices=["time", "last"], default="time")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="where to write examples (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-examples-"))
    out = work / "examples"
    config = FeatureConfig()
    events_rows = pq.read_metadata(args.data / "events.parquet").num_rows

    def scan() -> int:
        tbl = pq.read_table(
            args.data / "events.parquet",
            columns=["user_id", "timestamp", "type", "item_id", "query"],
        )
        return tbl.num_rows

    def build() -> int:
        if out.exists():
            shutil.rmtree(out)
        return build_examples(args.data, out, Split(args.split), config).counts["train"]

    scan_s, _ = timed(scan, args.repeats)
    build_s, n_train = timed(build, args.repeats)
    _, items_df, emb = load_catalog(args.data)
    items = ItemTable.build(items_df, emb, Vocabularies.load(out / VOCAB_FILE), config)

    def batches() -> int:
        return sum(
            len(b["item_index"]) for b in example_batches(out, "train", items, args.batch_size)
        )

    def tf_batches() -> int:
        ds = make_dataset(out, "train", items, args.batch_size)
        return sum(int(b["item_index"].shape[0]) for b in ds)

    batch_s, n_batched = timed(batches, args.repeats)
    tf_s, n_tf = timed(tf_batches, args.repeats)
    meta = ExampleSet.load(out)
    figures = {
        "data": str(args.data),
        "events": events_rows,
        "train_examples": n_train,
        "eval_examples": meta.counts["eval"],
        "repeats": args.repeats,
        "scan_events_s": scan_s,
        "scan_events_per_s": events_rows / scan_s,
        "build_s": build_s,
        "build_examples_per_s": n_train / build_s,
        "batches_s": batch_s,
        "batches_examples_per_s": n_batched / batch_s,
        "tf_data_s": tf_s,
        "tf_data_examples_per_s": n_tf / tf_s,
        "end_to_end_examples_per_s": n_train / (build_s + tf_s),
        "peak_rss_mib": peak_rss_mib(),
    }
    rows = [
        ("baseline: scan events (pyarrow)", scan_s, events_rows, "events"),
        ("build examples", build_s, n_train, "examples"),
        ("batches (numpy, shuffled)", batch_s, n_batched, "examples"),
        ("batches through tf.data", tf_s, n_tf, "examples"),
        ("end to end: build + tf.data", build_s + tf_s, n_train, "examples"),
    ]
    print(f"dataset {args.data}: {events_rows:,} events -> {n_train:,} train examples")
    print(f"median of {args.repeats} runs per step")
    print(f"{'step':<34}{'seconds':>9}{'rows/s':>14}  unit      x baseline time")
    for name, secs, count, unit in rows:
        print(f"{name:<34}{secs:>9.2f}{count / secs:>14,.0f}  {unit:<9} {secs / scan_s:>6.1f}")
    print(f"peak RSS {figures['peak_rss_mib']:,.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

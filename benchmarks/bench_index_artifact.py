"""Benchmark fresh uploads: `add_items` of 1, 100 and 1000 videos against a full index rebuild.

One run, one artifact: a model trained on the tiny synthetic world (or `--artifact`), its
catalog enlarged to `--items` videos whose embeddings are noisy copies of the model's real
item embeddings (clustered like them), indexed with ScaNN. Each `add_items` derives a new
version from that same indexed version; it is timed from the call to the new version on
disk, then to the new video found by a search of a freshly loaded index ("searchable"). The
baseline is `build_artifact_index` of the same artifact (a full ScaNN rebuild plus the same
version write). Median of `--repeats` runs each.

    .venv/bin/python benchmarks/bench_index_artifact.py --items 1000000 --repeats 3 \
        --json reports/bench_index_artifact.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.artifact.versions import read_manifest, resolve_version, set_latest, write_version
from recsys.index.base import IndexConfig
from recsys.indexing.derived_versions import load_artifact_index
from recsys.indexing.operations import add_items, build_artifact_index

logger = logging.getLogger("bench_index_artifact")

ADD_SIZES = (1, 100, 1000)
_NOISE = 0.5  # noise norm relative to the real embedding a synthetic one copies


def train_tiny(workdir: Path) -> tuple[Path, Path]:
    """Generate the tiny world and train the tiny test model on it: (version dir, world dir)."""
    from recsys.config import load_config
    from recsys_data.synth import generate_world
    from recsys_data.world import world_config
    from recsys_training.job import train

    world = workdir / "tiny-world"
    generate_world(world_config("tiny", seed=0), world)
    overrides = [
        "train.batch_size=256",
        "train.epochs=2",
        "model.query_layers=[64, 32]",
        "model.candidate_layers=[64, 32]",
        "model.item_embedding_dim=32",
    ]
    result = train(world, workdir / "artifacts", name="bench", config=load_config(None, overrides))
    assert result.version_dir is not None
    return result.version_dir, world


def enlarge(version: Path, num_items: int, seed: int) -> Path:
    """Derive a version with `num_items` videos: real ones plus noisy copies, no index."""
    rng = np.random.default_rng(seed)
    items = pq.read_table(version / "items.parquet")
    real = np.load(version / "item_embeddings.npy", allow_pickle=False)
    extra = num_items - len(real)
    source = rng.integers(0, len(real), extra)
    noise = rng.standard_normal((extra, real.shape[1])).astype(np.float32)
    copies = real[source] + noise * (_NOISE / np.sqrt(real.shape[1]))
    copies = (copies / np.linalg.norm(copies, axis=1, keepdims=True)).astype(np.float32)
    copied_items = items.take(pa.array(source))
    ids = pa.array([f"syn{i:08d}" for i in range(extra)], copied_items.schema.field(0).type)
    copied_items = copied_items.set_column(0, copied_items.schema.field(0), ids)
    manifest = read_manifest(version)
    manifest.parent = manifest.version
    manifest.index = {}
    model_dir = version.parent
    with write_version(model_dir.parent, model_dir.name, manifest, base=version) as folder:
        shutil.rmtree(folder / "index")
        pq.write_table(pa.concat_tables([items, copied_items]), folder / "items.parquet")
        np.save(folder / "item_embeddings.npy", np.concatenate([real, copies]), allow_pickle=False)
    return model_dir / manifest.version


def new_videos_file(world: Path, count: int, tag: str, out: Path) -> Path:
    """`count` canonical items rows copied from the world with new ids, as a Parquet file."""
    table = pq.read_table(world / "items.parquet")
    rows = np.arange(count) % table.num_rows
    fresh = table.take(pa.array(rows))
    ids = pa.array([f"new-{tag}-{i:05d}" for i in range(count)], pa.string())
    fresh = fresh.set_column(0, "item_id", ids)
    path = out / f"new-{tag}.parquet"
    pq.write_table(fresh, path)
    return path


def _discard(version: Path, base: Path) -> None:
    """Delete a derived version and point LATEST back at `base` (keeps the disk small)."""
    shutil.rmtree(version)
    set_latest(base.parent, base.name)


def time_add(base: Path, items_file: Path, first_id: str) -> dict[str, float]:
    """Seconds from `add_items` to the new version, and to a loaded index finding the video."""
    started = time.perf_counter()
    version = add_items(base, items_file)
    written = time.perf_counter() - started
    index = load_artifact_index(version)
    embeddings = np.load(version / "item_embeddings.npy", mmap_mode="r", allow_pickle=False)
    row = len(embeddings) - pq.read_metadata(items_file).num_rows
    found = first_id in index.search(np.asarray(embeddings[row]), 10).ids.tolist()
    searchable = time.perf_counter() - started
    if not found:
        raise RuntimeError(f"{first_id} not found after add_items into {version}")
    _discard(version, base)
    return {"to_new_version_s": written, "to_searchable_s": searchable}


def time_rebuild(base: Path, config: IndexConfig) -> dict[str, float]:
    """Seconds of `build_artifact_index` (full ScaNN rebuild) and to a loaded, searched index."""
    started = time.perf_counter()
    version = build_artifact_index(base, config)
    written = time.perf_counter() - started
    index = load_artifact_index(version)
    index.search(np.load(version / "item_embeddings.npy", mmap_mode="r")[0].copy(), 10)
    searchable = time.perf_counter() - started
    build_s = float(read_manifest(version).index["build_seconds"])
    _discard(version, base)
    return {"to_new_version_s": written, "to_searchable_s": searchable, "scann_build_s": build_s}


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Set up the artifact, then time the adds and the rebuild baseline."""
    if args.artifact is None:
        trained, world = train_tiny(workdir)
    else:
        if args.world is None:
            raise SystemExit("--artifact needs --world (the dataset whose items to copy)")
        model = workdir / "artifacts" / "bench"
        source = resolve_version(args.artifact)
        shutil.copytree(source.parent, model, ignore=shutil.ignore_patterns(".work"))
        trained, world = model / source.name, args.world
    big = enlarge(trained, args.items, args.seed)
    config = IndexConfig(kind="scann")
    indexed = build_artifact_index(big, config)
    figures: dict[str, Any] = {
        "items": args.items,
        "dim": int(np.load(indexed / "item_embeddings.npy", mmap_mode="r").shape[1]),
        "index": read_manifest(indexed).index,
        "artifact_mb": sum(p.stat().st_size for p in indexed.rglob("*") if p.is_file()) / 2**20,
        "repeats": args.repeats,
    }
    rebuilds = [time_rebuild(indexed, config) for _ in range(args.repeats)]
    figures["rebuild"] = _median(rebuilds)
    figures["add"] = {}
    for count in ADD_SIZES:
        runs = []
        for repeat in range(args.repeats):
            tag = f"{count}-{repeat}"
            path = new_videos_file(world, count, tag, workdir)
            runs.append(time_add(indexed, path, f"new-{tag}-00000"))
        figures["add"][count] = _median(runs)
    return figures


def report(figures: dict[str, Any]) -> str:
    """A Markdown table of the figures."""
    rebuild = figures["rebuild"]
    lines = [
        f"{figures['items']:,} videos x {figures['dim']} dims, ScaNN "
        f"({figures['index']['num_leaves']} leaves), artifact {figures['artifact_mb']:.0f} MB; "
        f"median of {figures['repeats']}; {figures['host']}",
        "",
        "| operation | call -> new version (s) | call -> searchable (s) |",
        "|---|---:|---:|",
        f"| full rebuild (ScaNN build {rebuild['scann_build_s']:.1f} s) | "
        f"{rebuild['to_new_version_s']:.2f} | {rebuild['to_searchable_s']:.2f} |",
    ]
    for count, values in figures["add"].items():
        lines.append(
            f"| add_items of {count} new video(s) | {values['to_new_version_s']:.2f} | "
            f"{values['to_searchable_s']:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200_000, help="catalog size (videos)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic catalog")
    parser.add_argument("--artifact", type=Path, help="a trained artifact (default: train tiny)")
    parser.add_argument("--world", type=Path, help="with --artifact: its canonical dataset")
    parser.add_argument("--workdir", type=Path, help="keep the artifacts here (default: temp)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a Markdown table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-index-artifact-"))
    try:
        figures = run(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    figures["host"] = (
        f"{platform.node()}, {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d}"
    )
    print(report(figures))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

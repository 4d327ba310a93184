"""The ``recsys`` command line: a thin layer over typed library functions.

Heavy modules (TensorFlow, ScaNN) are imported inside the command that needs them, so
``recsys --help`` and data generation start fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from recsys import __version__
from recsys.logs import Progress, setup_logging, step

log = logging.getLogger("recsys.cli")

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A command-line input the user can fix."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc
    if not ks or any(k <= 0 for k in ks):
        raise argparse.ArgumentTypeError(f"every K must be positive, got {text!r}")
    return ks


# ---------------------------------------------------------------- data


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from recsys_data.synth import generate_world, world_config

    config = world_config(
        args.preset, seed=args.seed, users=args.users, items=args.items, days=args.days
    )
    with step(f"generating the {args.preset} world (seed {args.seed}) into {args.out}"):
        meta = generate_world(
            config, args.out, overwrite=args.overwrite, progress=Progress("simulating", "days")
        )
    print(json.dumps({"out": str(args.out), "counts": meta.counts}, indent=2))
    return 0


def _cmd_data_import(args: argparse.Namespace) -> int:
    from recsys_data.movielens import import_movielens

    with step(f"importing MovieLens from {args.source} into {args.out}"):
        meta = import_movielens(
            args.source, args.out, overwrite=args.overwrite, progress=Progress("importing", "B")
        )
    print(json.dumps({"out": str(args.out), "name": meta.name, "counts": meta.counts}, indent=2))
    return 0


def _cmd_data_validate(args: argparse.Namespace) -> int:
    from recsys.validation import validate_dataset

    report = validate_dataset(args.dir)
    if report.ok:
        print(f"{args.dir}: valid ({', '.join(f'{v} {k}' for k, v in report.counts.items())})")
        return 0
    print(
        f"{args.dir}: INVALID, {len(report.problems)} problems (rows count from 0):",
        file=sys.stderr,
    )
    for problem in report.problems:
        print(f"  - {problem}", file=sys.stderr)
    return 1


def _cmd_data_oracle(args: argparse.Namespace) -> int:
    from recsys.splits import Split
    from recsys_data.oracle import oracle_recall

    split = Split(args.split, cutoff=args.cutoff)
    with step(f"oracle Recall@K on {args.data} ({args.split} split)"):
        result = oracle_recall(
            args.data, split, ks=args.k, max_events=args.max_events, seed=args.seed
        )
    print(f"held-out watches scored: {result.num_events}")
    print(f"{'K':>6} {'oracle':>8} {'most-popular':>13}")
    for k in args.k:
        print(f"{k:>6} {result.recall[k]:>8.3f} {result.popularity_recall[k]:>13.3f}")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="create, import and validate canonical datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    p = dsub.add_parser("synth", help="generate the synthetic YouTube-like world")
    p.add_argument(
        "--preset",
        choices=["tiny", "demo", "bench"],
        default="demo",
        help="size preset (default demo)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed; same seed, same files (default 0)"
    )
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--users", type=_positive_int, help="override the preset's number of users")
    p.add_argument("--items", type=_positive_int, help="override the preset's number of videos")
    p.add_argument("--days", type=_positive_int, help="override the preset's number of days")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(handler=_cmd_data_synth)

    p = dsub.add_parser("import", help="import a public dataset into the canonical format")
    p.add_argument("kind", choices=["movielens"], help="dataset family")
    p.add_argument(
        "--source",
        type=Path,
        required=True,
        help="folder with the original files (100K, 1M or 20M/25M/32M layout)",
    )
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(handler=_cmd_data_import)

    p = dsub.add_parser(
        "validate", help="check a dataset folder; lists every problem with file, column and rows"
    )
    p.add_argument("dir", type=Path, help="dataset folder")
    p.set_defaults(handler=_cmd_data_validate)

    p = dsub.add_parser(
        "oracle", help="Recall@K of the synthetic world's true probabilities: the ceiling"
    )
    p.add_argument("--data", type=Path, required=True, help="a synthetic dataset folder")
    p.add_argument(
        "--split", choices=["time", "last"], default="time", help="evaluation split (default time)"
    )
    p.add_argument(
        "--cutoff",
        type=int,
        help="time split cut-off, Unix seconds (default: last 10%% of the period)",
    )
    p.add_argument(
        "--k", type=_ks, default=(10, 50, 100), help="comma-separated K values (default 10,50,100)"
    )
    p.add_argument(
        "--max-events",
        type=_positive_int,
        default=2000,
        help="held-out watches to score (default 2000)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(handler=_cmd_data_oracle)


# ---------------------------------------------------------------- train


def _cmd_train(args: argparse.Namespace) -> int:
    from recsys.config import load_config
    from recsys.splits import Split
    from recsys_training.job import train

    config = load_config(args.config, args.set)
    result = train(
        args.data,
        args.artifacts,
        name=args.name,
        config=config,
        split=Split(args.split, cutoff=args.cutoff),
        epochs=args.epochs,
        work_dir=args.work_dir,
        max_eval_queries=args.max_eval_queries,
        build_index=not args.no_index,
    )
    if result.version_dir is not None:
        recall = ", ".join(f"@{k} {v:.4f}" for k, v in result.metrics["recall"].items())
        print(f"artifact: {result.version_dir}")
        print(
            f"validation recall ({result.metrics['eval_queries']} queries, exact search): {recall}"
        )
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the two towers and export a versioned artifact",
        description="Train the query and candidate towers (TFRS, in-batch softmax with logQ "
        "correction) on a canonical dataset and export artifacts/<name>/<version>. The "
        "distribution strategy is chosen automatically (TF_CONFIG: MultiWorkerMirrored; "
        "several GPUs: Mirrored; else one device). A killed run started again with the same "
        "arguments resumes from its last epoch checkpoint.",
    )
    p.add_argument("--data", type=Path, required=True, help="canonical dataset folder")
    p.add_argument("--artifacts", type=Path, required=True, help="artifacts root folder")
    p.add_argument("--name", default="default", help="model name (default 'default')")
    p.add_argument("--config", type=Path, help="TOML config file (see training/configs/)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set train.batch_size=512 (repeatable)",
    )
    p.add_argument("--split", choices=["time", "last"], default="time", help="default time")
    p.add_argument(
        "--cutoff", type=int, help="time split cut-off, Unix seconds (default: last 10%%)"
    )
    p.add_argument("--epochs", type=_positive_int, help="override train.epochs")
    p.add_argument(
        "--work-dir",
        type=Path,
        help="examples, checkpoints, TensorBoard logs (default artifacts/<name>/.work)",
    )
    p.add_argument(
        "--max-eval-queries",
        type=_positive_int,
        default=5000,
        help="validation sample size (default 5000)",
    )
    p.add_argument(
        "--no-index", action="store_true", help="export without building the candidate index"
    )
    p.set_defaults(handler=_cmd_train)


# ---------------------------------------------------------------- index


def _print_index(version: Path) -> None:
    from recsys.index_ops import describe_index

    print(json.dumps(describe_index(version), indent=2))


def _cmd_index_build(args: argparse.Namespace) -> int:
    from recsys.index import IndexConfig
    from recsys.index_ops import build_artifact_index

    config = IndexConfig(
        kind=args.kind,
        num_leaves=args.num_leaves,
        num_leaves_to_search=args.leaves_to_search,
        reorder_k=args.reorder_k,
    )
    with step(f"building the {args.kind} index of {args.artifact}"):
        version = build_artifact_index(args.artifact, config)
    _print_index(version)
    return 0


def _cmd_index_tune(args: argparse.Namespace) -> int:
    from recsys.index_ops import tune_artifact_index

    with step(f"tuning the index of {args.artifact} to recall@{args.k} >= {args.target_recall}"):
        version, _ = tune_artifact_index(
            args.artifact,
            k=args.k,
            target_recall=args.target_recall,
            num_queries=args.num_queries,
            seed=args.seed,
            query_noise=args.query_noise,
        )
    _print_index(version)
    return 0


def _cmd_index_add(args: argparse.Namespace) -> int:
    from recsys.index_ops import add_items

    with step(f"adding the videos of {args.items} to {args.artifact}"):
        version = add_items(
            args.artifact,
            args.items,
            batch_size=args.batch_size,
            progress=Progress("embedding new videos", "videos"),
        )
    _print_index(version)
    return 0


def _cmd_index_remove(args: argparse.Namespace) -> int:
    from recsys.index_ops import read_id_file, remove_items

    ids = [*args.item_ids, *(read_id_file(args.ids_file) if args.ids_file else [])]
    with step(f"removing {len(ids)} videos from {args.artifact}"):
        version = remove_items(args.artifact, ids)
    _print_index(version)
    return 0


def _add_index(sub: argparse._SubParsersAction) -> None:
    index = sub.add_parser(
        "index",
        help="build, tune, add to and remove from an artifact's candidate index",
        description="Each command reads an artifact version (checked against its manifest's "
        "sha256s), writes a new version derived from it (manifest 'parent' names the old one) "
        "and points LATEST at it; the old version is never changed.",
    )
    isub = index.add_subparsers(dest="index_command", required=True, metavar="COMMAND")
    artifact_help = "artifact model folder (uses its LATEST version) or a version folder"

    p = isub.add_parser("build", help="(re)build the index from the artifact's item embeddings")
    p.add_argument("--artifact", type=Path, required=True, help=artifact_help)
    p.add_argument(
        "--kind",
        choices=["auto", "exact", "scann"],
        default="auto",
        help="index kind; auto: exact below 20000 items, else ScaNN (default auto)",
    )
    p.add_argument(
        "--num-leaves",
        type=_positive_int,
        help="ScaNN tree partitions (default about sqrt(items), at most 2000)",
    )
    p.add_argument(
        "--leaves-to-search",
        type=_positive_int,
        help="ScaNN partitions searched per query (default 5%% of the leaves)",
    )
    p.add_argument(
        "--reorder-k",
        type=_positive_int,
        help="ScaNN candidates rescored exactly per query (default 250)",
    )
    p.set_defaults(handler=_cmd_index_build)

    p = isub.add_parser(
        "tune",
        help="pick the fastest ScaNN search setting meeting a recall target",
        description="Sweep leaves searched and reorder depth against exact search on "
        "held-out query proxies (catalog item embeddings plus Gaussian noise, renormalised), "
        "keep the fastest setting whose recall@K meets the target, save it as the index's "
        "defaults and record it, the measured recall and latency in the manifest. An exact "
        "index has nothing to tune (error, nothing written).",
    )
    p.add_argument("--artifact", type=Path, required=True, help=artifact_help)
    p.add_argument(
        "--k", type=_positive_int, default=100, help="recall@K is measured at this K (default 100)"
    )
    p.add_argument(
        "--target-recall",
        type=float,
        default=0.95,
        help="recall@K to reach, in (0, 1] (default 0.95)",
    )
    p.add_argument(
        "--num-queries",
        type=_positive_int,
        default=1000,
        help="held-out query proxies to measure recall on (default 1000)",
    )
    p.add_argument(
        "--query-noise",
        type=float,
        default=0.75,
        help="noise norm relative to a proxy's item embedding (default 0.75: cosine ~0.8)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(handler=_cmd_index_tune)

    p = isub.add_parser(
        "add",
        help="embed new videos with the candidate tower and insert them without a rebuild",
        description="Read a Parquet file of canonical items rows (item_id, channel, category, "
        "title, upload_time, duration, and content_embedding when the model uses content), "
        "check it, embed the videos with the artifact's candidate SavedModel and insert them "
        "into the index without a rebuild. An id already in the artifact is replaced.",
    )
    p.add_argument("--artifact", type=Path, required=True, help=artifact_help)
    p.add_argument("--items", type=Path, required=True, help="Parquet file of the new videos")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=1024,
        help="videos embedded per candidate-model call (default 1024)",
    )
    p.set_defaults(handler=_cmd_index_add)

    p = isub.add_parser(
        "remove",
        help="remove videos from the index, items and embeddings",
        description="Remove videos by id (tombstones in a ScaNN index, no rebuild). An id "
        "not in the artifact is an error and nothing is written.",
    )
    p.add_argument("--artifact", type=Path, required=True, help=artifact_help)
    p.add_argument("item_ids", nargs="*", metavar="ITEM_ID", help="ids of the videos to remove")
    p.add_argument(
        "--ids-file",
        type=Path,
        help="text file of ids to remove, one a line ('#' comments and blank lines skipped)",
    )
    p.set_defaults(handler=_cmd_index_remove)


# ---------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    """The full ``recsys`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="recsys",
        description="YouTube-style two-tower recommender: data, training, index, evaluation, "
        "serving.",
    )
    parser.add_argument("--version", action="version", version=f"recsys {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (DEBUG)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data(sub)
    _add_train(sub)
    _add_index(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``recsys`` command line; returns the process exit code."""
    from recsys.artifacts import ArtifactError
    from recsys.dataset import DatasetError

    args = build_parser().parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (DatasetError, ArtifactError, UsageError, ValueError, FileNotFoundError) as exc:
        if args.verbose:
            raise
        print(f"recsys: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recsys: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

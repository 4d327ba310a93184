"""``recsys train``: train the two towers and export a versioned artifact."""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys.cli.common import UsageError, positive_int
from recsys.cli.examples import add_runner_arguments, check_runner_arguments


def _cmd_train(args: argparse.Namespace) -> int:
    check_runner_arguments(args)
    if args.examples and args.runner:
        raise UsageError("--examples trains on examples already built: drop --runner")
    # numpy, pandas and TensorFlow load with the command that runs, not with `recsys --help`.
    from recsys.config import load_config
    from recsys.dataset.splits import Split
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
        index_kind=args.index_kind,
        runner=args.runner,
        beam_args=args.beam_arg,
        examples=args.examples,
    )
    if result.version_dir is not None:
        recall = ", ".join(f"@{k} {v:.4f}" for k, v in result.metrics["recall"].items())
        print(f"artifact: {result.version_dir}")
        print(
            f"validation recall ({result.metrics['eval_queries']} queries, exact search): {recall}"
        )
    return 0


def add_train(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` command(s) to the ``recsys`` parser."""
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
    p.add_argument("--epochs", type=positive_int, help="override train.epochs")
    p.add_argument(
        "--work-dir",
        type=Path,
        help="examples, checkpoints, TensorBoard logs (default artifacts/<name>/.work)",
    )
    p.add_argument(
        "--max-eval-queries",
        type=positive_int,
        default=5000,
        help="validation sample size (default 5000)",
    )
    p.add_argument(
        "--no-index", action="store_true", help="export without building the candidate index"
    )
    p.add_argument(
        "--index-kind",
        choices=["auto", "exact", "scann"],
        default="auto",
        help="the exported index; auto: exact below 20000 videos, else ScaNN; a ScaNN index "
        "is tuned on the held-out queries (default auto)",
    )
    add_runner_arguments(p)
    p.add_argument(
        "--examples",
        metavar="DIR_OR_URI",
        help="train on this examples folder (e.g. gs://B/examples written by `recsys examples "
        "build --runner DataflowRunner`), read where it is; it must come from --data with "
        "this split and config",
    )
    p.set_defaults(handler=_cmd_train)

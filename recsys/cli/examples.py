"""``recsys examples``: build next-watch example shards, locally or as an Apache Beam pipeline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recsys.cli.common import UsageError, positive_int

RUNNER_HELP = (
    "build the examples as an Apache Beam pipeline on this runner: 'local' (Beam's in-process "
    "runner), or a Beam runner name (DataflowRunner, FlinkRunner, SparkRunner, ...) with its "
    "options given by --beam-arg. Without --runner the local builder runs (no Beam; faster "
    "on one machine); both write the same shards"
)
BEAM_ARG_HELP = (
    "a Beam pipeline option passed through, written with '=' (repeatable), e.g. "
    "--beam-arg=--project=P --beam-arg=--region=R --beam-arg=--temp_location=gs://B/tmp "
    "--beam-arg=--setup_file=./setup.py, or --beam-arg=--direct_num_workers=2 for 'local'"
)


def add_runner_arguments(p: argparse.ArgumentParser) -> None:
    """``--runner`` and ``--beam-arg``: shared by ``examples build`` and ``train``."""
    p.add_argument("--runner", metavar="RUNNER", help=RUNNER_HELP)
    p.add_argument(
        "--beam-arg", action="append", default=[], metavar="--OPTION=VALUE", help=BEAM_ARG_HELP
    )


def check_runner_arguments(args: argparse.Namespace) -> None:
    """Refuse Beam options without a Beam runner (they would be silently ignored)."""
    if args.beam_arg and args.runner is None:
        raise UsageError("--beam-arg needs --runner (Beam options only apply to a Beam runner)")


def _cmd_examples_build(args: argparse.Namespace) -> int:
    # numpy, pandas (and Apache Beam, with --runner) load with the command that runs.
    from dataclasses import asdict

    from recsys.config import load_config
    from recsys.dataset.splits import Split
    from recsys.logs import Progress, step

    check_runner_arguments(args)
    config = load_config(args.config, args.set)
    split = Split(args.split, cutoff=args.cutoff)
    is_remote = "://" in args.out or "://" in args.data
    if args.runner is None:
        if is_remote:
            raise UsageError(
                f"{args.data} -> {args.out}: the local builder reads and writes local folders; "
                "use --runner for other filesystems"
            )
        from recsys.examples.building import build_examples

        with step(f"building {split.name}-split examples from {args.data} into {args.out}"):
            result = build_examples(
                Path(args.data),
                Path(args.out),
                split,
                config.features,
                seed=config.train.seed,
                partitions=args.partitions,
                progress=Progress("building examples", "partitions"),
            )
    else:
        # Apache Beam takes seconds to import: only for this path.
        from recsys.examples.beam_building import build_examples_beam

        with step(f"building {split.name}-split examples on Beam ({args.runner})"):
            result = build_examples_beam(
                args.data,
                args.out,
                split,
                config.features,
                seed=config.train.seed,
                partitions=args.partitions,
                runner=args.runner,
                beam_args=args.beam_arg,
            )
    summary = {k: v for k, v in asdict(result).items() if k not in ("feature_config",)}
    print(json.dumps({"out": args.out, **summary}, indent=2))
    return 0


def add_examples(sub: argparse._SubParsersAction) -> None:
    """Add the ``examples`` command family to the ``recsys`` parser."""
    p = sub.add_parser(
        "examples",
        help="build next-watch training examples (locally or on Apache Beam)",
        description="Next-watch training and evaluation examples as Parquet shards, with "
        "their vocabularies and examples.json. `recsys train` builds them itself when "
        "needed; this command builds them on their own, e.g. on a Beam cluster.",
    )
    esub = p.add_subparsers(dest="examples_command", required=True, metavar="SUBCOMMAND")
    b = esub.add_parser(
        "build",
        help="build example shards from a canonical dataset",
        description="Build the example shards of a canonical dataset: users hashed into "
        "partitions, vocabularies from training events only, one example per watch with "
        "its context from strictly earlier events. The local builder and the Beam pipeline "
        "(--runner) write identical shards. With --runner, DATA and OUT may be any path Beam's "
        "filesystems open (gs://, s3://, hdfs:// with the matching Beam extra installed).",
    )
    b.add_argument("--data", required=True, help="canonical dataset folder (path or URI)")
    b.add_argument("--out", required=True, help="examples folder to write (path or URI)")
    b.add_argument("--config", type=Path, help="TOML config file (features, train.seed)")
    b.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set features.max_history=20 (repeatable)",
    )
    b.add_argument("--split", choices=["time", "last"], default="time", help="default time")
    b.add_argument(
        "--cutoff", type=int, help="time split cut-off, Unix seconds (default: last 10%%)"
    )
    b.add_argument(
        "--partitions",
        type=positive_int,
        help="user partitions (default: one per 4 million events); each partition's events "
        "are in memory at once",
    )
    add_runner_arguments(b)
    b.set_defaults(handler=_cmd_examples_build)

"""``recsys data``: generate, import, validate a canonical dataset, and its oracle's recall."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recsys.cli.common import ks_list, positive_int
from recsys.logs import Progress, step


def _cmd_data_synth(args: argparse.Namespace) -> int:
    # pandas and pyarrow load with the command that needs them, not with `recsys --help`.
    from recsys_data.synth import generate_world
    from recsys_data.world import world_config

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
    # pandas and pyarrow load with the command that needs them, not with `recsys --help`.
    from recsys_data.movielens import import_movielens

    with step(f"importing MovieLens from {args.source} into {args.out}"):
        meta = import_movielens(
            args.source, args.out, overwrite=args.overwrite, progress=Progress("importing", "B")
        )
    print(json.dumps({"out": str(args.out), "name": meta.name, "counts": meta.counts}, indent=2))
    return 0


def _cmd_data_validate(args: argparse.Namespace) -> int:
    # pandas and pyarrow load with the command that needs them, not with `recsys --help`.
    from recsys.dataset.validation import validate_dataset

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
    # pandas and pyarrow load with the command that needs them, not with `recsys --help`.
    from recsys.dataset.splits import Split
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


def add_data(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` command(s) to the ``recsys`` parser."""
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
    p.add_argument("--users", type=positive_int, help="override the preset's number of users")
    p.add_argument("--items", type=positive_int, help="override the preset's number of videos")
    p.add_argument("--days", type=positive_int, help="override the preset's number of days")
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
        "--k",
        type=ks_list,
        default=(10, 50, 100),
        help="comma-separated K values (default 10,50,100)",
    )
    p.add_argument(
        "--max-events",
        type=positive_int,
        default=2000,
        help="held-out watches to score (default 2000)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(handler=_cmd_data_oracle)

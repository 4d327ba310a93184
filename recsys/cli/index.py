"""``recsys index``: build, tune, add to and remove from an artifact's candidate index."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recsys.cli.common import positive_int
from recsys.logs import Progress, step


def _print_index(version: Path) -> None:
    # Index operations load pyarrow/ScaNN: only when the command runs (fast --help).
    from recsys.indexing.derived_versions import describe_index

    print(json.dumps(describe_index(version), indent=2))


def _cmd_index_build(args: argparse.Namespace) -> int:
    # Index operations load pyarrow/ScaNN: only when the command runs (fast --help).
    from recsys.index.base import IndexConfig
    from recsys.indexing.operations import build_artifact_index

    config = IndexConfig(
        kind=args.kind,
        num_leaves=args.num_leaves,
        num_leaves_to_search=args.leaves_to_search,
        reorder_k=args.reorder_k,
        **({} if args.dims_per_block is None else {"dims_per_block": args.dims_per_block}),
    )
    # A setting given on the command line is kept; otherwise a ScaNN tree gets a tuned one.
    tune = not args.no_tune and args.leaves_to_search is None and args.reorder_k is None
    with step(f"building the {args.kind} index of {args.artifact}"):
        version = build_artifact_index(args.artifact, config, tune=tune, seed=args.seed)
    _print_index(version)
    return 0


def _cmd_index_tune(args: argparse.Namespace) -> int:
    # Index operations load pyarrow/ScaNN: only when the command runs (fast --help).
    from recsys.indexing.tuning import tune_artifact_index

    with step(f"tuning the index of {args.artifact} to recall@{args.k} >= {args.target_recall}"):
        version, _ = tune_artifact_index(
            args.artifact,
            k=args.k,
            target_recall=args.target_recall,
            num_queries=args.num_queries,
            seed=args.seed,
            query_noise=args.query_noise,
            queries=args.queries,
        )
    _print_index(version)
    return 0


def _cmd_index_add(args: argparse.Namespace) -> int:
    # Index operations load pyarrow/ScaNN: only when the command runs (fast --help).
    from recsys.indexing.operations import add_items

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
    # Index operations load pyarrow/ScaNN: only when the command runs (fast --help).
    from recsys.indexing.operations import read_id_file, remove_items

    ids = [*args.item_ids, *(read_id_file(args.ids_file) if args.ids_file else [])]
    with step(f"removing {len(ids)} videos from {args.artifact}"):
        version = remove_items(args.artifact, ids)
    _print_index(version)
    return 0


def add_index(sub: argparse._SubParsersAction) -> None:
    """Add the ``index`` command(s) to the ``recsys`` parser."""
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
        type=positive_int,
        help="ScaNN tree partitions (default about sqrt(items), at most 2000)",
    )
    p.add_argument(
        "--leaves-to-search",
        type=positive_int,
        help="ScaNN partitions searched per query (default 5%% of the leaves)",
    )
    p.add_argument(
        "--reorder-k",
        type=positive_int,
        help="ScaNN candidates rescored exactly per query (default 250)",
    )
    p.add_argument(
        "--dims-per-block",
        type=positive_int,
        help="ScaNN asymmetric hashing: dimensions per 4-bit code; 2 halves the codes' bytes "
        "per video but scores more coarsely, so more candidates need rescoring for the same "
        "recall (default 1)",
    )
    p.add_argument(
        "--no-tune",
        action="store_true",
        help="keep the default search setting; otherwise a ScaNN tree index is saved with "
        "the fastest setting meeting recall@100 0.95 on the model's own queries, as `index "
        "tune` picks (not when --leaves-to-search or --reorder-k is given)",
    )
    p.add_argument("--seed", type=int, default=0, help="tuning: profile sampling seed (default 0)")
    p.set_defaults(handler=_cmd_index_build)

    p = isub.add_parser(
        "tune",
        help="pick the fastest ScaNN search setting meeting a recall target",
        description="Sweep leaves searched and reorder depth against exact search on "
        "the model's own queries (the query tower over a sample of its stored profiles) or on "
        "query proxies (catalog item embeddings plus Gaussian noise, renormalised), "
        "keep the fastest setting whose recall@K meets the target, save it as the index's "
        "defaults and record it, the measured recall and latency in the manifest. An exact "
        "index has nothing to tune (error, nothing written).",
    )
    p.add_argument("--artifact", type=Path, required=True, help=artifact_help)
    p.add_argument(
        "--k", type=positive_int, default=100, help="recall@K is measured at this K (default 100)"
    )
    p.add_argument(
        "--target-recall",
        type=float,
        default=0.95,
        help="recall@K to reach, in (0, 1] (default 0.95)",
    )
    p.add_argument(
        "--num-queries",
        type=positive_int,
        default=1000,
        help="queries to measure recall on (default 1000)",
    )
    p.add_argument(
        "--queries",
        choices=("auto", "profiles", "proxies"),
        default="auto",
        help="profiles: the model's own queries over stored profiles; proxies: catalog items "
        "plus noise; auto (default): profiles when the version has them (proxies are harder "
        "than real queries and pick a costlier setting, see BENCHMARKS.md)",
    )
    p.add_argument(
        "--query-noise",
        type=float,
        default=0.75,
        help="with proxies: noise norm relative to the item embedding (default 0.75: cosine ~0.8)",
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
        type=positive_int,
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

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


def positive_int(text: str) -> int:
    """An argparse type: a positive integer, else a clear usage error."""
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
        "--k", type=_ks, default=(10, 50, 100), help="comma-separated K values (default 10,50,100)"
    )
    p.add_argument(
        "--max-events",
        type=positive_int,
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
        index_kind=args.index_kind,
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
        **({} if args.dims_per_block is None else {"dims_per_block": args.dims_per_block}),
    )
    # A setting given on the command line is kept; otherwise a ScaNN tree gets a tuned one.
    tune = not args.no_tune and args.leaves_to_search is None and args.reorder_k is None
    with step(f"building the {args.kind} index of {args.artifact}"):
        version = build_artifact_index(args.artifact, config, tune=tune, seed=args.seed)
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
            queries=args.queries,
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


# ---------------------------------------------------------------- serving


def _cmd_serve(args: argparse.Namespace) -> int:
    from recsys_serving.options import config_from_args
    from recsys_serving.server import serve

    config = config_from_args(args)
    try:
        serve(config, port_file=args.port_file)
    except OSError as exc:
        raise UsageError(f"{exc}; choose another --port or --host") from exc
    except RuntimeError as exc:  # replicas that could not start or kept dying (logged)
        print(f"recsys serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_recommend(args: argparse.Namespace) -> int:
    from recsys_serving.client import Context, RecommenderClient, RecommenderError

    if not (args.user_id or args.history or args.search):
        raise UsageError("give --user-id, or a context with --history and/or --search")
    context = None
    if args.history or args.search:
        context = Context(watch_history=args.history, searches=args.search, country=args.country)
    with RecommenderClient(args.target, timeout=args.timeout) as client:
        if args.wait and not client.wait_until_serving(args.wait):
            raise UsageError(
                f"{args.target} is not serving after {args.wait:g} s: is `recsys serve` "
                "running there, and has its model loaded (see its log)?"
            )
        try:
            result = client.recommend(
                user_id=args.user_id,
                k=args.k,
                context=context,
                exclude_watched=not args.include_watched,
                category=args.category,
            )
        except RecommenderError as exc:
            raise UsageError(str(exc)) from exc
    print(
        f"model {result.model_name}/{result.model_version}: {len(result.items)} videos; "
        f"softmax over {result.num_candidates_scored} scored candidates; context from "
        f"{'the stored profile' if result.used_profile else 'the request'}; "
        f"{result.unknown_videos} unknown history ids skipped; "
        f"server time {result.timings.total_ms:.1f} ms"
    )
    print(f"{'rank':>4}  {'video':<12} {'logit':>8} {'prob':>8}  {'category':<14} title")
    for rank, item in enumerate(result.items, start=1):
        title = item.title if len(item.title) <= 48 else item.title[:47] + "..."
        print(
            f"{rank:>4}  {item.item_id:<12} {item.logit:>8.4f} {item.probability:>8.4f}  "
            f"{item.category[:14]:<14} {title}"
        )
    return 0


def _cmd_loadtest(args: argparse.Namespace) -> int:
    from recsys_serving.loadtest import (
        LoadTestResult,
        cold_start_requests,
        run_loadtest,
        user_requests,
    )

    factory = user_requests(args.user_id, args.k) if args.user_id else cold_start_requests(args.k)

    def measure(target: str) -> LoadTestResult:
        return run_loadtest(
            target,
            args.concurrency,
            args.duration,
            factory,
            warmup_s=args.warmup,
            timeout_s=args.timeout,
            channels=args.channels,
        )

    with step(
        f"load test of {args.target}: {args.concurrency} calls in flight, {args.duration:g} s"
    ):
        result = measure(args.target)
    print(f"recommender  {result.summary()}")
    if result.server_ms:
        stages = result.server_ms
        print(
            "             server stages, mean ms: "
            f"context {stages['context_ms']:.2f}, query tower {stages['query_tower_ms']:.2f}, "
            f"index {stages['index_ms']:.2f}, ranking {stages['rescoring_ms']:.2f}, "
            f"total {stages['total_ms']:.2f} (the rest of the latency is gRPC and queueing)"
        )
    if args.baseline_echo:
        from recsys_serving.echo import echo_server_process

        with (
            step("the same load against an echo gRPC server (baseline)"),
            echo_server_process(
                workers=args.echo_workers,
                processes=args.echo_processes,
                pin_cpus=args.echo_pin_cpus,
            ) as echo,
        ):
            baseline = measure(echo.target)
        print(f"echo         {baseline.summary()}")
        if baseline.qps > 0:
            print(f"throughput: {result.qps / baseline.qps:.2f}x the echo server's")
    return 1 if result.errors else 0


def _add_serving(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over gRPC (recsys.v1.Recommender, health, reflection)",
        description="Serve artifacts/<name>/LATEST over gRPC until SIGTERM or Ctrl-C (then stop "
        "accepting calls and drain running ones for --grace seconds). Health checking says "
        "SERVING once the version is loaded, checked against its manifest's sha256s and has "
        "answered a probe query. LATEST is polled every --reload-interval seconds: a new "
        "version is loaded and checked beside the served one and swapped in between two calls; "
        "a broken one is refused (logged) and the old one keeps serving.",
    )
    from recsys_serving.options import add_arguments

    add_arguments(p)
    p.set_defaults(handler=_cmd_serve)

    p = sub.add_parser(
        "recommend",
        help="ask a running server for recommendations and print them as a table",
        description="Call Recommend on a running `recsys serve`. With --user-id alone the "
        "server uses the user's stored profile (latest watches, searches, demographics); "
        "--history / --search / --country replace those parts of it, or make up a whole "
        "context without --user-id. Probabilities are the softmax over the scored candidates "
        "(see protos/recsys/v1/recommender.proto).",
    )
    p.add_argument("--target", required=True, metavar="HOST:PORT", help="the server")
    p.add_argument("--user-id", help="a user of the training data (uses the stored profile)")
    p.add_argument("--k", type=positive_int, default=10, help="videos to return (default 10)")
    p.add_argument(
        "--history",
        nargs="+",
        default=[],
        metavar="ID",
        help="recently watched video ids, oldest first",
    )
    p.add_argument(
        "--search", nargs="+", default=[], metavar="TEXT", help="recent searches, oldest first"
    )
    p.add_argument("--country", help="country code for a made-up context, e.g. US")
    p.add_argument("--category", help="only videos of this category")
    p.add_argument(
        "--include-watched",
        action="store_true",
        help="allow videos of the watch history (excluded by default)",
    )
    p.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="per-call deadline (default 5)"
    )
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for the server to be SERVING (default: do not wait)",
    )
    p.set_defaults(handler=_cmd_recommend)

    p = sub.add_parser(
        "loadtest",
        help="measure a server's throughput and latency (optionally against an echo baseline)",
        description="Keep --concurrency Recommend calls in flight for --duration seconds from "
        "one asyncio process (grpc.aio) and report calls/s, p50/p95/p99 latency and errors by "
        "status code. Requests are user_id-only for the --user-id values given (profile "
        "contexts), else made-up cold-start contexts (a few searches and a country). With "
        "--baseline-echo the same load then runs against an echo gRPC server (same service, "
        "canned replies of k items, started in its own process), and the throughput ratio is "
        "printed. Exit code 1 when any call failed.",
    )
    p.add_argument("--target", required=True, metavar="HOST:PORT", help="the server")
    p.add_argument("--concurrency", type=positive_int, required=True, help="calls kept in flight")
    p.add_argument("--duration", type=float, required=True, metavar="S", help="measured seconds")
    p.add_argument("--k", type=positive_int, default=100, help="videos per call (default 100)")
    p.add_argument(
        "--user-id",
        action="append",
        default=[],
        metavar="U",
        help="send user_id-only requests for these users (repeatable)",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        metavar="S",
        help="unmeasured seconds first (default 1)",
    )
    p.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="per-call deadline (default 5)"
    )
    p.add_argument(
        "--baseline-echo",
        action="store_true",
        help="also run the same load against an echo gRPC server and print the ratio",
    )
    p.add_argument(
        "--echo-workers",
        type=positive_int,
        default=8,
        help="echo server worker threads (default 8, as `recsys serve`)",
    )
    p.add_argument(
        "--echo-processes",
        type=positive_int,
        default=1,
        help="echo server processes on its port (default 1; match the server's --processes)",
    )
    p.add_argument(
        "--echo-pin-cpus",
        action="store_true",
        help="pin the echo server's processes to CPUs (match the server's --pin-cpus)",
    )
    p.add_argument(
        "--channels",
        type=positive_int,
        default=1,
        help="connections the calls are spread over (default 1; a server with --processes N "
        "needs at least N to use them all)",
    )
    p.set_defaults(handler=_cmd_loadtest)


# ---------------------------------------------------------------- evaluate


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from recsys.evaluation import evaluate, headline
    from recsys.index import IndexLoadError

    try:
        result = evaluate(
            args.artifact,
            args.data,
            split=args.split,
            out=args.out,
            ks=args.k,
            ablation=args.ablation,
            ablation_epochs=args.ablation_epochs,
            compare_to=args.compare_to,
            max_queries=args.max_queries,
            tfrs_epochs=args.tfrs_epochs,
            seed=args.seed,
            work_dir=args.work_dir,
        )
    except IndexLoadError as exc:
        raise UsageError(str(exc)) from exc
    print(headline(result))
    print(f"report: {args.out / 'report.html'} (and report.md, metrics.json in {args.out})")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="offline evaluation report: model vs baselines vs oracle, segments, ablations",
        description="Evaluate an artifact on the held-out watches of its split: Recall, "
        "HitRate, NDCG, MAP at each K and MRR, catalog coverage and popularity bias, with exact "
        "search over every video and with the served index; the same metrics for most-popular, "
        "trending, item-to-item co-watch and the TFRS basic id-only two-tower (trained on the "
        "same examples) and, for synthetic worlds, the oracle ceiling; segments by history "
        "length, video age and demographics; video-embedding projection and neighbours. "
        "Writes metrics.json, report.md (plots in plots/) and a self-contained report.html "
        "into --out.",
    )
    p.add_argument(
        "--artifact",
        type=Path,
        required=True,
        metavar="PATH",
        help="artifact version folder (artifacts/<name>/vNNNN) or model folder (uses LATEST)",
    )
    p.add_argument(
        "--data", type=Path, required=True, metavar="DIR", help="the dataset it was trained on"
    )
    p.add_argument(
        "--split",
        choices=["time", "last"],
        help="split to evaluate (default: the artifact's own, with its cut-off)",
    )
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder for the report and metrics"
    )
    p.add_argument(
        "--k",
        type=_ks,
        default=(10, 50, 100),
        metavar="10,50,100",
        help="comma-separated cut-offs K (default 10,50,100)",
    )
    p.add_argument(
        "--ablation",
        action="store_true",
        help="also train the Figure 6 variants (feature ladder, depth 0-3) and the base model "
        "without logQ correction, without example age and without the freshness term, with "
        "the training job, and report them with the Figure 4 example-age comparison (slow: "
        "one training run per variant)",
    )
    p.add_argument(
        "--ablation-epochs",
        type=positive_int,
        default=2,
        metavar="N",
        help="training epochs of each ablation variant (default 2)",
    )
    p.add_argument(
        "--compare-to",
        type=Path,
        metavar="PATH",
        help="another artifact version: how far its video neighbourhoods moved, and its "
        "metrics on the same queries when it reads the same features",
    )
    p.add_argument(
        "--max-queries",
        type=positive_int,
        default=5000,
        metavar="N",
        help="held-out watches evaluated, a seeded sample (default 5000)",
    )
    p.add_argument(
        "--tfrs-epochs",
        type=positive_int,
        default=3,
        metavar="N",
        help="training epochs of the TFRS basic baseline (default 3, as the TFRS tutorial)",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="query sampling and baseline seed (default: the artifact's training seed, so the "
        "sample is the training job's own validation sample)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help="where to build examples and ablation runs when the artifact's own cannot be "
        "reused (default <out>/work)",
    )
    p.set_defaults(handler=_cmd_evaluate)


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
    _add_evaluate(sub)
    _add_serving(sub)
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

"""``recsys serve``, ``recommend`` and ``loadtest``: the gRPC service and its clients."""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import TYPE_CHECKING

from recsys.cli.common import UsageError, add_server_arguments, positive_int, wait_for_server
from recsys.logs import step
from recsys_serving.options import (
    DEFAULT_WORKERS,
    add_arguments,
    default_processes,
)

if TYPE_CHECKING:
    from recsys_serving.loadtest import LoadTestResult


def _cmd_serve(args: argparse.Namespace) -> int:
    # gRPC and the library: only to serve.
    from recsys.live.profile_store import ProfileStoreError
    from recsys_serving.server import config_from_args, serve

    config = config_from_args(args)
    try:
        serve(config, port_file=args.port_file)
    except ProfileStoreError as exc:
        raise UsageError(f"{exc}; check --profile-store") from exc
    except OSError as exc:
        raise UsageError(f"{exc}; choose another --port or --host") from exc
    except RuntimeError as exc:  # replicas that could not start or kept dying (logged)
        print(f"recsys serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_recommend(args: argparse.Namespace) -> int:
    # Imported here: gRPC stays off the path that only builds the command line.
    from recsys_serving.client import Context, RecommenderClient, RecommenderError

    if not (args.user_id or args.history or args.search):
        raise UsageError("give --user-id, or a context with --history and/or --search")
    context = None
    if args.history or args.search:
        context = Context(watch_history=args.history, searches=args.search, country=args.country)
    with RecommenderClient(args.target, timeout=args.timeout) as client:
        wait_for_server(client, args)
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
    if args.ids_only:
        print("\n".join(item.item_id for item in result.items))
        return 0
    source = "the request"
    if result.used_profile:
        source = "the stored profile" + (
            f" with {result.live_events} live events" if result.live_events else ""
        )
    print(
        f"model {result.model_name}/{result.model_version}: {len(result.items)} videos; "
        f"softmax over {result.num_candidates_scored} scored candidates; context from "
        f"{source}; {result.unknown_videos} unknown history ids skipped; "
        f"server time {result.timings.total_ms:.1f} ms"
    )
    if result.profile_store_unavailable:
        print("note: the profile store was unreachable: served from the artifact's profile")
    print(f"{'rank':>4}  {'video':<12} {'logit':>8} {'prob':>8}  {'category':<14} title")
    for rank, item in enumerate(result.items, start=1):
        title = item.title if len(item.title) <= 48 else item.title[:47] + "..."
        print(
            f"{rank:>4}  {item.item_id:<12} {item.logit:>8.4f} {item.probability:>8.4f}  "
            f"{item.category[:14]:<14} {title}"
        )
    return 0


def _print_stages(result: LoadTestResult) -> None:
    if result.server_ms:
        stages = result.server_ms
        print(
            "             server stages, mean ms: "
            f"context {stages['context_ms']:.2f}, query tower {stages['query_tower_ms']:.2f}, "
            f"index {stages['index_ms']:.2f}, ranking {stages['rescoring_ms']:.2f}, "
            f"total {stages['total_ms']:.2f} (the rest of the latency is gRPC and queueing)"
        )


def _cmd_loadtest(args: argparse.Namespace) -> int:
    # Imported here: grpc.aio and numpy stay off the path that only builds the command line.
    from recsys_serving.loadtest import cold_start_requests, run_loadtest, user_requests

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

    if not args.baseline_echo:
        with step(f"load test of {args.target}: {args.concurrency} calls in flight"):
            results = [measure(args.target) for _ in range(args.rounds)]
        for result in results:
            print(f"recommender  {result.summary()}")
        _print_stages(results[-1])
        return 1 if any(r.errors for r in results) else 0
    from recsys_serving.echo import echo_server_process  # only with a baseline: a child process

    rounds: list[tuple[LoadTestResult, LoadTestResult]] = []
    with (
        step(
            f"load test of {args.target} and an echo gRPC server (baseline), "
            f"{args.concurrency} calls in flight, {args.rounds} rounds in alternating order"
        ),
        echo_server_process(
            workers=args.echo_workers,
            processes=args.echo_processes,
            pin_cpus=args.echo_pin_cpus,
        ) as echo,
    ):
        for i in range(args.rounds):
            if i % 2 == 0:
                result, baseline = measure(args.target), measure(echo.target)
            else:
                baseline, result = measure(echo.target), measure(args.target)
            rounds.append((result, baseline))
            print(f"round {i + 1}: recommender  {result.summary()}")
            print(f"round {i + 1}: echo         {baseline.summary()}")
    _print_stages(rounds[-1][0])
    print(comparison(rounds))
    return 1 if any(result.errors for result, _ in rounds) else 0


def comparison(rounds: list[tuple[LoadTestResult, LoadTestResult]]) -> str:
    """Medians over rounds of (recommender, echo) results, and the per-round ratios."""

    def median(values: list[float]) -> float:
        return float(statistics.median(values))

    ratios = [r.qps / e.qps if e.qps > 0 else float("nan") for r, e in rounds]
    lines = [
        f"medians of {len(rounds)} rounds: recommender {median([r.qps for r, _ in rounds]):.0f} "
        f"calls/s, p50 {median([r.p50_ms for r, _ in rounds]):.2f} ms; echo "
        f"{median([e.qps for _, e in rounds]):.0f} calls/s, p50 "
        f"{median([e.p50_ms for _, e in rounds]):.2f} ms",
        f"throughput: {median(ratios):.2f}x the echo server's (rounds "
        + " ".join(f"{x:.2f}" for x in ratios)
        + "); p50: "
        + f"{median([r.p50_ms / e.p50_ms for r, e in rounds]):.2f}x the echo server's",
    ]
    return "\n".join(lines)


def add_serving(sub: argparse._SubParsersAction) -> None:
    """Add the ``serving`` command(s) to the ``recsys`` parser."""
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
    add_arguments(p)
    p.set_defaults(handler=_cmd_serve)

    p = sub.add_parser(
        "recommend",
        help="ask a running server for recommendations and print them as a table",
        description="Call Recommend on a running `recsys serve`. With --user-id alone the "
        "server uses the user's stored profile (latest watches, searches, demographics, and the "
        "events recorded since the export); "
        "--history / --search / --country replace those parts of it, or make up a whole "
        "context without --user-id. Probabilities are the softmax over the scored candidates "
        "(see protos/recsys/v1/recommender.proto).",
    )
    add_server_arguments(p, timeout_s=5.0)
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
    p.add_argument("--ids-only", action="store_true", help="print only the video ids, one per line")
    p.add_argument(
        "--include-watched",
        action="store_true",
        help="allow videos of the watch history (excluded by default)",
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
        "--rounds",
        type=positive_int,
        default=3,
        help="measurements, each reported; with --baseline-echo the recommender and the echo "
        "server alternate (who goes first changes every round) and the medians and per-round "
        "ratios are printed (default 3)",
    )
    p.add_argument(
        "--baseline-echo",
        action="store_true",
        help="also run the same load against an echo gRPC server and print the ratios",
    )
    p.add_argument(
        "--echo-workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        help=f"echo server worker threads (default {DEFAULT_WORKERS}, as `recsys serve`)",
    )
    p.add_argument(
        "--echo-processes",
        type=positive_int,
        default=default_processes(),
        help="echo server processes on its port (default: one per usable CPU, here "
        "%(default)s, as `recsys serve`; match the server's --processes)",
    )
    p.add_argument(
        "--echo-pin-cpus",
        action="store_true",
        help="pin the echo server's processes to CPUs (match the server's --pin-cpus)",
    )
    p.add_argument(
        "--channels",
        type=positive_int,
        default=8,
        help="connections the calls are spread over (default 8; a server with --processes N "
        "needs at least N to use them all, and the kernel spreads connections at random)",
    )
    p.set_defaults(handler=_cmd_loadtest)

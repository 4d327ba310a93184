"""``recsys evaluate``: the offline evaluation report of an artifact."""

from __future__ import annotations

import argparse
import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.cli.common import (
    UsageError,
    add_server_arguments,
    ks_list,
    positive_int,
    wait_for_server,
)

if TYPE_CHECKING:
    from recsys.evaluation.evaluate import OracleScores
    from recsys.evaluation.online import Served
    from recsys.live.events import Demographics, Event

log = logging.getLogger(__name__)


def synthetic_oracle(data: Path) -> OracleScores | None:
    """The true next-watch probabilities of a synthetic world; None (logged) for other data."""
    # pandas and pyarrow load with the command that needs them, not with `recsys --help`.
    from recsys.dataset.io import DatasetError
    from recsys_data.oracle import load_world, oracle_probabilities

    try:
        world = load_world(data)
    except DatasetError as exc:
        log.info("no oracle: %s", exc)
        return None
    return functools.partial(oracle_probabilities, world)


class GrpcService:
    """A running server as :class:`recsys.evaluation.online.OnlineService` (over its client)."""

    def __init__(self, target: str, timeout: float) -> None:
        # gRPC loads with the online evaluation only.
        from recsys_serving.client import RecommenderClient

        self.client = RecommenderClient(target, timeout=timeout)

    def recommend(
        self,
        user_id: str,
        k: int,
        request_time: int,
        use_live_profile: bool,
        exclude_watched: bool,
    ) -> Served | None:
        """The served top ``k`` (None when the server says NOT_FOUND)."""
        import grpc

        from recsys.evaluation.online import Served
        from recsys_serving.client import RecommenderError

        try:
            reply = self.client.recommend(
                user_id=user_id,
                k=k,
                request_time=request_time,
                use_live_profile=use_live_profile,
                exclude_watched=exclude_watched,
            )
        except RecommenderError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return Served([i.item_id for i in reply.items], reply.profile_store_unavailable)

    def record(self, events: Sequence[Event], users: Sequence[Demographics]) -> None:
        """RecordEvents (retried on UNAVAILABLE by the client: duplicates are ignored)."""
        self.client.record_events(events, users)


def _online(args: argparse.Namespace) -> dict[str, Any] | None:
    """The online evaluation's result (``--online``), or None."""
    if not args.online:
        return None
    if not args.target:
        raise UsageError("--online needs --target HOST:PORT (a running `recsys serve`)")
    from recsys.evaluation.online import evaluate_online
    from recsys.logs import Progress
    from recsys_serving.client import RecommenderError

    service = GrpcService(args.target, args.timeout)
    try:
        wait_for_server(service.client, args)
        result = evaluate_online(
            args.data,
            service,
            ks=args.k,
            max_queries=args.max_queries,
            seed=0 if args.seed is None else args.seed,
            progress=Progress("online evaluation", unit="query"),
            exclude_watched=args.exclude_watched,
        )
    except RecommenderError as exc:
        raise UsageError(f"online evaluation against {args.target} failed: {exc}") from exc
    finally:
        service.client.close()
    return result.to_dict()


def _print_online(online: dict[str, Any]) -> None:
    recall = online["recall"]
    ks = [str(k) for k in online["ks"]]
    print(f"online (as served), {online['queries']} held-out watches:")
    for key in ("live", "frozen"):
        print(f"  {key:<7}" + "  ".join(f"R@{k} {recall[key][k]:.4f}" for k in ks))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    # The evaluation loads TensorFlow and matplotlib: only when the command runs.
    from recsys.evaluation.ablation import Ablation
    from recsys.evaluation.evaluate import evaluate
    from recsys.evaluation.report import headline, write_online_report
    from recsys.index.base import IndexLoadError

    if args.artifact is None and not args.online:
        raise UsageError("give --artifact (offline evaluation), --online --target, or both")
    online = _online(args)
    if args.artifact is None:
        assert online is not None
        path = write_online_report(online, args.out, args.target)
        (args.out / "online.json").write_text(json.dumps(online, indent=2) + "\n")
        _print_online(online)
        print(f"report: {path} (and online.md, online.json in {args.out})")
        return 0

    ablation = None
    if args.ablation:
        # The training job (Keras, TFRS, the exporter) loads only when variants are trained.
        from recsys_training.ablation import train_variant

        ablation = Ablation(train_variant, epochs=args.ablation_epochs)
    try:
        result = evaluate(
            args.artifact,
            args.data,
            split=args.split,
            out=args.out,
            ks=args.k,
            compare_to=args.compare_to,
            max_queries=args.max_queries,
            tfrs_epochs=args.tfrs_epochs,
            seed=args.seed,
            work_dir=args.work_dir,
            oracle=synthetic_oracle,
            ablation=ablation,
            online=online,
            exclude_watched=args.exclude_watched,
            ease_max_items=args.ease_max_items,
        )
    except IndexLoadError as exc:
        raise UsageError(str(exc)) from exc
    print(headline(result))
    if online is not None:
        _print_online(online)
    print(f"report: {args.out / 'report.html'} (and report.md, metrics.json in {args.out})")
    return 0


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command(s) to the ``recsys`` parser."""
    p = sub.add_parser(
        "evaluate",
        help="offline evaluation report: model vs baselines vs oracle, segments, ablations",
        description="Evaluate an artifact on the held-out watches of its split: Recall, "
        "HitRate, NDCG, MAP at each K and MRR, catalog coverage and popularity bias, with exact "
        "search over every video and with the served index; the same metrics for most-popular, "
        "trending, item-to-item co-watch and the TFRS basic id-only two-tower (trained on the "
        "same examples), EASE and item-kNN and, for synthetic worlds, the oracle ceiling, "
        "all under one watched-video rule (--exclude-watched); segments by history length, "
        "video age and demographics; video-embedding projection and neighbours. "
        "Writes metrics.json, report.md (plots in plots/) and a self-contained report.html "
        "into --out.",
    )
    p.add_argument(
        "--artifact",
        type=Path,
        metavar="PATH",
        help="artifact version folder (artifacts/<name>/vNNNN) or model folder (uses LATEST); "
        "required unless --online",
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
        type=ks_list,
        default=(10, 50, 100),
        metavar="10,50,100",
        help="comma-separated cut-offs K (default 10,50,100)",
    )
    p.add_argument(
        "--exclude-watched",
        choices=["auto", "yes", "no"],
        default="auto",
        help="leave each user's already watched videos out of every ranking (model, served "
        "index, baselines, oracle), as Recommend does by default: yes, no, or auto (yes when "
        "no user watched a video twice in the dataset; default auto). The headline says "
        "which rule was used; --online asks Recommend with the same rule",
    )
    p.add_argument(
        "--ease-max-items",
        type=int,
        default=8000,
        metavar="N",
        help="EASE and item-kNN cover the N most watched training videos (EASE inverts an "
        "N x N float32 matrix: 256 MB at N=8000, time growing as N cubed; default 8000; "
        "0 leaves both out). The report says when videos were left uncovered",
    )
    p.add_argument(
        "--ablation",
        action="store_true",
        help="also train the Figure 6 variants (feature ladder, depth 0-3) and the base model "
        "without logQ correction, without example age and without the freshness term, and "
        "with the other history encoder (bag or attention) and with 1024 uniform negatives, "
        "with the training job, and report them with the Figure 4 example-age comparison (slow: "
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
    online = p.add_argument_group(
        "online evaluation (as served, against a running `recsys serve`)",
        "Replay the evaluation window (events at or after the time split's cut-off) in time "
        "order into the server with RecordEvents; before each held-out watch (--max-queries, "
        "a seeded sample) ask Recommend for that user at that moment, with the live profile "
        "and with the artifact's frozen profile, and score both. Note: it writes the window's "
        "events into the server's profile store. With --artifact too, the offline report "
        "gets an online section; alone, online.html/.md/.json are written into --out.",
    )
    online.add_argument("--online", action="store_true", help="run the online evaluation")
    add_server_arguments(online, timeout_s=10.0, wait_s=60.0, required=False)
    p.set_defaults(handler=_cmd_evaluate)

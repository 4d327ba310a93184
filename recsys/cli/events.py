"""``recsys events send``: users' events streamed into a running server's profile store."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.cli.common import UsageError, add_server_arguments, positive_int, wait_for_server

if TYPE_CHECKING:
    from recsys.live.events import Demographics, Event


def _cmd_send(args: argparse.Namespace) -> int:
    # gRPC and pyarrow load with the command that needs them, not with `recsys --help`.
    from recsys.live.event_files import EventFileError, event_batches, read_events
    from recsys.live.replay import replay
    from recsys.logs import Progress, step
    from recsys_serving.client import RecommenderClient, RecommenderError

    if args.rate is not None and args.rate <= 0:
        raise UsageError(f"--rate must be positive events/s, got {args.rate}")
    try:
        with step(f"reading events from {args.source}"):
            source = read_events(args.source, after=args.after)
    except EventFileError as exc:
        raise UsageError(str(exc)) from exc
    with RecommenderClient(args.target, timeout=args.timeout) as client:
        wait_for_server(client, args)

        def record(events: Sequence[Event], users: Sequence[Demographics]) -> tuple[int, int]:
            reply = client.record_events(events, users)
            return reply.recorded, reply.duplicates

        try:
            summary = replay(
                event_batches(source, args.batch_size),
                len(source.events),
                record,
                rate=args.rate,
                progress=Progress("sending events", unit="event"),
            )
        except (EventFileError, RecommenderError) as exc:
            raise UsageError(str(exc)) from exc
    print(
        f"sent {summary.events} events in {summary.batches} batches to {args.target} in "
        f"{summary.seconds:.1f} s ({summary.events_per_s:,.0f} events/s): {summary.recorded} "
        f"recorded, {summary.duplicates} duplicates ignored"
    )
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    # gRPC loads with the command that needs it.
    import time

    from recsys.live.events import Demographics, Event, EventError, check_batch
    from recsys_serving.client import RecommenderClient, RecommenderError

    # One second back: Recommend counts only events strictly before its moment.
    moment = int(time.time()) - 1 if args.time is None else args.time
    events = [Event(args.user_id, moment, "watch", video_id=v) for v in args.watch]
    events += [Event(args.user_id, moment, "search", query=q) for q in args.search]
    users = []
    if any(v is not None for v in (args.country, args.age, args.gender)):
        users.append(Demographics(args.user_id, args.country, None, args.age, args.gender))
    try:
        check_batch(events, users, int(time.time()))
        with RecommenderClient(args.target, timeout=args.timeout) as client:
            wait_for_server(client, args)
            reply = client.record_events(events, users)
    except (EventError, RecommenderError) as exc:
        raise UsageError(str(exc)) from exc
    print(
        f"recorded {reply.recorded} events for {args.user_id} ({reply.duplicates} duplicates "
        f"ignored) in {reply.profile_store}"
    )
    return 0


def add_events(sub: argparse._SubParsersAction) -> None:
    """Add the ``events`` command family to the ``recsys`` parser."""
    events = sub.add_parser("events", help="users' live events: send them to a running server")
    commands = events.add_subparsers(dest="events_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "send",
        help="stream events from a dataset or a Parquet/JSONL file into a server",
        description="Send events to a running `recsys serve` with RecordEvents, oldest first, "
        "in batches, optionally paced. SOURCE is a canonical dataset folder (its "
        "events.parquet; each user's demographics go along with the user's first event) or "
        "a Parquet or JSONL (.jsonl) file with the events table's columns: user_id, "
        "timestamp, type (watch|search), item_id, query, watch_fraction. Every batch is "
        "checked before it is sent: a bad row stops the run with the file and row named. "
        "Sending again is harmless: exact duplicates are ignored by the store.",
    )
    p.add_argument("source", type=Path, metavar="SOURCE", help="dataset folder or events file")
    add_server_arguments(p, timeout_s=10.0)
    p.add_argument(
        "--after",
        type=int,
        metavar="UNIX_S",
        help="only events at or after this time (Unix seconds), e.g. a model's training cut-off",
    )
    p.add_argument(
        "--rate",
        type=float,
        metavar="EVENTS_PER_S",
        help="pace the stream at this many events/s (default: as fast as the server takes them)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=100,
        metavar="N",
        help="events per RecordEvents call, at most 10000 (default 100)",
    )
    p.set_defaults(handler=_cmd_send)

    p = commands.add_parser(
        "record",
        help="record a few watches and searches of one user in a server",
        description="Record watches (--watch) and searches (--search) of one user, at one "
        "moment, with RecordEvents; the user's next Recommend reads them. Demographics "
        "(--country, --age, --gender) introduce a user the model has not seen.",
    )
    add_server_arguments(p, timeout_s=10.0)
    p.add_argument("--user-id", required=True, help="the user")
    p.add_argument("--watch", nargs="+", default=[], metavar="ID", help="watched video ids")
    p.add_argument("--search", nargs="+", default=[], metavar="TEXT", help="search queries")
    p.add_argument("--time", type=int, metavar="UNIX_S", help="when (default: one second ago)")
    p.add_argument("--country", help="country code, e.g. US")
    p.add_argument("--age", type=int, help="age in years")
    p.add_argument("--gender", choices=["f", "m", "x"], help="gender")
    p.set_defaults(handler=_cmd_record)

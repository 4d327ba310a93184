"""What every ``recsys`` subcommand shares: argument types and the usage error."""

from __future__ import annotations

import argparse
from typing import Protocol


class UsageError(Exception):
    """A command-line input the user can fix."""


def positive_int(text: str) -> int:
    """An argparse type: a positive integer, else a clear usage error."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def ks_list(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated positive integers (K values)."""
    try:
        ks = tuple(int(k) for k in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc
    if not ks or any(k <= 0 for k in ks):
        raise argparse.ArgumentTypeError(f"every K must be positive, got {text!r}")
    return ks


class _Serving(Protocol):
    def wait_until_serving(self, timeout_s: float) -> bool: ...


def add_server_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    timeout_s: float,
    wait_s: float = 0.0,
    required: bool = True,
) -> None:
    """``--target``, ``--timeout`` and ``--wait``: how a client command reaches a server."""
    parser.add_argument(
        "--target", required=required, metavar="HOST:PORT", help="the running `recsys serve`"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=timeout_s,
        metavar="S",
        help=f"per-call deadline (default {timeout_s:g})",
    )
    waits = f"default {wait_s:g}" if wait_s else "default: do not wait"
    parser.add_argument(
        "--wait",
        type=float,
        default=wait_s,
        metavar="S",
        help=f"first wait up to S seconds for the server to be SERVING ({waits})",
    )


def wait_for_server(client: _Serving, args: argparse.Namespace) -> None:
    """Wait ``args.wait`` seconds for ``args.target`` to serve; UsageError saying what to check."""
    if args.wait and not client.wait_until_serving(args.wait):
        raise UsageError(
            f"{args.target} is not serving after {args.wait:g} s: is `recsys serve` running "
            "there, and has its model loaded (see its log)?"
        )

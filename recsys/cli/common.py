"""What every ``recsys`` subcommand shares: argument types and the usage error."""

from __future__ import annotations

import argparse


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

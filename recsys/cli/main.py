"""The ``recsys`` command line: a thin layer over typed library functions.

Each command family has its module (``data``, ``examples``, ``train``, ``index``,
``evaluate``, ``serving``, ``events``), with its arguments and handlers. Heavy modules
(TensorFlow, ScaNN) are imported inside the command that needs them, so ``recsys --help``
and data generation start fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from recsys import __version__
from recsys.cli.common import UsageError
from recsys.cli.data import add_data
from recsys.cli.evaluate import add_evaluate
from recsys.cli.events import add_events
from recsys.cli.examples import add_examples
from recsys.cli.index import add_index
from recsys.cli.serving import add_serving
from recsys.cli.train import add_train
from recsys.logs import setup_logging

Handler = Callable[[argparse.Namespace], int]


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
    add_data(sub)
    add_examples(sub)
    add_train(sub)
    add_index(sub)
    add_evaluate(sub)
    add_serving(sub)
    add_events(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``recsys`` command line; returns the process exit code."""
    # The library's errors load pandas: only once a command runs (fast --help).
    from recsys.artifact.versions import ArtifactError
    from recsys.dataset.io import DatasetError

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

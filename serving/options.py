"""``recsys serve`` options: one definition for the CLI and ``python -m recsys_serving.server``.

Light on purpose (argparse only): building the ``recsys`` command line must not import gRPC,
pyarrow or TensorFlow. The ``recsys`` CLI sits above serving, so its argument types are not
used here.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

# gRPC worker threads per server process (and the echo baseline's): few, because Python runs
# the handlers under one GIL and extra threads only add hand-offs (see BENCHMARKS.md).
DEFAULT_WORKERS = 8
PROFILE_STORE_ENV = "RECSYS_PROFILE_STORE"  # the --profile-store default, and how replicas get it


def default_processes() -> int:
    """Server processes by default: one per CPU this process may use (one GIL each).

    The CPUs it may run on, capped by a cgroup CPU quota (a container limited to 2 CPUs on a
    64-core node runs 2 processes, not 64 copies of the model).
    """
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota is not None else cpus


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs this process's cgroup may use per period (cgroup v2 or v1); None: no quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # v2: "max 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # v1: -1 when none
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


# recsys.inference.query_tower.RUNTIMES (a test checks)
TOWER_RUNTIMES = ("auto", "tflite", "savedmodel")


def positive_int(text: str) -> int:
    """An argparse type: a positive integer, else a usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser, default_port: int = 50051) -> None:
    """Add the ``serve`` options to ``parser``."""
    parser.add_argument("--artifacts", type=Path, required=True, help="artifacts root folder")
    parser.add_argument(
        "--name", required=True, help="model name: serves artifacts/<name>/LATEST, hot-reloaded"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=default_port,
        help=f"TCP port (default {default_port}; 0: any free port)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0: all)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        help=f"gRPC worker threads per process (default {DEFAULT_WORKERS}, measured on 2 cores)",
    )
    parser.add_argument(
        "--processes",
        type=positive_int,
        default=default_processes(),
        help="server processes sharing the port, one GIL each; the kernel spreads connections "
        "over them, each loads and hot-reloads the model (memory: one model each), a dead one "
        "is restarted (default: one per CPU this process may use, capped by its cgroup's CPU "
        "quota; here %(default)s; see BENCHMARKS.md)",
    )
    parser.add_argument(
        "--pin-cpus",
        action="store_true",
        help="with --processes N: run replica i on CPU i of the CPUs this process may use "
        "(measured +18%% calls/s at 2 processes on 2 cores; for replicas that own their cores)",
    )
    parser.add_argument(
        "--reload-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between checks of LATEST for a new version (default 5)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds running calls get to finish on SIGTERM / Ctrl-C (default 10)",
    )
    parser.add_argument(
        "--profile-store",
        default=os.environ.get(PROFILE_STORE_ENV, "embedded"),
        metavar="URL",
        help="where users' live events (RecordEvents) are kept: 'embedded' (SQLite in "
        "ARTIFACTS/NAME/live/, shared by this host's processes), 'sqlite:PATH', "
        "'redis://[:PASSWORD@]HOST:PORT/DB[?prefix=KEYS]' (shared by replicas on every host), "
        f"or 'none'; default: ${PROFILE_STORE_ENV} if set (keeps a password off the command "
        "line), else 'embedded'",
    )
    parser.add_argument(
        "--port-file",
        type=Path,
        help="write the port to this file once listening (useful with --port 0)",
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    tuning = parser.add_argument_group("tuning (defaults measured on 2 cores)")
    tuning.add_argument(
        "--tower-runtime",
        choices=TOWER_RUNTIMES,
        default="auto",
        help="query tower runtime: auto (default) serves a TensorFlow Lite copy when it gives "
        "the SavedModel's embeddings on probe queries, else the SavedModel",
    )
    tuning.add_argument(
        "--max-batch",
        type=positive_int,
        default=32,
        help="most concurrent queries per SavedModel query-tower call (default 32; 1: no "
        "batching; the TensorFlow Lite tower takes one query per call)",
    )
    tuning.add_argument(
        "--leaves-to-search",
        type=positive_int,
        help="ScaNN leaves each query searches (default: the index's own setting, tuned by "
        "`recsys index tune`); more: closer to exact search, slower",
    )
    tuning.add_argument(
        "--reorder-k",
        type=positive_int,
        help="ScaNN candidates re-scored exactly before the top are kept (default: the "
        "index's own setting)",
    )
    tuning.add_argument("--tf-intra-op-threads", type=int, default=1, help="default 1")
    tuning.add_argument(
        "--tf-inter-op-threads",
        type=int,
        default=-1,
        help="default -1: run TensorFlow ops in the calling thread",
    )

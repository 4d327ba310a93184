"""A do-nothing Recommender server: the gRPC baseline that load tests compare against.

It implements the same service with the same server setup (thread pool, message limits) as
:mod:`recsys_serving.server`, but ``Recommend`` returns a canned reply of ``k`` items (built
once per k), so a load test against it measures what gRPC, protobuf and the load generator
cost with the real message sizes, and nothing else. Run it in its own process
(:func:`echo_server_process`) so that it never shares a GIL with what it is compared to.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import grpc

from recsys_serving.options import DEFAULT_WORKERS, default_processes
from recsys_serving.proto import pb2, pb2_grpc
from recsys_serving.replicas import serve_replicas

log = logging.getLogger(__name__)

# The same message limits as recsys_serving.server.ServerConfig's defaults (not imported from
# there: the echo process must start without pandas, pyarrow or TensorFlow).
MAX_RECEIVE_BYTES = 1 << 20
MAX_SEND_BYTES = 4 << 20


class EchoServicer(pb2_grpc.RecommenderServicer):
    """Canned replies with the real replies' shapes."""

    def __init__(self) -> None:
        """Start with an empty cache of canned replies."""
        self._replies: dict[int, pb2.RecommendResponse] = {}
        self._lock = threading.Lock()

    def _reply(self, k: int) -> pb2.RecommendResponse:
        reply = self._replies.get(k)
        if reply is None:
            items = [
                pb2.RecommendedItem(
                    item_id=f"v{i:07d}",
                    title="an echo title of a typical length",
                    category="echo",
                    logit=0.5,
                    probability=1.0 / max(k, 1),
                )
                for i in range(max(0, min(k, 1000)))
            ]
            reply = pb2.RecommendResponse(
                items=items,
                model_name="echo",
                model_version="v0000",
                num_candidates_scored=len(items),
                timings=pb2.StageTimings(),
            )
            with self._lock:
                self._replies[k] = reply
        return reply

    def Recommend(  # noqa: N802
        self, request: pb2.RecommendRequest, context: grpc.ServicerContext
    ) -> pb2.RecommendResponse:
        """The canned reply for ``request.k``."""
        return self._reply(request.k)

    def SimilarItems(  # noqa: N802
        self, request: pb2.SimilarItemsRequest, context: grpc.ServicerContext
    ) -> pb2.SimilarItemsResponse:
        """An empty reply."""
        return pb2.SimilarItemsResponse(model_name="echo", model_version="v0000")

    def GetModelInfo(  # noqa: N802
        self, request: pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> pb2.ModelInfo:
        """A canned model description."""
        return pb2.ModelInfo(model_name="echo", model_version="v0000")

    def RecordEvents(  # noqa: N802
        self, request: pb2.RecordEventsRequest, context: grpc.ServicerContext
    ) -> pb2.RecordEventsResponse:
        """Every event "recorded", nothing stored."""
        return pb2.RecordEventsResponse(recorded=len(request.events), profile_store="echo")


def make_echo_server(
    host: str = "127.0.0.1",
    port: int = 0,
    workers: int = DEFAULT_WORKERS,
    reuse_port: bool = False,
) -> tuple[grpc.Server, int]:
    """An unstarted echo server bound to ``host:port``, and the bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="echo"),
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )
    pb2_grpc.add_RecommenderServicer_to_server(EchoServicer(), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {host}:{port}: in use or not available") from exc
    return server, bound


@dataclass(frozen=True)
class ServerProcess:
    """A server running in a child process: where to call it, and its pid."""

    target: str
    pid: int


@contextmanager
def echo_server_process(
    workers: int = DEFAULT_WORKERS,
    startup_timeout_s: float = 30.0,
    processes: int = 1,
    pin_cpus: bool = False,
) -> Iterator[ServerProcess]:
    """Run an echo server in a child process (spawned, never forked) until the block ends.

    With ``processes > 1`` the child supervises that many echo replicas on one port (as
    ``recsys serve --processes``, and ``pin_cpus`` as its ``--pin-cpus``); ``pid`` is then
    the supervisor's.
    """
    with tempfile.TemporaryDirectory(prefix="recsys-echo-") as tmp:
        port_file = Path(tmp) / "port"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "recsys_serving.echo",
                "--workers",
                str(workers),
                "--processes",
                str(processes),
                *(["--pin-cpus"] if pin_cpus else []),
                "--port-file",
                str(port_file),
            ],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + startup_timeout_s
            while not port_file.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"the echo server exited with code {proc.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError("the echo server did not start in time")
                time.sleep(0.05)
            yield ServerProcess(f"127.0.0.1:{int(port_file.read_text())}", proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recsys_serving.echo``: run the echo server until SIGTERM / SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m recsys_serving.echo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"worker threads (default {DEFAULT_WORKERS}, as recsys serve)",
    )
    parser.add_argument("--port-file", type=Path, help="write the bound port to this file")
    parser.add_argument(
        "--processes",
        type=int,
        default=default_processes(),
        help="replicas on the port (default: one per usable CPU, as recsys serve)",
    )
    parser.add_argument(
        "--pin-cpus", action="store_true", help="replica i on CPU i (as recsys serve's)"
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.processes > 1:

        def replica(port: int, port_file: Path) -> list[str]:
            return [
                sys.executable,
                "-m",
                "recsys_serving.echo",
                f"--host={args.host}",
                f"--port={port}",
                f"--workers={args.workers}",
                f"--port-file={port_file}",
                "--reuse-port",
                "--processes=1",  # a replica never supervises replicas of its own
            ]

        return serve_replicas(
            replica,
            args.processes,
            args.host,
            args.port,
            args.port_file,
            1.0,
            pin_cpus=args.pin_cpus,
        )
    server, port = make_echo_server(args.host, args.port, args.workers, args.reuse_port)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    log.info("echo server listening on %s:%d", args.host, port)
    if args.port_file is not None:
        tmp = args.port_file.with_name(f".{args.port_file.name}.tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(args.port_file)
    while not stop.wait(0.5):
        pass
    server.stop(1.0).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

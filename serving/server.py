"""The gRPC server: Recommender + health + reflection, hot model reload, graceful stop.

One process serves one model name from ``artifacts/<name>/``. A watcher thread polls
``LATEST``; a new version is loaded beside the served one, verified (sha256 of every file,
then a probe query through every stage) and swapped in atomically; a version that fails
is refused, logged, and the old one keeps serving. Health says SERVING only while a model
is loaded. A second watcher applies the live catalog's changes (videos added or removed
through any replica, ``recsys.live.catalog``) every :data:`LIVE_POLL_S`. SIGTERM / SIGINT:
NOT_SERVING first (load balancers drain), then the server
stops accepting calls and lets running ones finish within the grace period.

Sizing for 2 cores (measured, see benchmarks/bench_serving.py): Python holds the GIL for
most of a request, so 8 worker threads are enough to keep concurrent queries batching in the
query tower, and more only queue. TensorFlow runs the tower in the calling thread (inter-op
-1: no hand-off to a pool thread, whose wake-up costs more than the tiny tower) with one
intra-op thread, so TensorFlow never spins threads against ScaNN, numpy and gRPC. After each
load the heap is frozen out of the cyclic GC (a full collection over a loaded 1M-video model
takes ~0.5 s with the GIL held).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from recsys.artifact.versions import ArtifactError, resolve_version
from recsys.inference.recommender import Recommender
from recsys.inference.request import ModelLoadError, RecommenderOptions
from recsys.live.catalog import catalog_path
from recsys.live.profile_store import Caps, ProfileStore, ProfileStoreError
from recsys.live.registry import EMBEDDED, default_store_path, open_profile_store
from recsys_serving.options import DEFAULT_WORKERS, PROFILE_STORE_ENV, add_arguments
from recsys_serving.proto import SERVICE_NAME
from recsys_serving.replicas import SUPERVISOR_ENV, die_with_parent, serve_replicas
from recsys_serving.servicer import ModelSlot, RecommenderServicer, add_to_server

log = logging.getLogger(__name__)

# How often each process reads the live catalog's new changes (other replicas' additions).
LIVE_POLL_S = 0.5

MiB = 1 << 20


@dataclass(frozen=True)
class ServerConfig:
    """How to run the server; the defaults are the ones measured on 2 cores."""

    artifacts: Path
    name: str
    host: str = "127.0.0.1"
    port: int = 0  # 0: the OS picks a free port (see RecommenderServer.port)
    workers: int = DEFAULT_WORKERS
    max_concurrent_rpcs: int = 256  # beyond this, calls fail fast with RESOURCE_EXHAUSTED
    reload_interval_s: float = 5.0
    grace_s: float = 10.0
    max_receive_bytes: int = 1 * MiB  # a maximal valid request is ~150 KB
    max_send_bytes: int = 4 * MiB  # 1000 items are ~100 KB
    tf_intra_op_threads: int = 1
    # -1: TensorFlow runs ops in the calling thread (no hand-off to a pool thread, whose
    # wake-up costs more than the tiny query tower on a busy 2-core machine)
    tf_inter_op_threads: int = -1
    options: RecommenderOptions = field(default_factory=RecommenderOptions)
    # >1: that many server processes share the port (recsys_serving.replicas); in-process
    # use serves one, `recsys serve` one per usable CPU (recsys_serving.options)
    processes: int = 1
    pin_cpus: bool = False  # with processes > 1: replica i on CPU i (recsys_serving.replicas)
    reuse_port: bool = False  # set in each replica: share the port the supervisor reserved
    # users' live events: "embedded" (SQLite in <artifacts>/<name>/live/), "sqlite:PATH",
    # "redis://host:port/db" or "none" (recsys.live.registry)
    profile_store: str = EMBEDDED

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.workers <= 0:
            raise ValueError(f"workers must be positive, got {self.workers}")
        if self.processes <= 0:
            raise ValueError(f"processes must be positive, got {self.processes}")
        if self.reload_interval_s <= 0:
            raise ValueError(f"reload interval must be positive, got {self.reload_interval_s}")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """A ServerConfig from parsed :func:`add_arguments` options."""
    return ServerConfig(
        artifacts=args.artifacts,
        name=args.name,
        host=args.host,
        port=args.port,
        workers=args.workers,
        reload_interval_s=args.reload_interval,
        grace_s=args.grace,
        tf_intra_op_threads=args.tf_intra_op_threads,
        tf_inter_op_threads=args.tf_inter_op_threads,
        options=RecommenderOptions(
            max_batch=args.max_batch,
            tower_runtime=args.tower_runtime,
            leaves_to_search=args.leaves_to_search,
            reorder_k=args.reorder_k,
        ),
        processes=args.processes,
        pin_cpus=args.pin_cpus,
        reuse_port=args.reuse_port,
        profile_store=args.profile_store,
    )


def configure_tensorflow_threads(intra_op: int, inter_op: int) -> None:
    """Size TensorFlow's thread pools; must run before TensorFlow executes anything."""
    import tensorflow as tf  # only when a server starts (ServerConfig, replica_command: without)

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:  # TensorFlow already initialised in this process (tests, notebooks)
        log.warning(
            "TensorFlow is already initialised: thread pools stay at intra %d, inter %d",
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        )


class RecommenderServer:
    """A running server: ``start()``, ``reload_now()``, ``stop()``; see the module docstring."""

    def __init__(
        self, config: ServerConfig, servicer: type[RecommenderServicer] = RecommenderServicer
    ) -> None:
        """Create (not start) the server for ``config`` (``servicer``: benchmarks' variants)."""
        self.config = config
        self._servicer = servicer
        self.model_dir = Path(config.artifacts) / config.name
        self.slot = ModelSlot()
        self.store = open_store(config)
        self._health = health.HealthServicer()
        self._server = self._configure_server()
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None
        self._live_watcher: threading.Thread | None = None
        self._refused: dict[str, int] = {}  # version -> manifest mtime when refused
        self._reload_lock = threading.Lock()
        self._last_problem = ""
        self.port = 0

    def _configure_server(self) -> grpc.Server:
        config = self.config
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc"),
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", config.max_receive_bytes),
                ("grpc.max_send_message_length", config.max_send_bytes),
                # A taken port is an error, not a silent share, except among our replicas.
                ("grpc.so_reuseport", 1 if config.reuse_port else 0),
            ],
        )
        add_to_server(self._servicer(self.slot, self.store), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self._set_health(False)
        return server

    def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE_NAME):
            self._health.set(service, status)

    def start(self, load_first: bool = True) -> int:
        """Bind, start serving and watching ``LATEST``; returns the bound port.

        With ``load_first`` the current version is loaded before returning (a failure is
        logged and the server starts NOT_SERVING, waiting for a good version).
        """
        configure_tensorflow_threads(
            self.config.tf_intra_op_threads, self.config.tf_inter_op_threads
        )
        address = f"{self.config.host}:{self.config.port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc's way of saying the bind failed
            raise OSError(f"cannot listen on {address}: in use or not available") from exc
        self._server.start()
        log.info(
            "listening on %s:%d (%d workers)", self.config.host, self.port, self.config.workers
        )
        if load_first:
            self.reload_now()
        self._watcher = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._watcher.start()
        self._live_watcher = threading.Thread(
            target=self._watch_live, name="live-catalog-watcher", daemon=True
        )
        self._live_watcher.start()
        return self.port

    def _watch_live(self) -> None:
        """Apply the live catalog's changes other processes log, every LIVE_POLL_S."""
        while not self._stopped.wait(LIVE_POLL_S):
            model = self.slot.get()
            try:
                if model is not None:
                    model.refresh_live()
            except Exception:  # the watcher must outlive any surprise
                log.exception("live catalog watcher: unexpected error")

    def _watch(self) -> None:
        while not self._stopped.wait(self.config.reload_interval_s):
            try:
                self.reload_now()
            except Exception:  # the watcher must outlive any surprise
                log.exception("model watcher: unexpected error")

    def reload_now(self) -> bool:
        """Load the version ``LATEST`` names if it is new; True when a swap happened."""
        with self._reload_lock:
            current = self.slot.get()
            try:
                version_dir = resolve_version(self.model_dir)
            except ArtifactError as exc:
                if str(exc) != self._last_problem:  # once, not at every poll
                    keeps = f"still serving {current.version}" if current else "not serving"
                    log.error("no version to load: %s (%s)", exc, keeps)
                self._last_problem = str(exc)
                return False
            self._last_problem = ""
            if current is not None and current.path == version_dir:
                return False
            stamp = _mtime_ns(version_dir / "manifest.json")
            if self._refused.get(version_dir.name) == stamp:
                return False
            started = time.perf_counter()
            try:
                model = Recommender.load(
                    version_dir, self.config.options, live_catalog=catalog_path(self.model_dir)
                )
            except ModelLoadError as exc:
                self._refused[version_dir.name] = stamp
                keeps = f"still serving {current.version}" if current else "not serving"
                log.error("refused model version %s: %s (%s)", version_dir.name, exc, keeps)
                return False
            old = self.slot.swap(model)
            self._set_health(True)
            log.info(
                "now serving %s/%s (was %s; loaded and verified in %.1f s)",
                model.name,
                model.version,
                old.version if old else "none",
                time.perf_counter() - started,
            )
            del old, model
            self._freeze_heap()
            return True

    def _freeze_heap(self) -> None:
        """Collect the old model, then exempt everything alive from the cyclic GC.

        A loaded model holds millions of references (vocabularies, catalog ids); a full
        collection walks them all, ~0.5 s with the GIL held, stalling every call. Frozen
        objects are still freed by reference counting; the collection before freezing
        (after calls that may still hold the old model have had time to finish) frees the
        old model's reference cycles.
        """
        if self._stopped.wait(min(1.0, self.config.grace_s)):
            return
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        log.info(
            "froze %d objects out of the cyclic GC in %.2f s",
            gc.get_freeze_count(),
            time.perf_counter() - started,
        )

    def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, stop accepting calls, let running ones finish within the grace."""
        grace = self.config.grace_s if grace_s is None else grace_s
        self._stopped.set()
        self._set_health(False)
        self._health.enter_graceful_shutdown()
        log.info("stopping: draining calls for up to %.1f s", grace)
        self._server.stop(grace).wait()
        model = self.slot.get()
        if model is not None:
            tower = model.tower_batcher
            log.info(
                "query tower: %d calls for %d queries (mean batch %.2f)",
                tower.calls,
                tower.queries,
                tower.queries / max(tower.calls, 1),
            )
        if self._watcher is not None:
            self._watcher.join(timeout=max(grace, 1.0))
        if self.store is not None:
            self.store.close()
        log.info("stopped")

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the server stops (or the timeout); True when it stopped."""
        return not self._server.wait_for_termination(timeout_s)


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def open_store(config: ServerConfig) -> ProfileStore | None:
    """The profile store ``config`` names; ProfileStoreError when the URL or file is wrong."""
    return open_profile_store(
        config.profile_store, default_store_path(config.artifacts, config.name), Caps()
    )


def check_profile_store(config: ServerConfig) -> None:
    """Open and close the store once (creating the embedded one), so its errors come first."""
    store = open_store(config)
    if store is not None:
        store.close()


def serve(config: ServerConfig, port_file: Path | None = None) -> None:
    """Run the server until SIGTERM or SIGINT, then stop gracefully (main thread only).

    ``port_file``: written (atomically) with the bound port once the server listens, for
    callers that asked for port 0. With ``config.processes > 1`` this process supervises
    that many replica processes on one port instead (:mod:`recsys_serving.replicas`).
    """
    if config.processes > 1:
        check_profile_store(config)  # a bad URL: one clear error, not one per replica
        # Replicas inherit the store's URL from the environment, not from a command line
        # every user of the host can read (it may hold a password).
        os.environ[PROFILE_STORE_ENV] = config.profile_store
        code = serve_replicas(
            lambda port, replica_port_file: replica_command(config, port, replica_port_file),
            config.processes,
            config.host,
            config.port,
            port_file,
            config.grace_s,
            pin_cpus=config.pin_cpus,
        )
        if code != 0:
            raise RuntimeError("the server replicas failed; see the log above")
        return
    if config.pin_cpus:
        log.info("--pin-cpus applies to --processes > 1; one process keeps every CPU")
    server = RecommenderServer(config)
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop_requested.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        port = server.start()
        if port_file is not None:
            tmp = port_file.with_name(f".{port_file.name}.tmp")
            tmp.write_text(f"{port}\n")
            tmp.replace(port_file)
        while not stop_requested.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def replica_command(config: ServerConfig, port: int, port_file: Path) -> list[str]:
    """The command line of one replica of ``config`` on the shared ``port``."""
    options = config.options
    return [
        sys.executable,
        "-m",
        "recsys_serving.server",
        f"--artifacts={config.artifacts}",
        f"--name={config.name}",
        f"--host={config.host}",
        f"--port={port}",
        "--reuse-port",
        "--processes=1",  # a replica serves; it never supervises replicas of its own
        f"--port-file={port_file}",
        f"--workers={config.workers}",
        f"--reload-interval={config.reload_interval_s}",
        f"--grace={config.grace_s}",
        f"--max-batch={options.max_batch}",
        f"--tower-runtime={options.tower_runtime}",
        *([f"--leaves-to-search={options.leaves_to_search}"] if options.leaves_to_search else []),
        *([f"--reorder-k={options.reorder_k}"] if options.reorder_k else []),
        f"--tf-intra-op-threads={config.tf_intra_op_threads}",
        f"--tf-inter-op-threads={config.tf_inter_op_threads}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recsys_serving.server``: the server without the ``recsys`` CLI."""
    parser = argparse.ArgumentParser(
        prog="python -m recsys_serving.server", description="Serve a model over gRPC."
    )
    add_arguments(parser, default_port=0)
    args = parser.parse_args(argv)
    replica = " [pid %(process)d]" if args.reuse_port else ""
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s %(name)s{replica}: %(message)s"
    )
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if args.reuse_port and supervisor:
        die_with_parent(int(supervisor))
    try:
        serve(config_from_args(args), port_file=args.port_file)
    except (OSError, RuntimeError, ProfileStoreError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

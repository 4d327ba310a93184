"""Several server processes on one port: one GIL each, the kernel spreads the connections.

A Python gRPC server runs its handlers under one GIL, so one process uses about one core
however many threads it has. :func:`serve_replicas` starts ``processes`` copies of a server
command, each binding the same ``host:port`` with ``SO_REUSEPORT``; the kernel hands each
new connection to one of them (so a client needs several connections to use them all, as a
fleet of clients has). Each replica loads, verifies and hot-reloads the model on its own:
they are stateless replicas, the way serving scales out, here on one host.

The supervisor reserves the port first (a bound, never-listening socket with
``SO_REUSEPORT``, so port 0 works and nobody else takes the port meanwhile), writes the port
file once every replica listens, forwards SIGTERM / SIGINT for a graceful stop, and restarts a
replica that dies, unless replicas keep dying (then it stops them all and fails).

With ``pin_cpus``, replica ``i`` runs on the ``i``-th of the CPUs the supervisor may use
(round robin when there are more replicas than CPUs), set as soon as it is spawned, before
it starts any thread: each replica's caches then hold its own model, instead of both
replicas' threads migrating between cores (measured: +18% calls/s at 2 processes on 2 cores,
see BENCHMARKS.md). A restarted replica keeps its CPU.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

ChildCommand = Callable[[int, Path], list[str]]  # (port, port file) -> argv
MAX_RESTARTS = 3  # within RESTART_WINDOW_S; one more death stops the service
RESTART_WINDOW_S = 60.0
SUPERVISOR_ENV = "RECSYS_SUPERVISOR_PID"  # tells a replica whose death to follow


class ReplicaError(RuntimeError):
    """The replicas could not start, or kept dying."""


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound (not listening) socket holding ``host:port`` with SO_REUSEPORT; 0: any port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot reserve {host}:{port} ({exc.strerror})") from exc
    return sock


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def die_with_parent(parent: int) -> None:
    """In a replica: get SIGTERM when the supervisor ``parent`` dies, even by ``kill -9``.

    Otherwise replicas outlive a killed supervisor and keep the port. Linux's
    ``PR_SET_PDEATHSIG``; elsewhere (or if the supervisor is already gone) nothing is set.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning(
            "cannot ask for SIGTERM on the supervisor's death (errno %d)", ctypes.get_errno()
        )
    if os.getppid() != parent:  # it died before the request: nobody will send the signal
        os.kill(os.getpid(), signal.SIGTERM)


def replica_cpus(processes: int) -> list[int]:
    """The CPU each of ``processes`` replicas is pinned to: this process's CPUs, round robin."""
    allowed = sorted(os.sched_getaffinity(0))
    return [allowed[i % len(allowed)] for i in range(processes)]


class _Replica:
    def __init__(self, index: int, command: list[str], port_file: Path, cpu: int | None) -> None:
        self.index = index
        self.port_file = port_file
        port_file.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", SUPERVISOR_ENV: str(os.getpid())}
        self.proc = subprocess.Popen(command, env=env)
        where = ""
        if cpu is not None:
            # The child has only just exec'd the interpreter (Popen returns once exec
            # succeeded): its threads, all started later, inherit the mask.
            try:
                os.sched_setaffinity(self.proc.pid, {cpu})
                where = f" on CPU {cpu}"
            except OSError as exc:  # it died at once; check() sees to it
                log.error("replica %d: cannot pin to CPU %d (%s)", index, cpu, exc.strerror)
        log.info("replica %d started (pid %d)%s", index, self.proc.pid, where)


class ReplicaSet:
    """``processes`` replicas of a server command on one reserved port (see the module)."""

    def __init__(
        self,
        command: ChildCommand,
        processes: int,
        host: str = "127.0.0.1",
        port: int = 0,
        grace_s: float = 10.0,
        startup_timeout_s: float = 900.0,
        pin_cpus: bool = False,
    ) -> None:
        """Prepare (not start) ``processes`` replicas of ``command(port, port_file)``."""
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.cpus: list[int] | None = replica_cpus(processes) if pin_cpus else None
        self._command = command
        self.processes = processes
        self.host = host
        self.grace_s = grace_s
        self.startup_timeout_s = startup_timeout_s
        self._reservation = reserve_port(host, port)
        self.port = int(self._reservation.getsockname()[1])
        self._tmp = tempfile.TemporaryDirectory(prefix="recsys-replicas-")
        self._replicas: list[_Replica] = []
        self._deaths: list[float] = []
        self._stopping = threading.Event()

    def _spawn(self, index: int) -> _Replica:
        port_file = Path(self._tmp.name) / f"replica-{index}.port"
        cpu = None if self.cpus is None else self.cpus[index]
        return _Replica(index, self._command(self.port, port_file), port_file, cpu)

    def pids(self) -> list[int]:
        """The replicas' process ids."""
        return [r.proc.pid for r in self._replicas]

    def start(self) -> None:
        """Start every replica and wait until each listens; ReplicaError if one fails."""
        self._replicas = [self._spawn(i) for i in range(self.processes)]
        deadline = time.monotonic() + self.startup_timeout_s
        for replica in self._replicas:
            while not replica.port_file.exists():
                code = replica.proc.poll()
                if code is not None or time.monotonic() > deadline:
                    self.stop()
                    why = f"exited with code {code}" if code is not None else "timed out"
                    raise ReplicaError(f"replica {replica.index} did not start: {why}")
                time.sleep(0.05)
        log.info("%d replicas listening on %s:%d", self.processes, self.host, self.port)

    def check(self) -> None:
        """Restart replicas that died; ReplicaError once they die too often."""
        if self._stopping.is_set():
            return
        for i, replica in enumerate(self._replicas):
            code = replica.proc.poll()
            if code is None:
                continue
            now = time.monotonic()
            self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW_S] + [now]
            if len(self._deaths) > MAX_RESTARTS:
                self.stop()
                raise ReplicaError(
                    f"replicas died {len(self._deaths)} times in {RESTART_WINDOW_S:.0f} s "
                    f"(last: replica {replica.index}, exit code {code}); stopped"
                )
            log.error(
                "replica %d (pid %d) exited with code %d: restarting", i, replica.proc.pid, code
            )
            self._replicas[i] = self._spawn(replica.index)

    def stop(self) -> None:
        """SIGTERM every replica, wait out the grace period, then kill what is left."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for replica in self._replicas:
            if replica.proc.poll() is None:
                replica.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s + 10.0
        for replica in self._replicas:
            try:
                replica.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("replica %d did not stop in time: killing it", replica.index)
                replica.proc.kill()
                replica.proc.wait()
        self._reservation.close()
        self._tmp.cleanup()


def serve_replicas(
    command: ChildCommand,
    processes: int,
    host: str,
    port: int,
    port_file: Path | None = None,
    grace_s: float = 10.0,
    pin_cpus: bool = False,
) -> int:
    """Run replicas until SIGTERM / SIGINT (main thread only); 0 after a clean stop, else 1."""
    replicas = ReplicaSet(command, processes, host, port, grace_s, pin_cpus=pin_cpus)
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping %d replicas", signal.Signals(signum).name, processes)
        stop_requested.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        replicas.start()
        if port_file is not None:
            _write_atomically(port_file, f"{replicas.port}\n")
        while not stop_requested.wait(0.5):
            replicas.check()
        return 0
    except ReplicaError as exc:
        log.error("%s", exc)
        return 1
    finally:
        replicas.stop()  # idempotent
        for sig, handler in previous.items():
            signal.signal(sig, handler)

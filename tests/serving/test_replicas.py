"""Several server processes on one port: all answer, a dead one is replaced, SIGTERM stops all."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from recsys.features.context import RequestContext
from recsys.inference.recommender import Recommender
from recsys_serving.proto import pb2, pb2_grpc
from recsys_serving.replicas import ReplicaError, ReplicaSet, reserve_port

REQUEST_TIME = 1_800_000_000


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.update(int(c) for c in (task / "children").read_text().split())
    return found


def _wait_for(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_two_replicas_share_the_port_and_answer_like_the_library(
    trained_artifact: Path, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(
        trained_artifact.parent,
        artifacts / "tiny",
        ignore=shutil.ignore_patterns(".work", ".tmp-*"),
    )
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recsys_serving.server",
            f"--artifacts={artifacts}",
            "--name=tiny",
            "--processes=2",
            f"--port-file={port_file}",
            "--grace=2",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        _wait_for(lambda: port_file.exists() or proc.poll() is not None, 300, "the port file")
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        replicas = _children(proc.pid)
        assert len(replicas) == 2
        target = f"127.0.0.1:{port_file.read_text().strip()}"
        library = Recommender.load(trained_artifact)
        assert library.profiles is not None
        users = [library.profiles.user_id_at(row) for row in range(12)]

        def call_everyone() -> None:
            # One connection per channel (local subchannel pools): the kernel spreads them.
            for user in users:
                options = [("grpc.use_local_subchannel_pool", 1)]
                with grpc.insecure_channel(target, options=options) as channel:
                    stub = pb2_grpc.RecommenderStub(channel)
                    request = pb2.RecommendRequest(user_id=user, k=5, request_time=REQUEST_TIME)
                    reply = stub.Recommend(request, timeout=30)
                want = library.recommend(RequestContext(request_time=REQUEST_TIME), user, 5)
                assert [i.item_id for i in reply.items] == [i.item_id for i in want.items]

        call_everyone()
        victim = min(replicas)
        os.kill(victim, signal.SIGKILL)  # a crashed replica is replaced
        _wait_for(lambda: len(_children(proc.pid) - {victim}) == 2, 300, "a new replica")
        # the new replica needs its model before it listens; the survivor serves meanwhile
        call_everyone()
        survivors = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    assert "restarting" in stderr
    assert not any(_alive(pid) for pid in survivors)


def test_replicas_that_keep_dying_stop_the_service(tmp_path: Path) -> None:
    script = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text('x'); sys.exit(3)"
    replicas = ReplicaSet(lambda port, pf: [sys.executable, "-c", script, str(pf)], 2)
    replicas.start()  # they "listen" (write their port files), then die

    def supervise(timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            replicas.check()
            time.sleep(0.1)

    with pytest.raises(ReplicaError, match="replicas died 4 times"):
        supervise(60)
    assert not any(_alive(pid) for pid in replicas.pids())  # stop() reaped every replica


_REPORT_CPUS = """
import os, pathlib, sys, threading, time
time.sleep(0.2)
worker = threading.Thread(target=time.sleep, args=(5,), daemon=True)
worker.start()  # a thread started by the replica itself must inherit the pin
cpus = set()
for status in pathlib.Path("/proc/self/task").glob("*/status"):
    line = next(x for x in status.read_text().splitlines() if x.startswith("Cpus_allowed_list"))
    cpus.add(line.split()[1])
pathlib.Path(sys.argv[1]).write_text(",".join(sorted(cpus)))
time.sleep(30)
"""


def test_pinned_replicas_run_each_on_its_own_cpu_and_keep_it_after_a_restart(
    tmp_path: Path,
) -> None:
    from recsys_serving.replicas import replica_cpus

    allowed = sorted(os.sched_getaffinity(0))
    expected = [allowed[i % len(allowed)] for i in range(3)]
    assert replica_cpus(3) == expected
    replicas = ReplicaSet(
        lambda port, pf: [sys.executable, "-c", _REPORT_CPUS, str(pf)], 3, pin_cpus=True
    )
    assert replicas.cpus == expected
    try:
        replicas.start()

        def reported(i: int) -> str:
            path = Path(replicas._tmp.name) / f"replica-{i}.port"
            return path.read_text() if path.exists() else ""

        _wait_for(lambda: all(reported(i) for i in range(3)), 30, "the replicas' reports")
        # every thread of replica i, the main one and the one it started, on CPU i only
        assert [reported(i) for i in range(3)] == [str(c) for c in expected]
        first = replicas.pids()[0]
        os.kill(first, signal.SIGKILL)
        _wait_for(lambda: not _alive(first), 10, "the killed replica to die")

        def restarted() -> bool:
            # The supervisor's loop: a killed process can show as a zombie (its main thread
            # gone) a moment before its other threads are and waitpid reports it.
            replicas.check()  # restarts replica 0 on the same CPU
            return replicas.pids()[0] != first

        _wait_for(restarted, 10, "replica 0 to be restarted")
        _wait_for(lambda: bool(reported(0)), 30, "the restarted replica's report")
        assert reported(0) == str(expected[0])
    finally:
        replicas.stop()


def test_unpinned_replicas_keep_every_cpu() -> None:
    replicas = ReplicaSet(lambda port, pf: [sys.executable, "-c", _REPORT_CPUS, str(pf)], 1)
    assert replicas.cpus is None
    own = next(
        line.split()[1]
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("Cpus_allowed_list")
    )
    try:
        replicas.start()
        report = Path(replicas._tmp.name) / "replica-0.port"
        _wait_for(lambda: bool(report.read_text()), 30, "the replica's report")
        assert report.read_text() == own
    finally:
        replicas.stop()


def test_a_port_in_use_without_reuse_is_a_clear_error() -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(OSError, match=r"cannot reserve 127\.0\.0\.1:\d+"):
            reserve_port("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_serve_options_name_the_libraries_tower_runtimes() -> None:
    from recsys.inference.query_tower import RUNTIMES
    from recsys_serving.options import TOWER_RUNTIMES

    assert TOWER_RUNTIMES == RUNTIMES


def test_serve_runs_one_process_per_usable_cpu_by_default(tmp_path: Path) -> None:
    import argparse
    import math
    import os

    from recsys_serving.options import add_arguments
    from recsys_serving.server import config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--artifacts", str(tmp_path), "--name=m"]))
    from recsys_serving.options import cgroup_cpu_quota

    quota = cgroup_cpu_quota()
    cpus = len(os.sched_getaffinity(0))
    assert config.processes == (cpus if quota is None else min(cpus, max(1, math.ceil(quota))))
    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--artifacts", str(tmp_path), "--name=m", f"--processes={bad}"])


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_a_cgroup_cpu_quota_is_read_from_v2_or_v1(
    tmp_path: Path, files: dict[str, str], quota: float | None
) -> None:
    from recsys_serving.options import cgroup_cpu_quota

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_quota(tmp_path) == quota


def test_replica_command_round_trips_through_the_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from recsys_serving.options import add_arguments
    from recsys_serving.server import ServerConfig, config_from_args, replica_command

    parser = argparse.ArgumentParser()
    add_arguments(parser, default_port=0)
    config = config_from_args(
        parser.parse_args(
            [
                "--artifacts",
                str(tmp_path),
                "--name=m",
                "--processes=3",
                "--workers=2",
                "--tower-runtime=savedmodel",
                "--max-batch=4",
                "--leaves-to-search=7",
                "--reorder-k=300",
                "--grace=3",
                "--pin-cpus",
                "--profile-store=redis://:secret@127.0.0.1:6379/2",
            ]
        )
    )
    assert isinstance(config, ServerConfig)
    assert config.pin_cpus
    assert (config.options.leaves_to_search, config.options.reorder_k) == (7, 300)
    argv = replica_command(config, 4321, tmp_path / "p")[3:]  # after python -m module
    replica = config_from_args(parser.parse_args(argv))
    assert replica.port == 4321
    assert replica.reuse_port
    assert replica.processes == 1  # a replica never supervises replicas of its own
    assert not replica.pin_cpus  # the supervisor pins its replicas
    for field in ("artifacts", "name", "host", "workers", "grace_s", "options"):
        assert getattr(replica, field) == getattr(config, field), field
    # The store's URL (a password) reaches replicas through the environment, never argv.
    assert not any("secret" in arg for arg in argv)
    monkeypatch.setenv("RECSYS_PROFILE_STORE", config.profile_store)
    fresh = argparse.ArgumentParser()
    add_arguments(fresh, default_port=0)
    assert config_from_args(fresh.parse_args(argv)).profile_store == config.profile_store

"""Profile stores for the tests: embedded SQLite in a temp folder, and the machine's Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from recsys.live.profile_store import Caps, ProfileStore
from recsys.live.redis_profiles import RedisProfileStore
from recsys.live.sqlite_profiles import SQLiteProfileStore

REDIS_URL = "redis://127.0.0.1:6379/0"  # started before every session and CI run

StoreFactory = Callable[[Caps], ProfileStore]


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens stores of one backend; a Redis store gets its own key prefix, removed after."""
    prefix = f"recsys-test:{uuid.uuid4().hex}"
    opened: list[ProfileStore] = []

    def make(caps: Caps) -> ProfileStore:
        store: ProfileStore
        if request.param == "sqlite":
            store = SQLiteProfileStore(tmp_path / "live" / "profiles.sqlite3", caps)
        else:
            store = RedisProfileStore(REDIS_URL, caps, prefix=prefix)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
    if request.param == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of the test's own on a free port, stopped and started at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed on this machine")
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()

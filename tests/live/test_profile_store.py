"""Both profile stores, for real: SQLite on disk and the machine's Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from recsys.live import redis_profiles
from recsys.live.events import Demographics, Event
from recsys.live.profile_store import Caps, ProfileStoreError, ProfileStoreUnavailableError
from recsys.live.redis_profiles import RedisProfileStore
from recsys.live.registry import DISABLED, EMBEDDED, open_profile_store
from recsys.live.sqlite_profiles import SQLiteProfileStore
from tests.live.conftest import RedisServer, StoreFactory


def watches(user: str, times: range, prefix: str = "v") -> list[Event]:
    return [Event(user, t, "watch", video_id=f"{prefix}{t}") for t in times]


def test_record_then_get_oldest_first_with_demographics(make_store: StoreFactory) -> None:
    store = make_store(Caps(50, 50))
    batch = [
        Event("u1", 300, "watch", video_id="c"),
        Event("u1", 100, "watch", video_id="a"),
        Event("u1", 200, "search", query="jazz piano"),
        Event("u2", 150, "watch", video_id="b"),
    ]
    result = store.record(batch, [Demographics("u1", country="US", age=33)])
    assert (result.recorded, result.duplicates, result.users) == (4, 0, 1)
    u1 = store.get("u1")
    assert u1.watches == ((100, "a"), (300, "c"))
    assert u1.searches == ((200, "jazz piano"),)
    assert u1.demographics == Demographics("u1", country="US", age=33)
    assert store.get("u2").watches == ((150, "b"),)
    assert store.get("nobody").empty


def test_exact_duplicates_are_ignored_and_rewatches_kept(make_store: StoreFactory) -> None:
    store = make_store(Caps(50, 50))
    first = [Event("u1", 100, "watch", video_id="a"), Event("u1", 100, "search", query="q")]
    assert store.record(first, []).recorded == 2
    again = [
        *first,
        Event("u1", 100, "watch", video_id="a"),
        Event("u1", 101, "watch", video_id="a"),
    ]
    result = store.record(again, [])
    assert (result.recorded, result.duplicates) == (1, 3)  # only the rewatch at 101 is new
    assert store.get("u1").watches == ((100, "a"), (101, "a"))


def test_each_user_keeps_the_last_max_history_watches_and_max_searches(
    make_store: StoreFactory,
) -> None:
    store = make_store(Caps(max_history=3, max_searches=2))
    store.record(watches("u1", range(100, 110)), [])
    store.record([Event("u1", t, "search", query=f"q{t}") for t in range(5)], [])
    store.record(watches("u1", range(50, 52)), [])  # older than what is kept: trimmed again
    profile = store.get("u1")
    assert profile.watches == ((107, "v107"), (108, "v108"), (109, "v109"))
    assert profile.searches == ((3, "q3"), (4, "q4"))


def test_newer_demographics_replace_field_by_field(make_store: StoreFactory) -> None:
    store = make_store(Caps())
    store.record([], [Demographics("u1", country="US", age=30, gender="m")])
    store.record([], [Demographics("u1", age=31)])
    assert store.get("u1").demographics == Demographics("u1", "US", None, 31, "m")


def test_concurrent_writers_lose_nothing(make_store: StoreFactory) -> None:
    store = make_store(Caps(max_history=1000))

    def write(thread: int) -> None:
        for batch in range(10):
            start = thread * 1000 + batch * 10
            store.record(watches("u1", range(start, start + 10)), [])

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.get("u1").watches) == 4 * 10 * 10


def test_sqlite_batch_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteProfileStore(tmp_path / "p.sqlite3", Caps())
    store.record(watches("u1", range(3)), [])

    def fail(*args: object) -> None:
        raise RuntimeError("disk gone mid-batch")

    monkeypatch.setattr(SQLiteProfileStore, "_trim", staticmethod(fail))  # after the inserts
    with pytest.raises(RuntimeError, match="mid-batch"):
        store.record(watches("u1", range(10, 20)) + watches("u2", range(5)), [])
    monkeypatch.undo()
    assert len(store.get("u1").watches) == 3  # the failed batch left nothing behind
    assert store.get("u2").empty
    store.close()


def test_sqlite_acknowledged_batches_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite3"
    writer = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from recsys.live.events import Event
        from recsys.live.profile_store import Caps
        from recsys.live.sqlite_profiles import SQLiteProfileStore
        store = SQLiteProfileStore(Path({str(path)!r}), Caps(max_history=1000))
        for batch in range(20):
            events = [Event("u1", batch * 100 + i, "watch", video_id="v") for i in range(50)]
            store.record(events, [])
            print(batch, flush=True)  # acknowledged
        time.sleep(60)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    assert process.stdout is not None
    acknowledged = [process.stdout.readline() for _ in range(20)]
    assert acknowledged[-1].strip() == "19"
    process.kill()  # SIGKILL: no cleanup, no close
    process.wait()
    store = SQLiteProfileStore(path, Caps(max_history=1000))
    assert len(store.get("u1").watches) == 20 * 50
    store.close()


def test_redis_outage_is_unavailable_then_recovers(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_profiles, "RETRY_AFTER_S", 0.2)
    store = RedisProfileStore(own_redis.url, Caps())
    store.record(watches("u1", range(3)), [])
    own_redis.stop()
    with pytest.raises(ProfileStoreUnavailableError):
        store.record(watches("u1", range(10, 12)), [])
    started = time.monotonic()
    with pytest.raises(ProfileStoreUnavailableError):
        store.get("u1")  # within RETRY_AFTER_S: refused at once, Redis is not tried
    assert time.monotonic() - started < 0.1
    own_redis.start()  # the same port; nothing kept (no persistence), so the store is empty
    time.sleep(0.25)
    store.record(watches("u1", range(20, 22)), [])
    assert store.get("u1").watches == ((20, "v20"), (21, "v21"))
    store.close()


def test_urls_choose_the_backend(tmp_path: Path) -> None:
    default = tmp_path / "live" / "profiles.sqlite3"
    store = open_profile_store(EMBEDDED, default, Caps())
    assert isinstance(store, SQLiteProfileStore)
    assert default.exists()
    store.close()
    assert open_profile_store(DISABLED, default, Caps()) is None
    other = open_profile_store(f"sqlite:{tmp_path / 'other.db'}", default, Caps())
    assert isinstance(other, SQLiteProfileStore)
    other.close()
    remote = open_profile_store("redis://:secret@127.0.0.1:6379/0", default, Caps())
    assert isinstance(remote, RedisProfileStore)
    assert "secret" not in remote.url
    remote.close()
    with pytest.raises(ProfileStoreError, match="is not one of"):
        open_profile_store("postgres://db", default, Caps())
    (tmp_path / "not-a-db").write_text("hello, not SQLite")
    with pytest.raises(ProfileStoreError, match="cannot open the profile store"):
        open_profile_store(f"sqlite:{tmp_path / 'not-a-db'}", default, Caps())

"""The embedded profile store: SQLite in WAL mode, one file on local disk, no server.

Every server process of a host opens the same file: WAL lets readers run beside the one
writer, and a batch is one ``BEGIN IMMEDIATE`` transaction, so it is stored whole or not at
all. ``synchronous=FULL`` makes a commit wait for the disk, so an acknowledged batch survives
``kill -9`` of the server and a crash of the machine alike. Each thread has its own connection
(sqlite3 connections are not shared between threads).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from recsys.dataset.schema import EVENT_WATCH
from recsys.live.events import Demographics, Event
from recsys.live.profile_store import (
    Caps,
    ProfileStore,
    ProfileStoreError,
    ProfileStoreUnavailableError,
    RecordResult,
)
from recsys.live.profiles import LiveProfile

log = logging.getLogger(__name__)

FORMAT = "1"
BUSY_TIMEOUT_S = 5.0  # how long a writer waits for another process's transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watches (
    user_id TEXT NOT NULL, time INTEGER NOT NULL, video_id TEXT NOT NULL,
    PRIMARY KEY (user_id, time, video_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS searches (
    user_id TEXT NOT NULL, time INTEGER NOT NULL, query TEXT NOT NULL,
    PRIMARY KEY (user_id, time, query)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY, country TEXT, region TEXT, age INTEGER, gender TEXT
) WITHOUT ROWID;
"""

# Keep a user's last `cap` events: delete those older than the cap-th newest (ties kept);
# ?2 is cap - 1.
_TRIM = """
DELETE FROM {table} WHERE user_id = ?1 AND time < (
    SELECT time FROM {table} WHERE user_id = ?1 ORDER BY time DESC LIMIT 1 OFFSET ?2
)
"""
_UPSERT_USER = """
INSERT INTO users (user_id, country, region, age, gender) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (user_id) DO UPDATE SET
    country = coalesce(excluded.country, country),
    region = coalesce(excluded.region, region),
    age = coalesce(excluded.age, age),
    gender = coalesce(excluded.gender, gender)
"""


class SQLiteProfileStore(ProfileStore):
    """Profiles in one SQLite file (created with its folder when missing)."""

    def __init__(self, path: Path, caps: Caps) -> None:
        """Open (or create) the store at ``path``; ProfileStoreError when it is not one."""
        self.path = Path(path)
        self.caps = caps
        self.url = f"sqlite:{self.path}"
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # One writer per process at a time: threads that queued on SQLite's own lock would
        # poll it with sleeps of up to 100 ms (its busy handler); here they wait on a mutex.
        self._write_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = self._connection()
            with connection:
                connection.executescript(_SCHEMA)
                connection.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('format', ?)", (FORMAT,)
                )
            found = connection.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise ProfileStoreError(f"{self.path}: cannot open the profile store ({exc})") from exc
        if found is None or found[0] != FORMAT:
            raise ProfileStoreError(
                f"{self.path}: profile store format {found!r}, expected {FORMAT!r}"
            )
        log.info("profile store: %s (SQLite, WAL)", self.path)

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        with self._write_lock:
            try:
                connection.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # locked past the busy timeout
                raise ProfileStoreUnavailableError(f"{self.path}: {exc}") from exc
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            try:
                connection.execute("COMMIT")
            except sqlite3.Error as exc:
                connection.execute("ROLLBACK")
                raise ProfileStoreUnavailableError(f"{self.path}: commit failed ({exc})") from exc

    def record(self, events: Sequence[Event], users: Sequence[Demographics]) -> RecordResult:
        """Store a checked batch in one transaction (see :class:`ProfileStore`)."""
        watches = [(e.user_id, e.time, e.video_id) for e in events if e.type == EVENT_WATCH]
        searches = [(e.user_id, e.time, e.query) for e in events if e.type != EVENT_WATCH]
        rows = [(u.user_id, u.country, u.region, u.age, u.gender) for u in users]
        try:
            with self._transaction() as db:
                before = db.total_changes
                db.executemany(
                    "INSERT OR IGNORE INTO watches (user_id, time, video_id) VALUES (?, ?, ?)",
                    watches,
                )
                db.executemany(
                    "INSERT OR IGNORE INTO searches (user_id, time, query) VALUES (?, ?, ?)",
                    searches,
                )
                recorded = db.total_changes - before
                db.executemany(_UPSERT_USER, rows)
                self._trim(db, "watches", {w[0] for w in watches}, self.caps.max_history)
                self._trim(db, "searches", {s[0] for s in searches}, self.caps.max_searches)
        except sqlite3.Error as exc:
            raise ProfileStoreUnavailableError(f"{self.path}: batch not stored ({exc})") from exc
        return RecordResult(recorded, len(events) - recorded, len(rows))

    @staticmethod
    def _trim(db: sqlite3.Connection, table: str, users: set[str], cap: int) -> None:
        if users:
            db.executemany(_TRIM.format(table=table), [(u, cap - 1) for u in sorted(users)])

    def get(self, user_id: str) -> LiveProfile:
        """The user's last watches and searches (oldest first) and demographics."""
        db = self._connection()
        try:
            watches = db.execute(
                "SELECT time, video_id FROM watches WHERE user_id = ? "
                "ORDER BY time DESC, video_id DESC LIMIT ?",
                (user_id, self.caps.max_history),
            ).fetchall()
            searches = db.execute(
                "SELECT time, query FROM searches WHERE user_id = ? "
                "ORDER BY time DESC, query DESC LIMIT ?",
                (user_id, self.caps.max_searches),
            ).fetchall()
            user = db.execute(
                "SELECT country, region, age, gender FROM users WHERE user_id = ?", (user_id,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise ProfileStoreUnavailableError(f"{self.path}: cannot read ({exc})") from exc
        return LiveProfile(
            watches=tuple(reversed(watches)),
            searches=tuple(reversed(searches)),
            demographics=None if user is None else Demographics(user_id, *user),
        )

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()

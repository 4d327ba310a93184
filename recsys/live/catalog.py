"""The live catalog: videos added or removed since the export, durable in one SQLite file.

``<artifacts>/<name>/live/catalog.sqlite3`` holds an append-only log of changes (an addition
with the video's raw metadata, or a removal), numbered by ``seq``, and beside it each
addition's candidate vector per model version that embedded it. A change is acknowledged
once its transaction has committed with ``synchronous=FULL`` in WAL mode: fsynced, so it
survives ``kill -9`` and a restart. Every server process opens the same file and reads the
changes after the last ``seq`` it has seen (WAL lets readers run beside the one writer), so
all replicas serve an addition without a restart. Raw metadata, not vocabulary ids, so the
log outlives model versions: a new version embeds the additions again with its own tower.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.dataset.schema import MIN_UPLOAD_TIME

LIVE_DIR = "live"
CATALOG_FILE = "catalog.sqlite3"
MAX_ID_LENGTH = 256
MAX_TEXT_LENGTH = 1_000
# Upload times up to a day ahead of the server's clock are accepted (clock skew).
_FUTURE_SLACK_S = 86_400

_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL,
    removed INTEGER NOT NULL,
    title TEXT, category TEXT, channel TEXT,
    upload_time INTEGER, duration REAL,
    content BLOB
);
CREATE TABLE IF NOT EXISTS vectors (
    seq INTEGER NOT NULL,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (seq, model)
);
"""


class LiveVideoError(ValueError):
    """A new video's metadata is unusable: names the video and the field."""


def catalog_path(model_dir: str | Path) -> Path:
    """The live catalog file of model folder ``artifacts/<name>/``."""
    return Path(model_dir) / LIVE_DIR / CATALOG_FILE


@dataclass(frozen=True)
class LiveVideo:
    """A new video's raw metadata, as a canonical items row holds it.

    ``content``: float32 ``[content_dim]`` or None (the model's tower then gets zeros).
    """

    item_id: str
    title: str
    category: str
    channel: str
    upload_time: int
    duration: float = 0.0
    content: np.ndarray | None = None


def check_video(video: LiveVideo, content_dim: int | None, now: int) -> LiveVideo:
    """``video`` with ``content`` as float32; LiveVideoError naming the video and field."""
    name = f"video {video.item_id!r}"
    if not video.item_id or "\x00" in video.item_id or len(video.item_id) > MAX_ID_LENGTH:
        raise LiveVideoError(f"{name}: item_id must be 1..{MAX_ID_LENGTH} characters without NUL")
    for field in ("title", "category", "channel"):
        value = getattr(video, field)
        if "\x00" in value or len(value) > MAX_TEXT_LENGTH:
            raise LiveVideoError(
                f"{name}: {field} must be at most {MAX_TEXT_LENGTH} characters without NUL"
            )
    latest = now + _FUTURE_SLACK_S
    if not MIN_UPLOAD_TIME <= video.upload_time <= latest:
        raise LiveVideoError(
            f"{name}: upload_time {video.upload_time} is outside {MIN_UPLOAD_TIME}..{latest} "
            "(Unix seconds; year 1900 to tomorrow)"
        )
    if not math.isfinite(video.duration) or video.duration < 0:
        raise LiveVideoError(f"{name}: duration {video.duration} is negative or not finite")
    content = video.content
    if content is not None and len(content) == 0:
        content = None
    if content is not None:
        content = np.asarray(content, dtype=np.float32)
        if content_dim is None or content.shape != (content_dim,):
            want = "no content embedding" if content_dim is None else f"{content_dim} values"
            raise LiveVideoError(
                f"{name}: content_embedding has {content.size} values, the model takes {want}"
            )
        if not np.isfinite(content).all():
            raise LiveVideoError(f"{name}: content_embedding holds NaN or infinite values")
    return LiveVideo(
        video.item_id,
        video.title,
        video.category,
        video.channel,
        int(video.upload_time),
        float(video.duration),
        content,
    )


@dataclass(frozen=True)
class Change:
    """One logged change: an addition (``video``) or a removal (``video`` None)."""

    seq: int
    item_id: str
    video: LiveVideo | None
    vector: np.ndarray | None  # float32 [d]: this model's vector of an addition, if stored


@dataclass(frozen=True)
class FoldedCatalog:
    """The log's net effect up to ``seq``: videos added (and still served), ids removed."""

    seq: int
    added: list[LiveVideo]
    removed: set[str]  # ids removed, and not added again later


def fold(changes: Sequence[Change]) -> FoldedCatalog:
    """The net effect of ``changes`` (oldest first): what a full export folds in."""
    added: dict[str, LiveVideo] = {}
    removed: set[str] = set()
    for change in changes:
        added.pop(change.item_id, None)
        if change.video is None:
            removed.add(change.item_id)
        else:
            removed.discard(change.item_id)
            added[change.item_id] = change.video
    seq = changes[-1].seq if changes else 0
    return FoldedCatalog(seq, list(added.values()), removed)


class LiveCatalogStore:
    """The live catalog file; thread-safe (one connection, serialised by a lock)."""

    def __init__(self, path: str | Path) -> None:
        """Open (creating it and its folder if needed) the live catalog at ``path``."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit is fsynced before it returns (acknowledged means durable).
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def add(self, videos: Sequence[LiveVideo], model: str, vectors: np.ndarray) -> list[int]:
        """Log ``videos`` with ``model``'s vectors ``[n, d]`` in one durable commit; their seqs."""
        if len(videos) != len(vectors):
            raise ValueError(f"{len(videos)} videos but {len(vectors)} vectors")
        rows = np.asarray(vectors, dtype=np.float32)
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                seqs = []
                for video, vector in zip(videos, rows, strict=True):
                    content = None if video.content is None else video.content.tobytes()
                    cursor.execute(
                        "INSERT INTO changes (item_id, removed, title, category, channel, "
                        "upload_time, duration, content) VALUES (?, 0, ?, ?, ?, ?, ?, ?)",
                        (
                            video.item_id,
                            video.title,
                            video.category,
                            video.channel,
                            video.upload_time,
                            video.duration,
                            content,
                        ),
                    )
                    seq = int(cursor.lastrowid or 0)
                    cursor.execute(
                        "INSERT INTO vectors (seq, model, vector) VALUES (?, ?, ?)",
                        (seq, model, vector.tobytes()),
                    )
                    seqs.append(seq)
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        return seqs

    def remove(self, item_ids: Sequence[str]) -> list[int]:
        """Log the removal of ``item_ids`` in one durable commit; their seqs."""
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                seqs = []
                for item_id in item_ids:
                    cursor.execute(
                        "INSERT INTO changes (item_id, removed) VALUES (?, 1)", (item_id,)
                    )
                    seqs.append(int(cursor.lastrowid or 0))
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        return seqs

    def store_vectors(self, model: str, seqs: Sequence[int], vectors: np.ndarray) -> None:
        """Keep ``model``'s vectors ``[n, d]`` of additions ``seqs`` (another replica may
        have stored them already: the first one stays)."""
        rows = np.asarray(vectors, dtype=np.float32)
        with self._lock:
            self._db.executemany(
                "INSERT OR IGNORE INTO vectors (seq, model, vector) VALUES (?, ?, ?)",
                [(int(s), model, v.tobytes()) for s, v in zip(seqs, rows, strict=True)],
            )

    def last_seq(self) -> int:
        """The newest change's seq (0 when there is none)."""
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        return int(row[0])

    def changes_since(self, seq: int, model: str) -> list[Change]:
        """Changes after ``seq``, oldest first, with ``model``'s vectors where stored."""
        with self._lock:
            rows = self._db.execute(
                "SELECT c.seq, c.item_id, c.removed, c.title, c.category, c.channel, "
                "c.upload_time, c.duration, c.content, v.vector FROM changes c "
                "LEFT JOIN vectors v ON v.seq = c.seq AND v.model = ? "
                "WHERE c.seq > ? ORDER BY c.seq",
                (model, seq),
            ).fetchall()
        out = []
        for row in rows:
            seq_, item_id, removed, title, category, channel, upload, duration, content, vec = row
            video = None
            if not removed:
                video = LiveVideo(
                    item_id,
                    title or "",
                    category or "",
                    channel or "",
                    int(upload),
                    float(duration or 0.0),
                    None if content is None else np.frombuffer(content, dtype=np.float32),
                )
            vector = None if vec is None else np.frombuffer(vec, dtype=np.float32)
            out.append(Change(int(seq_), item_id, video, vector))
        return out

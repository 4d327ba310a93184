"""Import MovieLens (100K, 1M, 20M/25M/32M) into a canonical dataset of watch events.

Ratings become watches (``watch_fraction = rating / 5``) in time order; movies become items
(category = first genre, title without its year, upload_time from the year, never after the
first rating); users keep the demographics MovieLens has. MovieLens has no content embeddings
and no searches. Its licence forbids redistribution: the output stays local, never committed.

Ratings files can hold 25M+ rows, so they are streamed: pass 1 reads chunks, checks them and
spills each chunk, sorted by time, as a Parquet run next to the output; pass 2 merges the runs
(by timestamp, file order on ties) into ``events.parquet`` block by block. Memory stays
bounded by the chunk size, whatever the file size.
"""

from __future__ import annotations

import calendar
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.dataset.io import DatasetMeta, DatasetWriter
from recsys.dataset.schema import EVENT_WATCH, MIN_TIMESTAMP, MIN_UPLOAD_TIME
from recsys_data.movielens_formats import (
    GENRES_100K,
    LAYOUT_1M,
    LAYOUT_100K,
    LAYOUT_LATEST,
    LAYOUTS,
    MovieRecord,
    UserRecord,
    detect_layout,
    iter_ratings,
    read_genres_100k,
    read_movies_1m,
    read_movies_100k,
    read_movies_latest,
    read_users_1m,
    read_users_100k,
)

__all__ = ["import_movielens", "split_title_year", "zip_region"]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]

DEFAULT_CHUNK_BYTES = 32 << 20  # ~1.3M ratings.csv rows a chunk
MERGE_BUFFER_ROWS = 1 << 20  # rows buffered across all runs while merging
# A run's Parquet row group: a run reader holds one, so keep them small (~2 MB).
RUN_ROW_GROUP = 1 << 16
WRITE_ROWS = 1 << 19  # events per appended Parquet row group
NO_GENRE = frozenset({"unknown", "(no genres listed)"})
_NEVER = np.iinfo(np.int64).max  # first-rating time of a movie nobody rated

# "Toy Story (1995)"; series in the csv layouts may carry a range: "Babylon 5 (1994–1998)".
_TITLE_YEAR = re.compile(r"\s*\((\d{4})(?:\s*[-–]\s*(?:\d{4})?\s*)?\)\s*$")
_NUMERIC_ZIP = re.compile(r"^\d+(-\d+)?$")  # 85711, 98107-2117


def split_title_year(title: str) -> tuple[str | None, int | None]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", 1995)``; no trailing year -> ``(title, None)``."""
    text = title.strip()
    match = _TITLE_YEAR.search(text)
    if match is None:
        return text or None, None
    return text[: match.start()].strip() or None, int(match.group(1))


def zip_region(zip_code: str) -> str | None:
    """The US ZIP zone of a zip code, ``"85711"`` -> ``"US-8"``; None when it is not numeric."""
    code = zip_code.strip()
    return f"US-{code[0]}" if _NUMERIC_ZIP.match(code) else None


def first_genre(genres: Iterable[str]) -> str | None:
    """The first listed genre, skipping the placeholders "unknown" and "(no genres listed)"."""
    return next((g for g in genres if g not in NO_GENRE), None)


def import_movielens(
    source: str | Path,
    out: str | Path,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> DatasetMeta:
    """Import the MovieLens folder ``source`` into the canonical dataset folder ``out``.

    ``progress(done, total)`` is called in ratings-file bytes: read (pass 1), then the same
    again while the sorted events are written (pass 2); it ends at ``done == total``.
    ``chunk_bytes`` is the ratings read size (memory scales with it; tests make it tiny).
    """
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    started = time.perf_counter()
    folder = Path(source)
    layout = detect_layout(folder)
    spec = LAYOUTS[layout]
    meta = DatasetMeta(
        name=_dataset_name(folder, layout),
        source="movielens",
        description=(
            f"{spec.title} ratings by GroupLens Research (https://grouplens.org/datasets/"
            "movielens/), imported as watch events with watch_fraction = rating / 5. Licence: "
            "MovieLens data may not be redistributed; this dataset stays local and must never "
            "be committed or shared."
        ),
        params={"layout": layout, "source": str(folder)},
    )
    writer = DatasetWriter(out, meta, overwrite=overwrite)  # fails fast if out exists
    movies = _read_movies(folder, layout)
    users = _read_users(folder, layout)
    known_users = None if users is None else np.array([u.user_id for u in users], np.int64)
    with (
        writer,
        tempfile.TemporaryDirectory(
            dir=writer.out.parent, prefix=f".{writer.out.name}.spill-"
        ) as spill,
    ):
        ratings = _spill_ratings(
            folder / spec.ratings,
            layout,
            movies,
            known_users,
            Path(spill),
            chunk_bytes,
            progress,
        )
        if users is None:
            writer.write_users(_users_from_ratings(ratings.raters))
        else:
            writer.write_users(_users_frame(users))
        writer.write_items(_items_frame(movies, ratings.first_rating, ratings.logs_start), None)
        _write_events(writer, ratings, progress)
    log.info(
        "imported %s (%s) into %s: %d users, %d items, %d watches in %.1f s",
        folder,
        layout,
        out,
        meta.counts.get("users", 0),
        meta.counts.get("items", 0),
        meta.counts.get("watches", 0),
        time.perf_counter() - started,
    )
    return meta


def _dataset_name(folder: Path, layout: str) -> str:
    if layout != LAYOUT_LATEST:
        return "movielens-" + layout.removeprefix("ml-")
    match = re.fullmatch(r"ml-(\d+m|latest(?:-small)?)", folder.resolve().name.lower())
    return f"movielens-{match.group(1)}" if match else "movielens-latest"


def _read_movies(folder: Path, layout: str) -> list[MovieRecord]:
    path = folder / LAYOUTS[layout].movies
    if layout == LAYOUT_100K:
        genre_file = folder / "u.genre"
        genres = read_genres_100k(genre_file) if genre_file.is_file() else GENRES_100K
        movies = read_movies_100k(path, genres)
    elif layout == LAYOUT_1M:
        movies = read_movies_1m(path)
    else:
        movies = read_movies_latest(path)
    log.info("read %s: %d movies", path, len(movies))
    return movies


def _read_users(folder: Path, layout: str) -> list[UserRecord] | None:
    users_file = LAYOUTS[layout].users
    if users_file is None:
        return None
    path = folder / users_file
    users = read_users_100k(path) if layout == LAYOUT_100K else read_users_1m(path)
    log.info("read %s: %d users", path, len(users))
    return users


# ---------------------------------------------------------------- pass 1: read and spill


@dataclass
class _SpilledRatings:
    """What pass 1 learned: the sorted runs on disk and per-movie/per-user summaries."""

    runs: list[Path]
    rows: int
    size: int  # bytes of the ratings file
    first_rating: np.ndarray  # [num_movies] int64 Unix seconds, movies order; _NEVER if unrated
    logs_start: int | None  # the earliest rating
    raters: np.ndarray  # [num_raters] int64 distinct user ids, sorted


def _spill_ratings(
    path: Path,
    layout: str,
    movies: list[MovieRecord],
    known_users: np.ndarray | None,
    spill: Path,
    chunk_bytes: int,
    progress: ProgressFn | None,
) -> _SpilledRatings:
    """Pass 1: stream the ratings, check them, and write each chunk sorted by time."""
    started = time.perf_counter()
    ids = np.array([m.movie_id for m in movies], dtype=np.int64)
    sorter = np.argsort(ids, kind="stable")
    sorted_ids = ids[sorter]
    size = path.stat().st_size
    out = _SpilledRatings(
        [], 0, size, np.full(len(ids), _NEVER, np.int64), None, np.empty(0, np.int64)
    )
    for chunk in iter_ratings(path, layout, chunk_bytes, known_users, sorted_ids):
        if progress is not None:
            progress(chunk.bytes_read, 2 * size)
        n = len(chunk.timestamp)
        if n == 0:
            continue
        np.minimum.at(
            out.first_rating, sorter[np.searchsorted(sorted_ids, chunk.item)], chunk.timestamp
        )
        out.raters = np.union1d(out.raters, chunk.user)
        start = int(chunk.timestamp.min())
        out.logs_start = start if out.logs_start is None else min(out.logs_start, start)
        order = np.argsort(chunk.timestamp, kind="stable")
        run = pa.table(
            {
                "timestamp": chunk.timestamp[order],
                "user": chunk.user[order],
                "item": chunk.item[order],
                "watch_fraction": (chunk.rating[order] / 5.0).astype(np.float32),
            }
        )
        out.runs.append(spill / f"run-{len(out.runs):05d}.parquet")
        pq.write_table(run, out.runs[-1], row_group_size=RUN_ROW_GROUP)
        out.rows += n
    log.info(
        "read %s: %d ratings (%.1f MB) into %d sorted runs in %.1f s",
        path,
        out.rows,
        size / 1e6,
        len(out.runs),
        time.perf_counter() - started,
    )
    return out


# ---------------------------------------------------------------- pass 2: merge and write


class _Run:
    """A time-sorted run on disk, read a block at a time."""

    def __init__(self, path: Path, block_rows: int) -> None:
        # No pre-buffering: it would read the whole run into memory up front.
        self._file = pq.ParquetFile(path, pre_buffer=False)
        self._blocks = self._file.iter_batches(batch_size=block_rows)
        self.buffer: pa.RecordBatch | None = None
        self.exhausted = False  # every row of the run has been loaded into buffer

    def fill(self) -> None:
        """Load the next block when the buffer is used up."""
        while (self.buffer is None or self.buffer.num_rows == 0) and not self.exhausted:
            try:
                self.buffer = next(self._blocks)
            except StopIteration:
                self.exhausted = True
                self._file.close()

    @property
    def rows(self) -> int:
        """Rows loaded and not yet merged."""
        return 0 if self.buffer is None else self.buffer.num_rows

    def timestamps(self) -> np.ndarray:
        """``[rows]`` int64 timestamps of the buffer, ascending."""
        assert self.buffer is not None
        return self.buffer.column("timestamp").to_numpy()


def merge_runs(runs: list[Path], buffer_rows: int = MERGE_BUFFER_ROWS) -> Iterator[pa.Table]:
    """Merge time-sorted runs into blocks in (timestamp, run, row) order: a stable sort.

    Each step emits every buffered row whose (timestamp, run) is at most the smallest
    (last buffered timestamp, run) of the runs that still have rows on disk: no unread row
    can sort before those. That run's buffer empties, so every step makes progress.
    """
    readers = [_Run(path, max(1, buffer_rows // max(1, len(runs)))) for path in runs]
    while True:
        for reader in readers:
            reader.fill()
        live = [(i, r) for i, r in enumerate(readers) if r.rows]
        if not live:
            return
        pending = [(int(r.timestamps()[-1]), i) for i, r in live if not r.exhausted]
        frontier = min(pending) if pending else None
        pieces = []
        for i, reader in live:
            assert reader.buffer is not None
            take = reader.rows
            if frontier is not None:
                ts = reader.timestamps()
                if i <= frontier[1]:
                    take = int(np.searchsorted(ts, frontier[0], side="right"))
                else:
                    take = int(np.searchsorted(ts, frontier[0], side="left"))
            if take:
                pieces.append(reader.buffer.slice(0, take))
                reader.buffer = reader.buffer.slice(take)
        block = pa.Table.from_batches(pieces)
        yield block.take(np.argsort(block.column("timestamp").to_numpy(), kind="stable"))


def _events_frame(block: pa.Table) -> pd.DataFrame:
    """Canonical watch events from a merged block of spilled ratings."""
    n = block.num_rows
    # Object columns holding one shared "watch" (and None): 8 bytes a row, where np.full or
    # pandas' str inference would make a string object per row.
    watch = np.empty(n, dtype=object)
    watch[:] = EVENT_WATCH
    return pd.DataFrame(
        {
            "user_id": pc.cast(block.column("user"), pa.string()).to_pandas(),
            "timestamp": block.column("timestamp").to_numpy(),
            "type": pd.Series(watch, dtype=object),
            "item_id": pc.cast(block.column("item"), pa.string()).to_pandas(),
            "query": pd.Series(np.empty(n, dtype=object), dtype=object),  # all None
            "watch_fraction": block.column("watch_fraction").to_numpy(),
        }
    )


def _write_events(
    writer: DatasetWriter, ratings: _SpilledRatings, progress: ProgressFn | None
) -> None:
    """Pass 2: merge the runs and append the events in row groups of WRITE_ROWS."""
    started = time.perf_counter()
    size, total = ratings.size, 2 * ratings.size
    written = 0
    pending = pa.table({})

    def write(rows: pa.Table) -> None:
        nonlocal written
        writer.append_events(_events_frame(rows))
        written += rows.num_rows
        if progress is not None:
            progress(size + size * written // max(1, ratings.rows), total)

    for block in merge_runs(ratings.runs):
        pending = block if pending.num_rows == 0 else pa.concat_tables([pending, block])
        while pending.num_rows >= WRITE_ROWS:
            write(pending.slice(0, WRITE_ROWS))
            pending = pending.slice(WRITE_ROWS)
    if pending.num_rows:
        write(pending)
    if progress is not None:
        progress(total, total)
    log.info(
        "merged %d runs into %d events in %.1f s",
        len(ratings.runs),
        written,
        time.perf_counter() - started,
    )


# ---------------------------------------------------------------- users and items


def _users_frame(users: list[UserRecord]) -> pd.DataFrame:
    """Users of 100K/1M: all in the US (zip codes), region = ZIP zone."""
    return pd.DataFrame(
        {
            "user_id": [str(u.user_id) for u in users],
            "country": ["US"] * len(users),
            "region": [zip_region(u.zip_code) for u in users],
            "age": pd.array([u.age for u in users], dtype="Int64"),
            "gender": [u.gender for u in users],
        }
    )


def _users_from_ratings(raters: np.ndarray) -> pd.DataFrame:
    """Users of the csv layouts: the distinct raters, demographics unknown."""
    unknown = np.full(len(raters), None, dtype=object)
    return pd.DataFrame(
        {
            "user_id": [str(u) for u in raters.tolist()],
            "country": unknown,
            "region": unknown,
            "age": pd.array([None] * len(raters), dtype="Int64"),
            "gender": unknown,
        }
    )


def _upload_time(year: int | None, first_rating: int, logs_start: int | None, now: int) -> int:
    """Jan 1 of the release year, but never after the first rating (no watch before upload).

    Without a year: the first rating; never rated either: the start of the logs.
    """
    rated = first_rating != _NEVER
    if year is not None:
        upload = min(max(calendar.timegm((year, 1, 1, 0, 0, 0)), MIN_UPLOAD_TIME), now)
        return min(upload, first_rating) if rated else upload
    if rated:
        return first_rating
    return logs_start if logs_start is not None else MIN_TIMESTAMP


def _items_frame(
    movies: list[MovieRecord], first_rating: np.ndarray, logs_start: int | None
) -> pd.DataFrame:
    """Items from movies, row-aligned with ``first_rating: [num_movies]``."""
    now = int(time.time())
    titles: list[str | None] = []
    uploads: list[int] = []
    for movie, first in zip(movies, first_rating.tolist(), strict=True):
        title, year = split_title_year(movie.title)
        titles.append(title)
        year = year if year is not None else movie.release_year
        uploads.append(_upload_time(year, first, logs_start, now))
    return pd.DataFrame(
        {
            "item_id": [str(m.movie_id) for m in movies],
            "channel": np.full(len(movies), None, dtype=object),
            "category": [first_genre(m.genres) for m in movies],
            "title": titles,
            "upload_time": np.array(uploads, dtype=np.int64),
            "duration": np.full(len(movies), None, dtype=object),
        }
    )

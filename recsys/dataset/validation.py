"""Validate a canonical dataset folder (every problem names its file, column and first rows) and
read a validated dataset into memory.

Events are checked in streamed record batches, so validation of a 10M-event world keeps
memory bounded. Row numbers count from 0 within each file.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.dataset.io import CanonicalDataset, DatasetError, embeddings_from_arrow, read_meta
from recsys.dataset.schema import (
    EVENT_SEARCH,
    EVENT_TYPES,
    EVENT_WATCH,
    EVENTS,
    GENDERS,
    ITEMS,
    MAX_AGE,
    META_FILE,
    MIN_TIMESTAMP,
    MIN_UPLOAD_TIME,
    SCHEMA_VERSION,
    TABLES,
    USERS,
    Table,
)

log = logging.getLogger(__name__)

MAX_ROWS_SHOWN = 5


@dataclass
class Problem:
    """One kind of defect found in one column of one file."""

    file: str
    column: str | None
    message: str
    count: int = 0
    rows: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        where = self.file if self.column is None else f"{self.file}, column '{self.column}'"
        if not self.count:
            return f"{where}: {self.message}"
        shown = ", ".join(str(r) for r in self.rows)
        more = f" and {self.count - len(self.rows)} more" if self.count > len(self.rows) else ""
        noun = "row" if self.count == 1 else "rows"
        return f"{where}: {self.count} {noun} {self.message} (row {shown}{more})"


@dataclass
class ValidationReport:
    """The outcome of validating a dataset folder."""

    path: Path
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def raise_if_invalid(self) -> None:
        """Raise :class:`DatasetError` listing every problem, if there is any."""
        if self.problems:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            raise DatasetError(
                f"dataset {self.path} is invalid ({len(self.problems)} problems; "
                f"rows count from 0):\n{lines}"
            )


class _Collector:
    """Accumulates bad-row masks per (file, column, message) across record batches."""

    def __init__(self) -> None:
        self.problems: dict[tuple[str, str | None, str], Problem] = {}

    def add(
        self, file: str, column: str | None, message: str, mask: np.ndarray, offset: int = 0
    ) -> None:
        bad = np.flatnonzero(mask)
        if bad.size == 0:
            return
        key = (file, column, message)
        p = self.problems.setdefault(key, Problem(file, column, message))
        p.count += int(bad.size)
        room = MAX_ROWS_SHOWN - len(p.rows)
        if room > 0:
            p.rows.extend(int(r) + offset for r in bad[:room])

    def note(self, file: str, column: str | None, message: str) -> None:
        self.problems.setdefault((file, column, message), Problem(file, column, message))


def _mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array (nulls as False) as numpy."""
    filled = pc.fill_null(arr, False)
    if isinstance(filled, pa.ChunkedArray):
        filled = filled.combine_chunks()
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)


def _check_structure(path: Path, table: Table, out: _Collector) -> pa.Schema | None:
    """Check the file exists, is Parquet, and has the required columns with usable types."""
    file = table.file_name
    fpath = path / file
    if not fpath.is_file():
        out.note(file, None, f"missing from {path}")
        return None
    try:
        schema = pq.read_schema(fpath)
    except (pa.ArrowInvalid, OSError) as exc:
        out.note(file, None, f"is not a readable Parquet file ({exc})")
        return None
    ok = True
    for col in table.columns:
        if col.name not in schema.names:
            if col.required:
                out.note(file, col.name, f"required column is missing (has: {schema.names})")
                ok = False
            continue
        actual = schema.field(col.name).type
        if not col.accepts(actual):
            out.note(file, col.name, f"has type {actual}, expected {col.type_name}")
            ok = False
    return schema if ok else None


def _check_nulls(
    file: str, tbl: pa.Table | pa.RecordBatch, table: Table, out: _Collector, offset: int
) -> None:
    for col in table.columns:
        if not col.nullable and col.name in tbl.column_names:
            out.add(
                file, col.name, "with null values", _mask(pc.is_null(tbl.column(col.name))), offset
            )


def _check_duplicates(file: str, ids: pa.ChunkedArray, column: str, out: _Collector) -> None:
    values = ids.to_numpy(zero_copy_only=False)
    _, first = np.unique(values.astype(object).astype(str), return_index=True)
    dup = np.ones(len(values), dtype=bool)
    dup[first] = False
    out.add(file, column, "repeating an id from an earlier row", dup)


def _check_users(path: Path, out: _Collector) -> pa.Array | None:
    file = USERS.file_name
    tbl = pq.read_table(path / file)
    _check_nulls(file, tbl, USERS, out, 0)
    _check_duplicates(file, tbl.column("user_id"), "user_id", out)
    age = tbl.column("age")
    out.add(
        file,
        "age",
        f"outside 0..{MAX_AGE}",
        _mask(pc.or_(pc.less(age, 0), pc.greater(age, MAX_AGE))),
    )
    gender = tbl.column("gender")
    bad_gender = pc.invert(pc.is_in(gender, value_set=pa.array(GENDERS)))
    out.add(
        file,
        "gender",
        f"not one of {GENDERS} or null",
        _mask(pc.and_(bad_gender, pc.is_valid(gender))),
    )
    return pc.unique(tbl.column("user_id").combine_chunks().cast(pa.string()))


def _check_items(path: Path, now: int, out: _Collector) -> tuple[pa.Array, np.ndarray] | None:
    file = ITEMS.file_name
    tbl = pq.read_table(path / file)
    _check_nulls(file, tbl, ITEMS, out, 0)
    _check_duplicates(file, tbl.column("item_id"), "item_id", out)
    upload = tbl.column("upload_time")
    out.add(
        file,
        "upload_time",
        f"outside {MIN_UPLOAD_TIME}..{now} (Unix seconds; year 1900 to tomorrow)",
        _mask(pc.or_(pc.less(upload, MIN_UPLOAD_TIME), pc.greater(upload, now))),
    )
    duration = tbl.column("duration").cast(pa.float64())
    out.add(
        file,
        "duration",
        "negative or not finite",
        _mask(pc.or_(pc.less(duration, 0.0), pc.invert(pc.is_finite(duration)))),
    )
    if "content_embedding" in tbl.column_names:
        emb = tbl.column("content_embedding").combine_chunks()
        out.add(file, "content_embedding", "with null values", _mask(pc.is_null(emb)))
        lengths = pc.fill_null(pc.list_value_length(emb), 0).to_numpy(zero_copy_only=False)
        if len(lengths):
            dim = int(np.bincount(lengths).argmax())
            out.add(
                file,
                "content_embedding",
                f"differing in length from the usual {dim}",
                lengths != dim,
            )
            if dim == 0:
                out.note(file, "content_embedding", "embeddings are empty (length 0)")
            flat = pc.list_flatten(emb).cast(pa.float64())
            finite = _mask(pc.is_finite(flat))
            if not finite.all():
                owner = np.repeat(np.arange(len(lengths)), lengths)
                bad_rows = np.zeros(len(lengths), dtype=bool)
                bad_rows[owner[~finite]] = True
                out.add(file, "content_embedding", "holding NaN or infinite values", bad_rows)
    ids = tbl.column("item_id").combine_chunks().cast(pa.string())
    upload_np = pc.fill_null(upload, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return ids, upload_np


def _check_events(
    path: Path,
    user_ids: pa.Array | None,
    items: tuple[pa.Array, np.ndarray] | None,
    now: int,
    out: _Collector,
    counts: dict[str, int],
    batch_size: int,
) -> None:
    file = EVENTS.file_name
    pf = pq.ParquetFile(path / file)
    offset = 0
    for batch in pf.iter_batches(batch_size=batch_size):
        n = batch.num_rows
        _check_nulls(file, batch, EVENTS, out, offset)
        etype = batch.column("type")
        is_watch = _mask(pc.equal(etype, EVENT_WATCH))
        is_search = _mask(pc.equal(etype, EVENT_SEARCH))
        out.add(
            file,
            "type",
            f"not one of {EVENT_TYPES}",
            ~(is_watch | is_search) & _mask(pc.is_valid(etype)),
            offset,
        )
        ts = batch.column("timestamp")
        out.add(
            file,
            "timestamp",
            f"outside {MIN_TIMESTAMP}..{now} (Unix seconds; 1990 to tomorrow)",
            _mask(pc.or_(pc.less(ts, MIN_TIMESTAMP), pc.greater(ts, now))),
            offset,
        )
        item = batch.column("item_id")
        out.add(
            file,
            "item_id",
            "of watches without an item_id",
            is_watch & _mask(pc.is_null(item)),
            offset,
        )
        query = batch.column("query")
        blank = _mask(
            pc.or_(
                pc.is_null(query), pc.equal(pc.utf8_trim_whitespace(pc.fill_null(query, "")), "")
            )
        )
        out.add(file, "query", "of searches without query text", is_search & blank, offset)
        frac = batch.column("watch_fraction").cast(pa.float64())
        out.add(
            file,
            "watch_fraction",
            "outside 0..1 or NaN",
            _mask(pc.or_(pc.or_(pc.less(frac, 0.0), pc.greater(frac, 1.0)), pc.is_nan(frac))),
            offset,
        )
        _check_references(batch, is_watch, user_ids, items, out, offset)
        counts["watches"] = counts.get("watches", 0) + int(is_watch.sum())
        counts["searches"] = counts.get("searches", 0) + int(is_search.sum())
        offset += n
    counts["events"] = offset


def _check_references(
    batch: pa.RecordBatch,
    is_watch: np.ndarray,
    user_ids: pa.Array | None,
    items: tuple[pa.Array, np.ndarray] | None,
    out: _Collector,
    offset: int,
) -> None:
    """Events naming users or videos the other tables lack, and watches before an upload."""
    file = EVENTS.file_name
    if user_ids is not None:
        uid = batch.column("user_id")
        unknown = pc.and_(pc.is_valid(uid), pc.invert(pc.is_in(uid, value_set=user_ids)))
        out.add(file, "user_id", f"naming users not in {USERS.file_name}", _mask(unknown), offset)
    if items is not None:
        item_ids, upload = items
        item = batch.column("item_id")
        pos = pc.index_in(item, value_set=item_ids)
        known = _mask(pc.is_valid(pos))
        has_item = _mask(pc.is_valid(item))
        out.add(
            file, "item_id", f"naming videos not in {ITEMS.file_name}", has_item & ~known, offset
        )
        pos_np = pc.fill_null(pos, 0).to_numpy(zero_copy_only=False)
        ts_np = pc.fill_null(batch.column("timestamp"), 0).to_numpy(zero_copy_only=False)
        early = is_watch & known & (ts_np < upload[pos_np])
        out.add(file, "timestamp", "of watches before the video's upload_time", early, offset)


def validate_dataset(path: str | Path, batch_size: int = 1 << 20) -> ValidationReport:
    """Check a dataset folder against the schema; returns every problem found."""
    path = Path(path)
    started = time.perf_counter()
    report = ValidationReport(path)
    out = _Collector()
    if not path.is_dir():
        out.note(str(path), None, "is not a folder")
        report.problems = list(out.problems.values())
        return report
    meta_path = path / META_FILE
    if not meta_path.is_file():
        out.note(META_FILE, None, f"missing from {path}")
    else:
        try:
            raw = json.loads(meta_path.read_text())
            version = raw.get("schema_version") if isinstance(raw, dict) else None
            if version != SCHEMA_VERSION:
                out.note(
                    META_FILE,
                    "schema_version",
                    f"is {version!r}, this recsys reads {SCHEMA_VERSION}",
                )
        except json.JSONDecodeError as exc:
            out.note(META_FILE, None, f"is not valid JSON ({exc})")
    now = int(time.time()) + 86_400
    structure = {t.name: _check_structure(path, t, out) for t in TABLES}
    user_ids = _check_users(path, out) if structure["users"] is not None else None
    items = _check_items(path, now, out) if structure["items"] is not None else None
    if structure["events"] is not None:
        _check_events(path, user_ids, items, now, out, report.counts, batch_size)
    if user_ids is not None:
        report.counts["users"] = len(user_ids)
    if items is not None:
        report.counts["items"] = len(items[0])
    report.problems = list(out.problems.values())
    log.info(
        "validated %s in %.1f s: %s",
        path,
        time.perf_counter() - started,
        "ok" if report.ok else f"{len(report.problems)} problems",
    )
    return report


def read_dataset(path: str | Path, validate: bool = True) -> CanonicalDataset:
    """Read a canonical dataset folder into memory, validating it first (the default).

    Raises :class:`DatasetError` naming the file, column and first bad rows of every problem.
    """
    path = Path(path)
    started = time.perf_counter()
    if validate:
        validate_dataset(path).raise_if_invalid()
    meta = read_meta(path)
    users = pq.read_table(path / USERS.file_name).to_pandas()
    items_tbl = pq.read_table(path / ITEMS.file_name)
    embeddings = None
    if "content_embedding" in items_tbl.column_names:
        embeddings = embeddings_from_arrow(items_tbl.column("content_embedding"))
        items_tbl = items_tbl.drop_columns(["content_embedding"])
    items = items_tbl.to_pandas()
    events = pq.read_table(path / EVENTS.file_name).to_pandas()
    for frame, table in ((users, USERS), (items, ITEMS), (events, EVENTS)):
        for col in table.columns:
            if col.name not in frame.columns and col.kind != "embedding":
                frame[col.name] = pd.Series([None] * len(frame), dtype="object")
    log.info(
        "read dataset %s: %d users, %d items, %d events in %.1f s",
        path,
        len(users),
        len(items),
        len(events),
        time.perf_counter() - started,
    )
    return CanonicalDataset(users, items, events, meta, embeddings)

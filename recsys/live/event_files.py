"""Events to replay into a service: a canonical dataset's log, or a Parquet / JSONL file.

Rows have the canonical events table's columns (``user_id``, ``timestamp``, ``type``,
``item_id``, ``query``, ``watch_fraction``; :data:`recsys.dataset.schema.EVENTS`). Each batch
is checked with :func:`recsys.live.events.check_batch` before it leaves, and a bad row is
named by file and row, not by its place in a batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.dataset.schema import EVENTS, USERS
from recsys.features.limits import FieldError
from recsys.live.events import MAX_EVENTS_PER_BATCH, Demographics, Event, check_batch

COLUMNS = ("user_id", "timestamp", "type", "item_id", "query", "watch_fraction")
DEMOGRAPHICS = ("country", "region", "age", "gender")


class EventFileError(ValueError):
    """An events file or dataset cannot be replayed; the message names the file and row."""


@dataclass(frozen=True)
class EventBatch:
    """Consecutive events of a source, with the demographics of users first seen in them."""

    events: list[Event]
    users: list[Demographics]
    first_event: int  # the position of its first event in the source


def _read_table(path: Path) -> tuple[pa.Table, Path]:
    """The events of ``path`` (a dataset folder, a .parquet or a .jsonl file), time-ordered.

    A column ``row`` holds each event's 0-based row in the file.
    """
    if path.is_dir():
        path = path / EVENTS.file_name
        if not path.exists():
            raise EventFileError(f"{path.parent}: not a canonical dataset (no {EVENTS.file_name})")
    try:
        if path.suffix in (".jsonl", ".json", ".ndjson"):
            table = _read_jsonl(path)
        else:
            table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid, json.JSONDecodeError) as exc:
        raise EventFileError(f"{path}: cannot read events ({exc})") from exc
    missing = [c for c in ("user_id", "timestamp", "type") if c not in table.column_names]
    if missing:
        raise EventFileError(f"{path}: no column(s) {missing}; events need {list(COLUMNS)}")
    for column in COLUMNS:
        if column not in table.column_names:
            kind = pa.float64() if column == "watch_fraction" else pa.string()
            table = table.append_column(column, pa.nulls(table.num_rows, kind))
    table = table.select(list(COLUMNS)).append_column("row", pa.array(range(table.num_rows)))
    order = pc.sort_indices(table, [("timestamp", "ascending")])  # stable: ties keep file order
    return table.take(order), path


def _read_jsonl(path: Path) -> pa.Table:
    rows = []
    with path.open() as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise EventFileError(f"{path}: line {number} is not JSON ({exc})") from exc
    # Rows may leave out fields (a watch has no query): the columns are the union of keys.
    keys = list(dict.fromkeys(key for row in rows for key in row))
    return pa.table({key: [row.get(key) for row in rows] for key in keys})


def _user_demographics(data: Path) -> dict[str, Demographics]:
    """A canonical dataset's users table as demographics (empty for a plain events file)."""
    users_file = data / USERS.file_name
    if not data.is_dir() or not users_file.exists():
        return {}
    table = pq.read_table(users_file)
    columns = {c: table.column(c).to_pylist() for c in DEMOGRAPHICS if c in table.column_names}
    out = {}
    for row, user_id in enumerate(table.column("user_id").to_pylist()):
        values = {c: columns[c][row] for c in columns}
        out[user_id] = Demographics(user_id, **values)
    return out


def _event(row: dict[str, object]) -> Event:
    fraction = row["watch_fraction"]
    return Event(
        user_id=str(row["user_id"] or ""),
        time=int(row["timestamp"]),  # type: ignore[call-overload]
        type=str(row["type"] or ""),
        video_id=str(row["item_id"] or ""),
        query=str(row["query"] or ""),
        watch_fraction=None if fraction is None else float(fraction),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class EventSource:
    """A source's events (time order, checked lazily per batch) and its users' demographics."""

    path: Path  # the file read
    events: list[Event]
    rows: list[int]  # each event's 0-based row in the file
    demographics: dict[str, Demographics]


def read_events(source: str | Path, after: int | None = None) -> EventSource:
    """The events of ``source`` at or after ``after`` (Unix s), oldest first.

    ``source``: a canonical dataset folder (its users come with their demographics), or a
    Parquet or JSONL file of events.
    """
    source = Path(source)
    table, path = _read_table(source)
    if after is not None:
        table = table.filter(pc.greater_equal(table.column("timestamp"), after))
    if table.column("timestamp").null_count:
        raise EventFileError(f"{path}: timestamp has nulls")
    events = [_event(row) for row in table.to_pylist()]
    rows = table.column("row").to_pylist()
    return EventSource(path, events, rows, _user_demographics(source))


def event_batches(
    source: EventSource, batch_size: int = 1000, now: int | None = None
) -> Iterator[EventBatch]:
    """``source``'s events in checked batches; a user's demographics go with its first event.

    ``now``: the clock the "not more than a day ahead" rule uses (default: now).
    EventFileError names the file and row of the first bad event.
    """
    if not 1 <= batch_size <= MAX_EVENTS_PER_BATCH:
        raise ValueError(f"batch size must be in 1..{MAX_EVENTS_PER_BATCH}, got {batch_size}")
    clock = int(time.time()) if now is None else now
    seen: set[str] = set()
    for start in range(0, len(source.events), batch_size):
        events = source.events[start : start + batch_size]
        users = []
        for e in events:
            if e.user_id not in seen and e.user_id in source.demographics:
                seen.add(e.user_id)
                users.append(source.demographics[e.user_id])
        try:
            check_batch(events, users, clock)
        except FieldError as exc:
            raise EventFileError(
                f"{source.path}: {_row_named(str(exc), source.rows[start:])}"
            ) from exc
        yield EventBatch(events, users, start)


def _row_named(message: str, rows: list[int]) -> str:
    """``events[i].field ...`` of a batch as ``row N: field ...`` of the file."""
    if message.startswith("events["):
        index, _, rest = message[len("events[") :].partition("]")
        if index.isdigit() and int(index) < len(rows):
            return f"row {rows[int(index)]}: {rest.lstrip('.')}"
    return message

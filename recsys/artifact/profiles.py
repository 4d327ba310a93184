"""User profiles for serving: each user's demographics and latest watches and searches.

A request that names only a ``user_id`` is served from its profile: the demographics from
``users.parquet`` and the last ``max_history`` watches and last ``max_searches`` searches
(with their times) of the whole dataset the model was trained on, kept in the artifact as
``profiles.parquet``. :meth:`Profiles.context` turns a profile into the same
:class:`~recsys.features.context.RequestContext` an explicit request builds, so the query features
of
both come from :func:`recsys.features.context.encode_request`.

Videos the model does not know (watched only after the training cut-off) stay in the stored
history: ``encode_request`` skips and counts them, exactly as for an explicit request.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.dataset.schema import EVENT_SEARCH, EVENT_WATCH, EVENTS, USERS
from recsys.features.context import RequestContext
from recsys.features.contract import FeatureConfig

log = logging.getLogger(__name__)

PROFILES_FORMAT = "1"
_FORMAT_KEY = b"recsys.profiles.format"

PROFILE_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("country", pa.string()),
        pa.field("region", pa.string()),
        pa.field("age", pa.int64()),
        pa.field("gender", pa.string()),
        # oldest first, at most max_history / max_searches entries
        pa.field("watch_ids", pa.list_(pa.string())),
        pa.field("watch_times", pa.list_(pa.int64())),
        pa.field("searches", pa.list_(pa.string())),
        pa.field("search_times", pa.list_(pa.int64())),
    ],
    metadata={_FORMAT_KEY: PROFILES_FORMAT.encode()},
)


class ProfileError(Exception):
    """A profiles file is missing or malformed."""


def _latest_per_user(
    user_rows: np.ndarray, times: np.ndarray, num_users: int, keep: int
) -> tuple[np.ndarray, np.ndarray]:
    """Event positions of each user's last ``keep`` events, oldest first, and list offsets.

    ``user_rows: [n]`` the user's row in the users table per event; ``times: [n]`` Unix
    seconds. Ties in time keep file order. Returns ``(positions [m], offsets [num_users + 1])``.
    """
    order = np.lexsort((np.arange(len(times)), times, user_rows))
    sorted_users = user_rows[order]
    counts = np.bincount(sorted_users, minlength=num_users)
    ends = np.cumsum(counts)
    from_end = ends[sorted_users] - np.arange(len(order))  # 1 for a user's latest event
    kept = from_end <= keep
    offsets = np.zeros(num_users + 1, dtype=np.int32)
    np.cumsum(np.minimum(counts, keep), out=offsets[1:])
    return order[kept], offsets


def build_profiles(
    data_dir: str | Path, feature_config: FeatureConfig, until: int | None = None
) -> pa.Table:
    """Profiles of every user of the dataset ``data_dir``: one row per user, users' order.

    Each row holds the user's demographics, the last ``max_history`` watches (ids and Unix
    times, oldest first) and the last ``max_searches`` non-blank searches (texts and times)
    of the event log, or of its events before ``until`` (Unix s). Users without events get
    empty lists.
    """
    started = time.perf_counter()
    data_dir = Path(data_dir)
    users = pq.read_table(data_dir / USERS.file_name)
    events = pq.read_table(
        data_dir / EVENTS.file_name, columns=["user_id", "timestamp", "type", "item_id", "query"]
    )
    if until is not None:
        events = events.filter(pc.less(events.column("timestamp"), until))
    user_ids = users.column("user_id").combine_chunks()
    event_users = pc.index_in(events.column("user_id"), value_set=user_ids)
    known_user = pc.is_valid(event_users)
    is_watch = pc.and_(
        pc.and_(
            pc.equal(events.column("type"), EVENT_WATCH), pc.is_valid(events.column("item_id"))
        ),
        known_user,
    )
    # A blank search carries nothing (the validator rejects them): not a search.
    query = events.column("query")
    nonblank = pc.not_equal(pc.utf8_trim_whitespace(query), "")
    is_search = pc.and_(
        pc.and_(pc.equal(events.column("type"), EVENT_SEARCH), pc.fill_null(nonblank, False)),
        known_user,
    )

    def lists(mask: pa.ChunkedArray, value_column: str, keep: int) -> tuple[pa.Array, pa.Array]:
        picked = events.filter(mask)
        rows = pc.index_in(picked.column("user_id"), value_set=user_ids)
        rows_np = rows.to_numpy(zero_copy_only=False).astype(np.int64)
        times_np = picked.column("timestamp").to_numpy().astype(np.int64)
        positions, offsets = _latest_per_user(rows_np, times_np, len(user_ids), keep)
        take = pa.array(positions, type=pa.int64())
        values = picked.column(value_column).take(take).combine_chunks().cast(pa.string())
        times = pa.array(times_np[positions], type=pa.int64())
        offs = pa.array(offsets, type=pa.int32())
        return pa.ListArray.from_arrays(offs, values), pa.ListArray.from_arrays(offs, times)

    watch_ids, watch_times = lists(is_watch, "item_id", feature_config.max_history)
    searches, search_times = lists(is_search, "query", feature_config.max_searches)

    def column(name: str, kind: pa.DataType) -> pa.Array:
        if name in users.column_names:
            return users.column(name).combine_chunks().cast(kind)
        return pa.nulls(len(user_ids), type=kind)

    table = pa.Table.from_arrays(
        [
            user_ids.cast(pa.string()),
            column("country", pa.string()),
            column("region", pa.string()),
            column("age", pa.int64()),
            column("gender", pa.string()),
            watch_ids,
            watch_times,
            searches,
            search_times,
        ],
        schema=PROFILE_SCHEMA,
    )
    log.info(
        "built %d user profiles (last %d watches, %d searches%s) from %s in %.1f s",
        table.num_rows,
        feature_config.max_history,
        feature_config.max_searches,
        "" if until is None else f", events before {until}",
        data_dir,
        time.perf_counter() - started,
    )
    return table


def write_profiles(table: pa.Table, path: str | Path) -> None:
    """Write a profiles table (from :func:`build_profiles`) as Parquet."""
    pq.write_table(table, Path(path))


class Profiles:
    """Profiles loaded from ``profiles.parquet``: user id to a serving context.

    Read-only after loading, so safe to share between threads.
    """

    def __init__(self, table: pa.Table) -> None:
        """Wrap a table with the columns of :data:`PROFILE_SCHEMA`."""
        missing = [f.name for f in PROFILE_SCHEMA if f.name not in table.column_names]
        if missing:
            raise ProfileError(f"profiles table lacks columns {missing}")
        self._table = table.select(PROFILE_SCHEMA.names)
        ids = self._table.column("user_id").to_pylist()
        self._row_of = {user_id: row for row, user_id in enumerate(ids)}
        if len(self._row_of) != len(ids):
            raise ProfileError("profiles table has duplicate user ids")
        self._columns = {n: self._table.column(n).combine_chunks() for n in PROFILE_SCHEMA.names}

    @classmethod
    def load(cls, path: str | Path) -> Profiles:
        """Read ``profiles.parquet``; ProfileError naming the file when it is not one."""
        path = Path(path)
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ProfileError(f"{path}: cannot read profiles ({exc})") from exc
        found = (table.schema.metadata or {}).get(_FORMAT_KEY)
        if found != PROFILES_FORMAT.encode():
            raise ProfileError(f"{path}: profiles format {found!r}, expected {PROFILES_FORMAT}")
        try:
            profiles = cls(table)
        except ProfileError as exc:
            raise ProfileError(f"{path}: {exc}") from exc
        log.info("loaded %d user profiles from %s", len(profiles), path)
        return profiles

    def __len__(self) -> int:
        """Number of users with a profile."""
        return len(self._row_of)

    def __contains__(self, user_id: object) -> bool:
        """Whether ``user_id`` has a profile."""
        return user_id in self._row_of

    def row_of(self, user_id: str) -> int | None:
        """The profile row of ``user_id`` (None when it has no profile)."""
        return self._row_of.get(user_id)

    def column(self, name: str) -> pa.Array:
        """One column of :data:`PROFILE_SCHEMA`, in profile-row order."""
        return self._columns[name]

    def list_column(self, name: str) -> tuple[pa.Array, np.ndarray]:
        """A list column's flat values and int64 offsets ``[len + 1]`` (row ``r``: o[r]:o[r+1])."""
        column = self._columns[name]
        return column.values, column.offsets.to_numpy().astype(np.int64)

    def demographics(self, row: int) -> tuple[str | None, str | None, int | None, str | None]:
        """Country, region, age and gender of profile ``row`` (None where unknown)."""
        col = self._columns
        age = col["age"][row].as_py()
        return (
            _str_or_none(col["country"][row].as_py()),
            _str_or_none(col["region"][row].as_py()),
            int(age) if isinstance(age, int) else None,
            _str_or_none(col["gender"][row].as_py()),
        )

    def user_id_at(self, row: int) -> str:
        """The user id of profile ``row`` (0-based, the users table's order)."""
        return str(self._columns["user_id"][row].as_py())

    def context(self, user_id: str, request_time: int | None = None) -> RequestContext | None:
        """The user's serving context at ``request_time`` (None: now), or None if unknown.

        Events carry their times, so :func:`~recsys.features.context.encode_request` keeps only
        those
        strictly before the request time.
        """
        row = self._row_of.get(user_id)
        if row is None:
            return None
        col = self._columns
        country, region, age, gender = self.demographics(row)
        return RequestContext(
            watch_history=col["watch_ids"][row].values.to_pylist(),
            watch_times=col["watch_times"][row].values.to_pylist(),
            searches=col["searches"][row].values.to_pylist(),
            search_times=col["search_times"][row].values.to_pylist(),
            country=country,
            region=region,
            age=age,
            gender=gender,
            request_time=request_time,
        )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None

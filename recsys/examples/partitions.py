"""Integer-encoded event partitions for :mod:`recsys.examples.building`.

The event log is streamed once into per-partition Parquet files whose ids are already rows
of the users / items tables (``user_row`` int32, ``item_row`` int32 with -1 for searches), so
sorting, splitting, counting and feature gathers downstream are integer numpy work. Search
queries stay strings; each partition tokenises its distinct queries once per pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.dataset.io import DatasetError, iter_event_batches
from recsys.dataset.schema import EVENT_SEARCH, EVENT_WATCH
from recsys.dataset.splits import Split
from recsys.features.encoder import distinct_values, tokenize

EVENT_COLUMNS = ["user_id", "timestamp", "type", "item_id", "query"]
KIND_WATCH, KIND_SEARCH, KIND_OTHER = 0, 1, 2
# Optional column of encoded events: the row of each event in the event log.
POSITION = "position"


def partition_of(user_ids: pd.Series | np.ndarray, partitions: int) -> np.ndarray:
    """The partition of each user id (a stable hash of the id string)."""
    hashed = pd.util.hash_array(np.asarray(user_ids, dtype=object))
    return (hashed % np.uint64(partitions)).astype(np.int64)


def _strings(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.cast(pa.string())


def encode_event_batch(
    batch: pa.RecordBatch | pa.Table, user_ids: pa.Array, item_ids: pa.Array, source: object
) -> pa.Table:
    """Events with ids as rows of the users / items tables (``user_ids``, ``item_ids``: strings).

    Columns ``user_row`` (int32), ``timestamp`` (int64), ``kind`` (int8), ``item_row`` (int32,
    -1 unless a watch) and ``query``; rows keep the batch's order. ``source`` names the
    dataset in errors.
    """
    urow = pc.index_in(_strings(batch.column("user_id")), value_set=user_ids)
    if urow.null_count:
        raise DatasetError(f"{source}: events name users missing from the users table")
    users = urow.to_numpy(zero_copy_only=False).astype(np.int32)
    typ = batch.column("type")
    is_watch = pc.equal(typ, EVENT_WATCH).fill_null(False).to_numpy(zero_copy_only=False)
    is_search = pc.equal(typ, EVENT_SEARCH).fill_null(False).to_numpy(zero_copy_only=False)
    kind = np.where(is_watch, KIND_WATCH, np.where(is_search, KIND_SEARCH, KIND_OTHER))
    irow = pc.index_in(_strings(batch.column("item_id")), value_set=item_ids)
    items = irow.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    if np.any(is_watch & (items < 0)):
        raise DatasetError(f"{source}: watches of videos missing from the items table")
    return pa.table(
        {
            "user_row": users,
            "timestamp": batch.column("timestamp").cast(pa.int64()),
            "kind": kind.astype(np.int8),
            "item_row": np.where(is_watch, items, -1).astype(np.int32),
            "query": _strings(batch.column("query")),
        }
    )


def split_by_partition(
    tbl: pa.Table, user_partition: np.ndarray, partitions: int
) -> Iterator[tuple[int, pa.Table]]:
    """``(partition, rows)`` of an encoded event table, rows in table order; empty ones skipped.

    ``user_partition``: the partition of each user row (:func:`partition_of` of the ids).
    """
    part = user_partition[tbl.column("user_row").to_numpy()]
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(partitions + 1))
    tbl = tbl.take(pa.array(order))
    for p in range(partitions):
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        if hi > lo:
            yield p, tbl.slice(lo, hi - lo)


def write_partitions(
    data_dir: Path, work: Path, partitions: int, user_ids: pa.Array, item_ids: pa.Array
) -> dict[int, Path]:
    """Stream the event log into per-partition Parquet files of integer-encoded events.

    Users are hashed to partitions by their id; rows keep the event log's order. Returns the
    file of every partition that has events, by partition number.
    """
    user_ids, item_ids = _strings(user_ids), _strings(item_ids)
    user_part = partition_of(user_ids.to_numpy(zero_copy_only=False), partitions)
    writers: dict[int, pq.ParquetWriter] = {}
    paths = {p: work / f"events-part-{p:04d}.parquet" for p in range(partitions)}
    for batch in iter_event_batches(data_dir, columns=EVENT_COLUMNS):
        tbl = encode_event_batch(batch, user_ids, item_ids, data_dir)
        for p, rows in split_by_partition(tbl, user_part, partitions):
            if p not in writers:
                writers[p] = pq.ParquetWriter(paths[p], rows.schema)
            writers[p].write_table(rows)
    for w in writers.values():
        w.close()
    return {p: paths[p] for p in sorted(writers)}


@dataclass
class Events:
    """One partition's events sorted by user (id order), time, then file order.

    ``user`` is the sort key of the user (rank of the id string); ``user_row`` the user's
    row; ``item_row`` the video's row (-1 unless a watch); ``queries`` the searches' texts in
    order (one per ``kind == KIND_SEARCH`` row).
    """

    user: np.ndarray
    user_row: np.ndarray
    timestamp: np.ndarray
    kind: np.ndarray
    item_row: np.ndarray
    queries: pa.Array

    @property
    def is_watch(self) -> np.ndarray:
        """Mask of the watches."""
        return self.kind == KIND_WATCH

    @property
    def is_search(self) -> np.ndarray:
        """Mask of the searches."""
        return self.kind == KIND_SEARCH


def load_events(path: Path, user_rank: np.ndarray) -> Events:
    """A partition's events from its file, sorted by user then time (ties keep file order)."""
    return events_from_table(pq.read_table(path), user_rank)


def events_from_table(tbl: pa.Table, user_rank: np.ndarray) -> Events:
    """A partition's encoded events sorted by user, time, then event-log order.

    The event-log order is the optional ``position`` column (each event's row in the log,
    for rows gathered out of order), else the table's row order.
    """
    urow = tbl.column("user_row").to_numpy()
    ts = tbl.column("timestamp").to_numpy()
    key = user_rank[urow]
    if POSITION in tbl.column_names:
        order = np.lexsort((tbl.column(POSITION).to_numpy(), ts, key))
    else:
        order = np.lexsort((ts, key))
    kind = tbl.column("kind").to_numpy()[order]
    searches = order[kind == KIND_SEARCH]
    queries = _strings(tbl.column("query").take(pa.array(searches)))
    return Events(
        user=key[order],
        user_row=urow[order],
        timestamp=ts[order],
        kind=kind,
        item_row=tbl.column("item_row").to_numpy()[order],
        queries=queries,
    )


def holdout(ev: Events, split: Split, cutoff: int | None) -> np.ndarray:
    """:func:`recsys.dataset.splits.holdout_mask` on sorted integer events (same semantics)."""
    is_watch = ev.is_watch
    if split.name == "time":
        assert cutoff is not None
        return is_watch & (ev.timestamp >= cutoff)
    w = np.flatnonzero(is_watch)
    u = ev.user[w]
    last = np.ones(len(w), dtype=bool)
    last[:-1] = u[:-1] != u[1:]
    several = np.zeros(len(w), dtype=bool)  # for a last watch: the user has an earlier one
    several[1:] = u[1:] == u[:-1]
    mask = np.zeros(len(ev.kind), dtype=bool)
    mask[w[last & several]] = True
    return mask


def training_mask(ev: Events, held: np.ndarray, split: Split, cutoff: int | None) -> np.ndarray:
    """Events usable for training and vocabularies: before the cut-off, never held out."""
    if split.name == "time":
        assert cutoff is not None
        return (ev.timestamp < cutoff) & ~held
    return ~held


def distinct_queries(queries: pa.Array) -> tuple[np.ndarray, list[list[str]]]:
    """(code of each query into the distinct ones, tokens of each distinct query)."""
    codes, distinct = distinct_values(queries)
    return codes, [tokenize(q) for q in distinct]


def cap_per_user(users: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Positions (ascending) of a seeded random subset of at most ``cap`` rows per user."""
    order = rng.permutation(len(users))
    shuffled = users[order]
    by_user = np.argsort(shuffled, kind="stable")
    grouped = shuffled[by_user]
    first = np.ones(len(grouped), dtype=bool)
    first[1:] = grouped[1:] != grouped[:-1]
    starts = np.flatnonzero(first)
    run = np.arange(len(grouped)) - np.repeat(starts, np.diff(np.append(starts, len(grouped))))
    rank = np.empty(len(grouped), dtype=np.int64)
    rank[by_user] = run
    return np.sort(order[rank < cap])

"""The watched-video exclusion rule: offline rankings leave out what ``Recommend`` leaves out.

``Recommend`` excludes the videos a user has already watched by default. Offline evaluation
applies the same rule to every ranking (the model with exact search and with the served
index, the baselines, the oracle) and the training job's validation recall does too, so that
the numbers measure what is served. ``--exclude-watched auto`` applies it when the dataset
has no rewatches (no user watched a video twice): there a watched video can never be the next
watch, and leaving it in only hides the videos that can. Where users do rewatch, excluding
watched videos would make some next watches unreachable, so ``auto`` keeps them.

The excluded set of a query is every video its user watched strictly before the query's
moment, as :class:`Watched` (one sorted row list per query, compressed-sparse-row layout):
what ``Recommend`` excludes for a client that sends the user's whole watch history (a stored
profile keeps the latest ``features.max_history`` watches, so it excludes those).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.config import EXCLUDE_WATCHED_RULES
from recsys.dataset.io import CanonicalDataset


@dataclass(frozen=True)
class Watched:
    """Catalog rows each query's user watched before the query's moment.

    ``offsets: [n + 1]`` int64; query ``i``'s rows are ``rows[offsets[i]:offsets[i + 1]]``,
    sorted and distinct (``rows: [m]`` int64 catalog rows).
    """

    offsets: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        """``[n]`` number of watched videos of each query."""
        return np.diff(self.offsets)

    @property
    def max_count(self) -> int:
        """The most watched videos any query has (0 without queries)."""
        return int(self.counts.max()) if len(self) else 0

    def take(self, queries: np.ndarray) -> Watched:
        """The watched lists of ``queries: [b]`` (positions), in that order."""
        queries = np.asarray(queries, dtype=np.int64)
        starts, counts = self.offsets[queries], self.counts[queries]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        total = int(offsets[-1])
        within = np.arange(total) - np.repeat(offsets[:-1], counts)
        return Watched(offsets, self.rows[np.repeat(starts, counts) + within])

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """``(query [m], row [m])``: every (query position, watched row) pair."""
        return np.repeat(np.arange(len(self)), self.counts), self.rows


def has_rewatches(user_rows: np.ndarray, item_rows: np.ndarray) -> bool:
    """True when some user watched some video more than once (``[m]`` watch events)."""
    pairs = pd.DataFrame({"user": np.asarray(user_rows), "item": np.asarray(item_rows)})
    return bool(pairs.duplicated().any())


def resolve_exclude_watched(rule: str, rewatches: bool) -> bool:
    """Whether ``rule`` ("auto", "yes", "no") excludes watched videos on data with(out)
    ``rewatches``; ValueError naming the allowed rules otherwise."""
    if rule not in EXCLUDE_WATCHED_RULES:
        raise ValueError(f"exclude_watched must be one of {EXCLUDE_WATCHED_RULES}, got {rule!r}")
    return rule == "yes" or (rule == "auto" and not rewatches)


def watched_before(
    watch_users: np.ndarray,
    watch_times: np.ndarray,
    watch_items: np.ndarray,
    query_users: np.ndarray,
    query_times: np.ndarray,
) -> Watched:
    """Each query's user's videos watched strictly before its time.

    ``watch_*: [m]`` the watch events (user row, Unix seconds, catalog row; rows < 0 are
    videos outside the catalog and are skipped); ``query_users, query_times: [n]``.
    """
    items = np.asarray(watch_items, dtype=np.int64)
    known = items >= 0
    # One sortable key per event: user in the high bits, time in the low 32.
    keys = (np.asarray(watch_users, np.int64)[known] << 32) + np.asarray(watch_times, np.int64)[
        known
    ]
    order = np.argsort(keys, kind="stable")
    keys, items = keys[order], items[known][order]
    q_users = np.asarray(query_users, np.int64) << 32
    lo = np.searchsorted(keys, q_users, side="left")
    hi = np.searchsorted(keys, q_users + np.asarray(query_times, np.int64), side="left")
    counts = hi - lo
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(lo), dtype=np.int64), counts)
    within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    rows = items[np.repeat(lo, counts) + within]
    # Distinct rows per query, sorted: one unique over (query, row) keys.
    width = int(items.max()) + 1 if len(items) else 1
    unique = np.unique(owner * width + rows)
    owner, rows = unique // width, unique % width
    offsets = np.searchsorted(owner, np.arange(len(lo) + 1), side="left").astype(np.int64)
    return Watched(offsets, rows.astype(np.int64))


def drop_excluded(ranked: np.ndarray, watched: Watched, k: int) -> np.ndarray:
    """The top ``k`` of ``ranked: [n, K]`` (catalog rows, best first, -1 padded) without each
    query's watched rows: ``[n, k]``, -1 padded. ``K`` should be at least ``k`` plus
    ``watched.max_count`` for every list to keep ``k`` rows."""
    ranked = np.asarray(ranked, dtype=np.int64)
    n = len(ranked)
    if len(watched) != n:
        raise ValueError(f"{n} ranked lists but {len(watched)} watched lists")
    excluded = np.zeros_like(ranked, dtype=bool)
    query, row = watched.pairs()
    if len(query):
        # A (query, row) pair is excluded when it is in the watched set: one sorted lookup.
        span = int(max(ranked.max(initial=0), row.max(initial=0))) + 1
        wanted = np.sort(query * span + row)
        keys = np.arange(n, dtype=np.int64)[:, None] * span + np.maximum(ranked, 0)
        pos = np.minimum(np.searchsorted(wanted, keys), len(wanted) - 1)
        excluded = (wanted[pos] == keys) & (ranked >= 0)
    keep = ~excluded & (ranked >= 0)
    # Kept entries first, in their order: a stable sort on "not kept".
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    out = np.take_along_axis(ranked, order, axis=1)
    out[~np.take_along_axis(keep, order, axis=1)] = -1
    if out.shape[1] < k:
        out = np.concatenate([out, np.full((n, k - out.shape[1]), -1, np.int64)], axis=1)
    return out


def mask_excluded(scores: np.ndarray, watched: Watched) -> None:
    """Set ``scores: [n, N]`` to -inf in place at each query's watched rows."""
    query, row = watched.pairs()
    scores[query, row] = -np.inf


@dataclass(frozen=True)
class WatchLog:
    """A dataset's watch events as rows: ``[m]`` user row, Unix seconds, catalog row."""

    users: np.ndarray
    times: np.ndarray
    items: np.ndarray

    @classmethod
    def of(cls, dataset: CanonicalDataset) -> WatchLog:
        """The watches of ``dataset`` (rows: its users and items tables' order)."""
        ev = dataset.events
        watch = (ev["type"] == "watch").to_numpy()
        return cls(
            users=pd.Index(dataset.users["user_id"]).get_indexer(ev["user_id"][watch]),
            times=ev["timestamp"].to_numpy(np.int64)[watch],
            items=pd.Index(dataset.items["item_id"]).get_indexer(ev["item_id"][watch]),
        )

    @property
    def rewatches(self) -> bool:
        """True when some user watched some video more than once."""
        return has_rewatches(self.users, self.items)

    def before(self, query_users: np.ndarray, query_times: np.ndarray) -> Watched:
        """Each query's (user row, Unix seconds ``[n]``) videos watched before it."""
        return watched_before(self.users, self.times, self.items, query_users, query_times)

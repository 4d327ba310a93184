"""The synthetic world's oracle: exact next-watch probabilities from the hidden parameters.

A synthetic world knows why every video was watched. For a watch event, the oracle
recomputes the very mixture the generator sampled it from (see ``data/README.md``), using
the hidden parameters saved in ``world/`` and only the user's strictly-earlier events in the
same session. Its Recall@K is the ceiling any recommender can reach on that world.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.dataset.io import CanonicalDataset, DatasetError, read_meta
from recsys.dataset.schema import EVENT_WATCH, EVENTS, ITEMS, USERS
from recsys.dataset.splits import Split, holdout_mask
from recsys_data.world import (
    DAY,
    TRUTH_FILE,
    WORLD_FILE,
    WORLD_FORMAT,
    WORLD_VERSION,
    World,
    WorldConfig,
    base_weights,
)

log = logging.getLogger(__name__)

SESSION_GAP = 1_800  # events of a user less than 30 minutes apart share a session
NONE, SEARCH, WATCH = 0, 1, 2
BLOCK_ELEMENTS = 1 << 24  # probabilities held at once: [block, num_items] float64 = 128 MB


def load_world(data_dir: str | Path) -> World:
    """The hidden parameters of the synthetic world stored in dataset folder ``data_dir``."""
    path = Path(data_dir)
    meta = read_meta(path)
    truth, world_file = path / TRUTH_FILE, path / WORLD_FILE
    if meta.source != "synthetic" or not truth.is_file() or not world_file.is_file():
        raise DatasetError(
            f"{path}: not a synthetic world (dataset.json source is {meta.source!r}; the oracle "
            f"needs {TRUTH_FILE} and {WORLD_FILE}, written by `recsys data synth`)"
        )
    try:
        raw = json.loads(world_file.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{world_file}: not valid JSON ({exc})") from exc
    if raw.get("format") != WORLD_FORMAT or raw.get("version") != WORLD_VERSION:
        raise DatasetError(
            f"{world_file}: format {raw.get('format')!r} version {raw.get('version')!r}, this "
            f"recsys reads {WORLD_FORMAT!r} version {WORLD_VERSION}; regenerate the world"
        )
    try:
        return World.load(truth, WorldConfig.from_dict(raw["config"]))
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise DatasetError(f"{truth}: unreadable ground truth ({exc})") from exc


@dataclass
class _EventLog:
    """Events as world indices: what the oracle needs, compact enough for 10M+ rows."""

    user: np.ndarray  # [N] int32 index into the world's users (-1: unknown)
    time: np.ndarray  # [N] int64 Unix seconds
    is_watch: np.ndarray  # [N] bool
    item: np.ndarray  # [N] int32 index into the world's items (-1: none or unknown)
    query: pa.ChunkedArray  # [N] search text, null for watches

    def frame(self) -> pd.DataFrame:
        """The columns :func:`recsys.dataset.splits.holdout_mask` reads."""
        kind = pd.Categorical.from_codes(
            self.is_watch.astype(np.int8), pd.Index(["search", EVENT_WATCH])
        )
        return pd.DataFrame({"user_id": self.user, "timestamp": self.time, "type": kind})


def _check_sizes(world: World, num_users: int, num_items: int, where: str) -> None:
    if num_users != len(world.user_region) or num_items != world.num_items:
        raise DatasetError(
            f"{where}: {num_users} users and {num_items} items, but its world has "
            f"{len(world.user_region)} users and {world.num_items} items; is it the dataset "
            "this world was generated with?"
        )


def _log_from_dataset(world: World, dataset: CanonicalDataset) -> _EventLog:
    _check_sizes(world, len(dataset.users), len(dataset.items), dataset.meta.name)
    ev = dataset.events
    user = pd.Index(dataset.users["user_id"]).get_indexer(ev["user_id"])
    item = pd.Index(dataset.items["item_id"]).get_indexer(ev["item_id"])
    query = pa.chunked_array([pa.array(ev["query"], type=pa.string(), from_pandas=True)])
    return _EventLog(
        user=user.astype(np.int32),
        time=ev["timestamp"].to_numpy(dtype=np.int64),
        is_watch=(ev["type"] == EVENT_WATCH).to_numpy(dtype=bool),
        item=item.astype(np.int32),
        query=query,
    )


def _read_log(path: Path, world: World) -> _EventLog:
    """Read the events as world indices, one column at a time (bounded memory)."""
    users = pq.read_table(path / USERS.file_name, columns=["user_id"]).column(0)
    items = pq.read_table(path / ITEMS.file_name, columns=["item_id"]).column(0)
    _check_sizes(world, len(users), len(items), str(path))
    file = path / EVENTS.file_name

    def column(name: str) -> pa.ChunkedArray:
        try:
            return pq.read_table(file, columns=[name]).column(0)
        except (pa.ArrowInvalid, OSError, KeyError) as exc:
            raise DatasetError(f"{file}: unreadable column {name!r} ({exc})") from exc

    def index(name: str, ids: pa.ChunkedArray) -> np.ndarray:
        # one call over the whole column: the id lookup table is built once
        pos = pc.fill_null(pc.index_in(column(name), value_set=ids.combine_chunks()), -1)
        return np.asarray(pos.to_numpy(), dtype=np.int32)

    watch = pc.fill_null(pc.equal(column("type"), EVENT_WATCH), False)
    return _EventLog(
        user=index("user_id", users),
        time=np.asarray(column("timestamp").to_numpy(), dtype=np.int64),
        is_watch=np.asarray(watch.to_numpy(), dtype=bool),
        item=index("item_id", items),
        query=column("query"),
    )


@dataclass
class _Context:
    """What the mixture of each target row depends on."""

    rows: np.ndarray
    user: np.ndarray
    region: np.ndarray
    day: np.ndarray
    kind: np.ndarray  # NONE, SEARCH or WATCH: the previous event in the session
    prev_topic: np.ndarray  # topic of the previously watched video (kind WATCH)
    words: list[list[int]]  # word ids of the previous search (kind SEARCH); -1 if unknown


def _context(world: World, ev: _EventLog, rows: np.ndarray) -> _Context:
    """Each row's user, day and previous same-session event (strictly earlier only)."""
    n = len(ev.time)
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise IndexError(f"rows must index the {n} events, got {rows.min()}..{rows.max()}")
    if not ev.is_watch[rows].all():
        bad = rows[~ev.is_watch[rows]][:5].tolist()
        raise ValueError(f"oracle probabilities are for watch rows; rows {bad} are not watches")
    if (ev.user[rows] < 0).any():
        raise DatasetError("some target rows name users that are not in the world")
    order = np.lexsort((ev.time, ev.user))  # stable: equal times keep row order
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    user, t = ev.user[rows], ev.time[rows]
    cursor = rank[rows] - 1
    prev = np.full(rows.size, -1, dtype=np.int64)
    todo = np.arange(rows.size)
    while todo.size:  # step back over same-second events: they are not strictly earlier
        c = cursor[todo]
        cand = order[np.maximum(c, 0)]
        same_user = (c >= 0) & (ev.user[cand] == user[todo])
        earlier = same_user & (ev.time[cand] < t[todo])
        prev[todo[earlier]] = cand[earlier]
        tie = same_user & ~earlier
        cursor[todo[tie]] -= 1
        todo = todo[tie]
    has = prev >= 0
    has[has] = t[has] - ev.time[prev[has]] < SESSION_GAP
    kind = np.full(rows.size, NONE, dtype=np.int8)
    kind[has] = np.where(ev.is_watch[prev[has]], WATCH, SEARCH)
    prev_topic = np.full(rows.size, -1, dtype=np.int64)
    watched = kind == WATCH
    prev_item = ev.item[prev[watched]]
    prev_topic[watched] = np.where(prev_item >= 0, world.item_topic[np.maximum(prev_item, 0)], -1)
    words: list[list[int]] = [[] for _ in range(rows.size)]
    searched = np.flatnonzero(kind == SEARCH)
    if searched.size:
        texts = ev.query.take(pa.array(prev[searched])).to_pylist()
        for j, text in zip(searched.tolist(), texts, strict=True):
            words[j] = [world.word_id(w) for w in dict.fromkeys((text or "").lower().split())]
    day = (t - world.config.start_time) // DAY
    return _Context(rows, user, world.user_region[user], day, kind, prev_topic, words)


class _WordIndex:
    """word id -> the videos whose title holds it (items.parquet rows)."""

    def __init__(self, world: World) -> None:
        title_len = np.diff(world.title_offsets)
        owner = np.repeat(np.arange(world.num_items), title_len)
        by_word = np.argsort(world.title_words, kind="stable")
        self.items = owner[by_word]
        self.offsets = np.searchsorted(
            world.title_words[by_word], np.arange(len(world.vocabulary) + 1)
        )

    def __call__(self, word: int) -> np.ndarray:
        if word < 0:
            return self.items[:0]
        return self.items[self.offsets[word] : self.offsets[word + 1]]


def _probability_blocks(
    world: World, ev: _EventLog, rows: np.ndarray, block: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(positions, probabilities [len(positions), num_items])`` over ``rows``.

    Rows are visited grouped by (day, region), which share the day's weights; ``positions``
    index into ``rows``.
    """
    cfg, n_items, n_topics = world.config, world.num_items, world.num_topics
    ctx = _context(world, ev, np.asarray(rows, dtype=np.int64))
    block = block or max(1, min(1024, BLOCK_ELEMENTS // max(n_items, 1)))
    visit = np.lexsort((ctx.region, ctx.day))
    words = _WordIndex(world)
    share = cfg.base_topic_share
    key: tuple[int, int] | None = None
    w: np.ndarray = np.empty(0)
    z_topic: np.ndarray = np.empty(0)
    inv_z_topic: np.ndarray = np.empty(0)
    nonempty: np.ndarray = np.empty(0, dtype=bool)
    z = 1.0
    for lo in range(0, visit.size, block):
        positions = visit[lo : lo + block]
        out = np.empty((positions.size, n_items))
        theta = world.theta(ctx.user[positions])
        for j, p in enumerate(positions.tolist()):
            day, region = int(ctx.day[p]), int(ctx.region[p])
            if key != (day, region):
                key = (day, region)
                w = base_weights(cfg, world.item_quality, world.item_upload_day, day)
                w = w * np.where(world.item_region == region, cfg.region_boost, 1.0)
                z_topic = np.bincount(world.item_topic, weights=w, minlength=n_topics)
                z = float(w.sum())
                nonempty = z_topic > 0
                inv_z_topic = np.where(nonempty, 1.0 / np.where(nonempty, z_topic, 1.0), 0.0)
            # Every component is w(i) times a per-topic coefficient, except the search
            # words' videos: fold the mixture into coef[topic] and add those afterwards.
            # P_base = share * sum_k theta_k P_topic(.|k) + (1 - share) * P_global, where an
            # empty topic's P_topic is P_global.
            global_share = share * float(theta[j][~nonempty].sum()) + (1 - share)
            coef = share * theta[j] * inv_z_topic + global_share / z
            extra: list[tuple[np.ndarray, float]] = []
            kind = ctx.kind[p]
            if kind == WATCH:
                k = int(ctx.prev_topic[p])
                coef = (1 - cfg.topic_mix) * coef
                if k >= 0 and nonempty[k]:
                    coef[k] += cfg.topic_mix * inv_z_topic[k]
                else:  # P_topic of an empty (or unknown) topic is P_global
                    coef += cfg.topic_mix / z
            elif kind == SEARCH and ctx.words[p]:  # (an empty query leaves P_base alone)
                query = ctx.words[p]
                share_word = cfg.search_mix / max(len(query), 1)
                fallback = 0
                for word in query:
                    idx = words(word)
                    z_word = float(w[idx].sum())
                    if z_word > 0:
                        extra.append((idx, share_word / z_word))
                    else:  # nothing watchable holds this word: its share goes to P_base
                        fallback += 1
                coef = (1 - cfg.search_mix + fallback * share_word) * coef
            row = out[j]
            np.multiply(w, coef[world.item_topic], out=row)
            for idx, scale in extra:
                row[idx] += scale * w[idx]
        yield positions, out


def oracle_probabilities(world: World, dataset: CanonicalDataset, rows: np.ndarray) -> np.ndarray:
    """True next-watch probabilities ``[len(rows), num_items]`` (columns: dataset.items order).

    ``rows`` are positions of watch events in ``dataset.events``. Each row's distribution is
    computed from the hidden parameters and the user's strictly-earlier events only. The
    result is dense: for big catalogs, pass few rows at a time.
    """
    ev = _log_from_dataset(world, dataset)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    out = np.empty((rows.size, world.num_items))
    for positions, probs in _probability_blocks(world, ev, rows):
        out[positions] = probs
    return out


@dataclass
class OracleResult:
    """The oracle's Recall@K on held-out watches, next to most-popular's."""

    split: Split
    num_events: int  # held-out watches scored
    recall: dict[int, float]
    popularity_recall: dict[int, float]
    num_holdout: int = 0  # held-out watches available before sampling
    mean_log_probability: float = 0.0  # oracle's mean ln P(true video), nats
    seconds: float = 0.0
    ks: tuple[int, ...] = field(default_factory=tuple)


def _ranks(scores: np.ndarray, true: np.ndarray) -> np.ndarray:
    """0-based rank of ``true[j]`` in ``scores[j]`` (descending; ties by item index)."""
    rows = np.arange(len(true))
    s_true = scores[rows, true][:, None]
    ahead = (scores > s_true) | ((scores == s_true) & (np.arange(scores.shape[1]) < true[:, None]))
    return ahead.sum(axis=1)


def oracle_recall(
    data_dir: str | Path,
    split: Split,
    ks: Sequence[int] = (10, 50, 100),
    max_events: int = 2000,
    seed: int = 0,
) -> OracleResult:
    """Recall@K of the exact probabilities vs most-popular on (a sample of) held-out watches.

    Recall@K is the share of sampled held-out watches whose video is in the top K. The
    most-popular baseline ranks videos by their count among the watches not held out (the
    training period, for the time split).
    """
    started = time.perf_counter()
    path = Path(data_dir)
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) <= 0:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if max_events <= 0:
        raise ValueError(f"max_events must be positive, got {max_events}")
    world = load_world(path)
    ev = _read_log(path, world)
    held = holdout_mask(ev.frame(), split)
    candidates = np.flatnonzero(held & (ev.item >= 0))
    if not candidates.size:
        raise ValueError(f"split {split} holds out no watches of {path}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(candidates, size=min(max_events, candidates.size), replace=False))

    counts = np.bincount(ev.item[ev.is_watch & ~held & (ev.item >= 0)], minlength=world.num_items)
    pop_order = np.lexsort((np.arange(world.num_items), -counts))
    pop_rank = np.empty(world.num_items, dtype=np.int64)
    pop_rank[pop_order] = np.arange(world.num_items)

    ranks = np.empty(rows.size, dtype=np.int64)
    log_prob = np.empty(rows.size)
    for positions, probs in _probability_blocks(world, ev, rows):
        true = ev.item[rows[positions]]
        ranks[positions] = _ranks(probs, true)
        log_prob[positions] = np.log(probs[np.arange(len(true)), true])
    true_items = ev.item[rows]
    result = OracleResult(
        split=split,
        num_events=int(rows.size),
        recall={k: float((ranks < k).mean()) for k in ks},
        popularity_recall={k: float((pop_rank[true_items] < k).mean()) for k in ks},
        num_holdout=int(candidates.size),
        mean_log_probability=float(log_prob.mean()),
        seconds=time.perf_counter() - started,
        ks=ks,
    )
    log.info(
        "oracle on %s (%s split, %d of %d held-out watches) in %.1f s: %s",
        path,
        split.name,
        result.num_events,
        result.num_holdout,
        result.seconds,
        ", ".join(
            f"R@{k} {result.recall[k]:.3f} (most-popular {result.popularity_recall[k]:.3f})"
            for k in ks
        ),
    )
    return result

"""Next-watch training and evaluation examples, written as Parquet shards.

One example per watch: the label video and the context from strictly earlier events only.
Users are hashed into partitions so that worlds larger than memory are built one partition
at a time; vocabularies come from training data only (a first pass over the partitions).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.dataset.io import DatasetError, embeddings_from_arrow, read_meta
from recsys.dataset.schema import EVENT_SEARCH, EVENT_WATCH, ITEMS, USERS
from recsys.dataset.splits import Split
from recsys.examples import partitions as P
from recsys.features import contract as F
from recsys.features.contract import FeatureConfig
from recsys.features.encoder import (
    EventLog,
    encode_queries,
    encode_searches,
    example_age_days,
    known_watches,
    tokenize,
)
from recsys.features.tables import UserTable
from recsys.features.vocab import Vocabularies, Vocabulary
from recsys.logs import ProgressFn

log = logging.getLogger(__name__)

EXAMPLES_META = "examples.json"
VOCAB_FILE = "vocabularies.json"
EXAMPLES_FORMAT = 1
ROWS_PER_SHARD = 262_144
# Examples encoded at a time (bounds the memory of context windows).
EXAMPLE_CHUNK = 65_536
EVENT_COLUMNS = P.EVENT_COLUMNS
# Columns of an example shard besides the query features.
LABEL_TIME = "timestamp"


@dataclass
class ExampleSet:
    """What ``examples.json`` records: the split, counts, sizes and the data fingerprint."""

    split: str
    cutoff: int | None
    train_end: int
    data_fingerprint: str
    feature_config: dict[str, object]
    seed: int
    counts: dict[str, int] = field(default_factory=dict)
    train_shards: list[str] = field(default_factory=list)
    eval_shards: list[str] = field(default_factory=list)
    format: int = EXAMPLES_FORMAT

    @classmethod
    def load(cls, path: str | Path) -> ExampleSet:
        """Read ``examples.json`` of an examples folder."""
        raw = json.loads((Path(path) / EXAMPLES_META).read_text())
        if raw.get("format") != EXAMPLES_FORMAT:
            raise DatasetError(
                f"{path}: examples format {raw.get('format')!r}, expected {EXAMPLES_FORMAT}"
            )
        return cls(**raw)


def build_vocabularies(
    parts: list[Path],
    users: pd.DataFrame,
    items: pd.DataFrame,
    split: Split,
    cutoff: int | None,
    user_rank: np.ndarray,
) -> Vocabularies:
    """Vocabularies from the training part of the event log only (no evaluation-only ids)."""
    item_counts = np.zeros(len(items), dtype=np.int64)
    token_counts: Counter[str] = Counter()
    active = np.zeros(len(users), dtype=bool)
    for path in parts:
        ev = P.load_events(path, user_rank)
        train = P.training_mask(ev, P.holdout(ev, split, cutoff), split, cutoff)
        watched = ev.item_row[train & ev.is_watch]
        item_counts += np.bincount(watched, minlength=len(items))
        codes, tokens = P.distinct_queries(ev.queries)
        uses = np.bincount(codes[train[ev.is_search]], minlength=len(tokens))
        for i in np.flatnonzero(uses):
            for tok in tokens[i]:
                token_counts[tok] += int(uses[i])
        active[ev.user_row[train]] = True
    seen = np.flatnonzero(item_counts)
    seen_items = items.iloc[seen]
    for title in seen_items["title"]:
        token_counts.update(tokenize(title) if isinstance(title, str) else [])
    seen_users = users[active]
    region = seen_users["region"] if "region" in seen_users.columns else pd.Series(dtype=object)
    # Items by decreasing count, ties by id.
    ids = seen_items["item_id"].astype(str).to_numpy(dtype=object)
    by_id = np.argsort(ids, kind="stable")
    order = by_id[np.argsort(-item_counts[seen][by_id], kind="stable")]

    def from_counts(name: str, counts: Counter[str]) -> Vocabulary:
        order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return Vocabulary(name, [k for k, _ in order])

    return Vocabularies(
        items=Vocabulary("items", ids[order].tolist()),
        tokens=from_counts("tokens", token_counts),
        countries=Vocabulary.build("countries", seen_users["country"]),
        regions=Vocabulary.build("regions", region),
        genders=Vocabulary.build("genders", seen_users["gender"]),
        channels=Vocabulary.build("channels", seen_items["channel"]),
        categories=Vocabulary.build("categories", seen_items["category"]),
    )


def event_log(
    events: pd.DataFrame, vocabs: Vocabularies
) -> tuple[EventLog, pd.DataFrame, pd.DataFrame]:
    """Encode user-sorted events: (log, watches frame, searches frame) of the events it keeps.

    Watches of videos outside the vocabulary and blank searches are left out of contexts.
    """
    watches = events[(events["type"] == EVENT_WATCH).to_numpy()]
    ids = vocabs.items.lookup(watches["item_id"])
    known = known_watches(ids)
    in_context = watches[known]
    searches = events[(events["type"] == EVENT_SEARCH).to_numpy()]
    queries = pa.array(searches["query"].to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    kept, tokens, offsets = encode_searches(queries, vocabs)
    searches = searches[kept]
    log_ = EventLog(
        watch_items=ids[known],
        watch_time=in_context["timestamp"].to_numpy(np.int64),
        search_time=searches["timestamp"].to_numpy(np.int64),
        search_offsets=offsets,
        search_tokens=tokens,
    )
    return log_, in_context, searches


def _ranges_before(
    user_codes: np.ndarray, times: np.ndarray, ev_user_codes: np.ndarray, ev_times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each (user, time): the range of that user's events strictly earlier (sorted input)."""
    key = ev_user_codes.astype(np.int64) << 32 | ev_times.astype(np.int64)
    q = user_codes.astype(np.int64) << 32
    start = np.searchsorted(key, q, side="left")
    end = np.searchsorted(key, q | times.astype(np.int64), side="left")
    return start, end


@dataclass
class _PartitionLog:
    """A partition's events as the encoder's log, with the user (sort key) of each event kept."""

    log: EventLog
    watch_users: np.ndarray
    search_users: np.ndarray

    @classmethod
    def encode(cls, ev: P.Events, item_vocab: np.ndarray, vocabs: Vocabularies) -> _PartitionLog:
        """Encode ``ev`` (``item_vocab``: the vocabulary id of each catalog row)."""
        watch_ids = item_vocab[ev.item_row[ev.is_watch]]
        known = known_watches(watch_ids)
        kept, tokens, offsets = encode_searches(ev.queries, vocabs)
        log_ = EventLog(
            watch_items=watch_ids[known],
            watch_time=ev.timestamp[ev.is_watch][known],
            search_time=ev.timestamp[ev.is_search][kept],
            search_offsets=offsets,
            search_tokens=tokens,
        )
        return cls(log_, ev.user[ev.is_watch][known], ev.user[ev.is_search][kept])


def _examples_for_partition(
    ev: P.Events,
    vocabs: Vocabularies,
    item_vocab: np.ndarray,
    users: UserTable,
    split: Split,
    cutoff: int | None,
    train_end: int,
    config: FeatureConfig,
    rng: np.random.Generator,
    writers: tuple[_ShardWriter, _ShardWriter],
) -> None:
    """Write the train and eval examples of one partition's (user-sorted) events.

    Both are encoded and written EXAMPLE_CHUNK rows at a time so memory does not grow with
    the partition.
    """
    plog = _PartitionLog.encode(ev, item_vocab, vocabs)
    held = P.holdout(ev, split, cutoff)
    train = P.training_mask(ev, held, split, cutoff)
    for window_end, mask, writer in (
        (train_end, ev.is_watch & train, writers[0]),
        (None, ev.is_watch & held, writers[1]),
    ):
        labels = _ordered_labels(ev, np.flatnonzero(mask), window_end is not None, config, rng)
        for lo in range(0, len(labels), EXAMPLE_CHUNK):
            # Encode the chunk in event order (cache-friendly gathers), then restore its order.
            part = labels[lo : lo + EXAMPLE_CHUNK]
            srt = np.argsort(part)
            inv = np.empty_like(srt)
            inv[srt] = np.arange(len(srt))
            feats = _encode_labels(ev, plog, part[srt], users, window_end, config)
            writer.write(_to_arrow({name: arr[inv] for name, arr in feats.items()}))


def _ordered_labels(
    ev: P.Events, labels: np.ndarray, train: bool, config: FeatureConfig, rng: np.random.Generator
) -> np.ndarray:
    """Training labels capped per user (seeded) and shuffled; eval labels by label time."""
    if not train:
        return labels[np.argsort(ev.timestamp[labels], kind="stable")]
    if config.max_examples_per_user is not None and len(labels):
        # Cap each user's examples so heavy users don't dominate: a seeded subset.
        labels = labels[P.cap_per_user(ev.user[labels], config.max_examples_per_user, rng)]
    # Shuffle training rows within the partition so shards are not grouped by user.
    return labels[rng.permutation(len(labels))]


def _encode_labels(
    ev: P.Events,
    plog: _PartitionLog,
    labels: np.ndarray,
    users: UserTable,
    window_end: int | None,
    config: FeatureConfig,
) -> dict[str, np.ndarray]:
    """Examples of the watches ``labels`` (event rows): query features, label and bookkeeping.

    ``window_end`` is the training window's end (example age counts from it); None for
    evaluation examples, encoded as a serving request is (example age 0).
    """
    lab_users = ev.user[labels]
    lab_time = ev.timestamp[labels]
    w_range = _ranges_before(lab_users, lab_time, plog.watch_users, plog.log.watch_time)
    s_range = _ranges_before(lab_users, lab_time, plog.search_users, plog.log.search_time)
    urows = ev.user_row[labels].astype(np.int64)
    if window_end is None:
        age = np.zeros(len(labels), dtype=np.float32)
    else:
        age = example_age_days(window_end, lab_time)
    feats = encode_queries(plog.log, w_range, s_range, users.features(urows), age, lab_time, config)
    feats[F.ITEM_INDEX] = ev.item_row[labels].astype(np.int32)
    feats[F.USER_INDEX] = urows.astype(np.int32)
    feats[LABEL_TIME] = lab_time.astype(np.int64)
    return feats


def _to_arrow(feats: dict[str, np.ndarray]) -> pa.Table:
    cols = {}
    for name, arr in feats.items():
        if arr.ndim == 2:
            cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])
        else:
            cols[name] = pa.array(arr)
    return pa.table(cols)


class _ShardWriter:
    """Writes example tables into numbered shards of at most ROWS_PER_SHARD rows."""

    def __init__(self, out: Path, prefix: str) -> None:
        self.out, self.prefix = out, prefix
        self.names: list[str] = []
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._in_shard = 0

    def write(self, tbl: pa.Table) -> None:
        start = 0
        while start < tbl.num_rows:
            if self._writer is None or self._in_shard >= ROWS_PER_SHARD:
                self.close()
                name = f"{self.prefix}-{len(self.names):05d}.parquet"
                self.names.append(name)
                # Uncompressed (still dictionary-encoded): cheaper to write and to read back.
                self._writer = pq.ParquetWriter(self.out / name, tbl.schema, compression="none")
                self._in_shard = 0
            take = min(ROWS_PER_SHARD - self._in_shard, tbl.num_rows - start)
            self._writer.write_table(tbl.slice(start, take), row_group_size=16_384)
            self._in_shard += take
            self.rows += take
            start += take

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def load_catalog(data_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray | None]:
    """Users, items (without embeddings) and the content embeddings of a dataset."""
    data_dir = Path(data_dir)
    users = pq.read_table(data_dir / USERS.file_name).to_pandas()
    items_tbl = pq.read_table(data_dir / ITEMS.file_name)
    emb = None
    if "content_embedding" in items_tbl.column_names:
        emb = embeddings_from_arrow(items_tbl.column("content_embedding"))
        items_tbl = items_tbl.drop_columns(["content_embedding"])
    return users, items_tbl.to_pandas(), emb


def build_examples(
    data_dir: str | Path,
    out: str | Path,
    split: Split,
    config: FeatureConfig | None = None,
    seed: int = 0,
    partitions: int | None = None,
    progress: ProgressFn | None = None,
) -> ExampleSet:
    """Build train/eval example shards and vocabularies from a (validated) canonical dataset.

    Written under a temporary name and renamed into ``out`` when complete.
    """
    config = config or FeatureConfig()
    data_dir, out = Path(data_dir), Path(out)
    started = time.perf_counter()
    meta = read_meta(data_dir)
    if not meta.time_range:
        raise DatasetError(f"{data_dir}: dataset has no events")
    t_lo, t_hi = meta.time_range
    cutoff = split.resolve_cutoff(np.array([t_lo, t_hi])) if split.name == "time" else None
    result = ExampleSet(
        split=split.name,
        cutoff=cutoff,
        train_end=int(cutoff if cutoff is not None else t_hi),
        data_fingerprint=meta.fingerprint,
        feature_config=asdict(config),
        seed=seed,
    )
    n_events = meta.counts.get("events", 0)
    partitions = partitions or max(1, -(-n_events // 4_000_000))
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        _write_examples(data_dir, tmp, split, config, partitions, result, progress)
        (tmp / EXAMPLES_META).write_text(json.dumps(asdict(result), indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "built %d train and %d eval examples (%s split) from %s into %s in %.1f s",
        result.counts["train"],
        result.counts["eval"],
        split.name,
        data_dir,
        out,
        time.perf_counter() - started,
    )
    return result


def _write_examples(
    data_dir: Path,
    tmp: Path,
    split: Split,
    config: FeatureConfig,
    partitions: int,
    result: ExampleSet,
    progress: ProgressFn | None,
) -> None:
    """Partition the events, build vocabularies, write the shards into ``tmp``; fill ``result``."""
    users_df, items_df, _ = load_catalog(data_dir)
    user_ids = pa.array(users_df["user_id"].astype(str).to_numpy(dtype=object), pa.string())
    item_ids = pa.array(items_df["item_id"].astype(str).to_numpy(dtype=object), pa.string())
    parts = P.write_partitions(data_dir, tmp, partitions, user_ids, item_ids)
    # Events sort by user id string, as the rank of each user's id among all ids.
    user_rank = np.empty(len(users_df), dtype=np.int64)
    user_rank[np.argsort(user_ids.to_numpy(zero_copy_only=False), kind="stable")] = np.arange(
        len(users_df)
    )
    cutoff = result.cutoff
    vocabs = build_vocabularies(parts, users_df, items_df, split, cutoff, user_rank)
    vocabs.save(tmp / VOCAB_FILE)
    users = UserTable.build(users_df, vocabs)
    item_vocab = vocabs.items.lookup(items_df["item_id"])
    rng = np.random.default_rng(result.seed)
    train_w, eval_w = _ShardWriter(tmp, "train"), _ShardWriter(tmp, "eval")
    for i, path in enumerate(parts):
        events = P.load_events(path, user_rank)
        _examples_for_partition(
            events,
            vocabs,
            item_vocab,
            users,
            split,
            cutoff,
            result.train_end,
            config,
            rng,
            (train_w, eval_w),
        )
        del events
        path.unlink()
        if progress:
            progress(i + 1, len(parts))
    train_w.close()
    eval_w.close()
    result.counts = {"train": train_w.rows, "eval": eval_w.rows, **vocabs.sizes()}
    result.train_shards = train_w.names
    result.eval_shards = eval_w.names


def read_examples(
    example_dir: str | Path, kind: str, limit: int | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """All (or a seeded sample of ``limit``) examples of ``kind`` as arrays, label times included.

    2-D features come back as ``[n, width]`` matrices; rows keep their shard order.
    """
    example_dir = Path(example_dir)
    meta = ExampleSet.load(example_dir)
    names = meta.train_shards if kind == "train" else meta.eval_shards
    tables = [pq.read_table(example_dir / n) for n in names]
    if not tables:
        return {}
    tbl = pa.concat_tables(tables)
    if limit is not None and tbl.num_rows > limit:
        keep = np.sort(np.random.default_rng(seed).choice(tbl.num_rows, limit, replace=False))
        tbl = tbl.take(pa.array(keep))
    return table_to_numpy(tbl)


def table_to_numpy(tbl: pa.Table | pa.RecordBatch) -> dict[str, np.ndarray]:
    """Columns as arrays; fixed-size list columns (windows) as ``[n, width]`` matrices."""
    out: dict[str, np.ndarray] = {}
    for name in tbl.schema.names:
        col = tbl.column(name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            out[name] = col.flatten().to_numpy().reshape(-1, col.type.list_size)
        else:
            out[name] = col.to_numpy()
    return out

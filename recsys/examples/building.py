"""Next-watch training and evaluation examples, written as Parquet shards.

One example per watch: the label video and the context from strictly earlier events only.
Users are hashed into partitions so that worlds larger than memory are built one partition
at a time; vocabularies come from training data only (a first pass over the partitions).
The per-partition step (:func:`partition_examples`) and the vocabulary counts
(:class:`VocabCounts`) are shared with the Apache Beam pipeline of
:mod:`recsys.examples.beam_building`, so both builders write the same shards.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recsys.dataset.io import DatasetError, DatasetMeta, embeddings_from_arrow, read_meta
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
# Events per user partition by default: bounds the memory of one partition's step.
EVENTS_PER_PARTITION = 4_000_000
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
        """Read ``examples.json`` of an examples folder (a path or URI)."""
        return cls.from_json(read_example_text(path, EXAMPLES_META), source=path)

    @classmethod
    def from_json(cls, text: str, source: object) -> ExampleSet:
        """Parse the text of ``examples.json`` (``source`` names the folder in errors)."""
        raw = json.loads(text)
        if raw.get("format") != EXAMPLES_FORMAT:
            raise DatasetError(
                f"{source}: examples format {raw.get('format')!r}, expected {EXAMPLES_FORMAT}"
            )
        return cls(**raw)

    def to_json(self) -> str:
        """The text of ``examples.json``."""
        return json.dumps(asdict(self), indent=2) + "\n"

    def add_shards(self, written: list[PartitionShards], vocabs: Vocabularies) -> None:
        """Record the shards of every partition (in partition order), the counts and sizes."""
        written = sorted(written, key=lambda w: w.partition)
        self.train_shards = [name for w in written for name, _ in w.train]
        self.eval_shards = [name for w in written for name, _ in w.eval]
        self.counts = {
            "train": sum(rows for w in written for _, rows in w.train),
            "eval": sum(rows for w in written for _, rows in w.eval),
            **vocabs.sizes(),
        }


@dataclass
class VocabCounts:
    """What the vocabularies are made of, from training events only; sums over partitions.

    ``item_counts``: ``[num_items]`` training watches per catalog row; ``token_counts``:
    search tokens of training searches; ``active``: ``[num_users]`` whether a user has a
    training event.
    """

    item_counts: np.ndarray
    token_counts: Counter[str]
    active: np.ndarray

    @classmethod
    def empty(cls, num_users: int, num_items: int) -> VocabCounts:
        """Nothing counted yet."""
        return cls(np.zeros(num_items, np.int64), Counter(), np.zeros(num_users, dtype=bool))

    @classmethod
    def of_partition(
        cls, ev: P.Events, split: Split, cutoff: int | None, num_users: int, num_items: int
    ) -> VocabCounts:
        """The counts of one partition's (user-sorted) events."""
        counts = cls.empty(num_users, num_items)
        train = P.training_mask(ev, P.holdout(ev, split, cutoff), split, cutoff)
        counts.item_counts += np.bincount(ev.item_row[train & ev.is_watch], minlength=num_items)
        codes, tokens = P.distinct_queries(ev.queries)
        uses = np.bincount(codes[train[ev.is_search]], minlength=len(tokens))
        for i in np.flatnonzero(uses):
            for tok in tokens[i]:
                counts.token_counts[tok] += int(uses[i])
        counts.active[ev.user_row[train]] = True
        return counts

    def merge(self, other: VocabCounts) -> VocabCounts:
        """Add ``other`` into these counts (any order gives the same sums); returns self."""
        self.item_counts += other.item_counts
        self.token_counts.update(other.token_counts)
        self.active |= other.active
        return self


def vocabularies_from_counts(
    counts: VocabCounts, users: pd.DataFrame, items: pd.DataFrame
) -> Vocabularies:
    """Vocabularies of the counted training events (no evaluation-only ids).

    Items by decreasing count (ties by id), tokens likewise (titles of seen videos count
    too); the user and catalog attributes of the active users and seen videos.
    """
    item_counts = counts.item_counts
    token_counts = Counter(counts.token_counts)
    seen = np.flatnonzero(item_counts)
    seen_items = items.iloc[seen]
    for title in seen_items["title"]:
        token_counts.update(tokenize(title) if isinstance(title, str) else [])
    seen_users = users[counts.active]
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


def build_vocabularies(
    parts: list[Path],
    users: pd.DataFrame,
    items: pd.DataFrame,
    split: Split,
    cutoff: int | None,
    user_rank: np.ndarray,
) -> Vocabularies:
    """Vocabularies from the training part of the event log only (one pass over partitions)."""
    counts = VocabCounts.empty(len(users), len(items))
    for path in parts:
        ev = P.load_events(path, user_rank)
        counts.merge(VocabCounts.of_partition(ev, split, cutoff, len(users), len(items)))
    return vocabularies_from_counts(counts, users, items)


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


@dataclass(frozen=True)
class ExampleContext:
    """What every partition's examples are built from: the same on every worker.

    ``item_vocab``: ``[num_items]`` the vocabulary id of each catalog row; ``train_end``:
    the training window's end (example age counts from it).
    """

    vocabs: Vocabularies
    item_vocab: np.ndarray
    users: UserTable
    split: Split
    cutoff: int | None
    train_end: int
    config: FeatureConfig
    seed: int

    @classmethod
    def build(
        cls,
        vocabs: Vocabularies,
        users: pd.DataFrame,
        items: pd.DataFrame,
        split: Split,
        example_set: ExampleSet,
        config: FeatureConfig,
    ) -> ExampleContext:
        """The context of a build recorded by ``example_set`` (cut-off, window end, seed)."""
        return cls(
            vocabs=vocabs,
            item_vocab=vocabs.items.lookup(items["item_id"]),
            users=UserTable.build(users, vocabs),
            split=split,
            cutoff=example_set.cutoff,
            train_end=example_set.train_end,
            config=config,
            seed=example_set.seed,
        )


@dataclass
class PartitionShards:
    """The shards one partition's examples went to: ``(file name, rows)`` in write order."""

    partition: int
    train: list[tuple[str, int]]
    eval: list[tuple[str, int]]


# Opens a shard for writing, given its file name: a local path, or a writable binary file
# (which the shard writer closes).
ShardOpener = Callable[[str], str | Path | BinaryIO]


def partition_examples(
    partition: int, ev: P.Events, ctx: ExampleContext, open_shard: ShardOpener
) -> PartitionShards:
    """Write the train and eval examples of partition ``partition`` into their own shards.

    The one per-partition step of every builder (local or Apache Beam): its output depends
    only on the partition's events and ``ctx`` (the random generator is seeded by the build's
    seed and the partition), so any runner, in any order, writes the same shards. Shards
    are named ``train-PPPPP-KKKKK.parquet`` and ``eval-PPPPP-KKKKK.parquet``.
    """
    rng = np.random.default_rng([ctx.seed, partition])
    writers = (
        _ShardWriter(open_shard, f"train-{partition:05d}"),
        _ShardWriter(open_shard, f"eval-{partition:05d}"),
    )
    try:
        _examples_for_partition(ev, ctx, rng, writers)
    finally:
        for writer in writers:
            writer.close()
    return PartitionShards(partition, writers[0].shards, writers[1].shards)


def _examples_for_partition(
    ev: P.Events,
    ctx: ExampleContext,
    rng: np.random.Generator,
    writers: tuple[_ShardWriter, _ShardWriter],
) -> None:
    """Write the train and eval examples of one partition's (user-sorted) events.

    Both are encoded and written EXAMPLE_CHUNK rows at a time so memory does not grow with
    the partition.
    """
    split, cutoff, config = ctx.split, ctx.cutoff, ctx.config
    plog = _PartitionLog.encode(ev, ctx.item_vocab, ctx.vocabs)
    held = P.holdout(ev, split, cutoff)
    train = P.training_mask(ev, held, split, cutoff)
    for window_end, mask, writer in (
        (ctx.train_end, ev.is_watch & train, writers[0]),
        (None, ev.is_watch & held, writers[1]),
    ):
        labels = _ordered_labels(ev, np.flatnonzero(mask), window_end is not None, config, rng)
        for lo in range(0, len(labels), EXAMPLE_CHUNK):
            # Encode the chunk in event order (cache-friendly gathers), then restore its order.
            part = labels[lo : lo + EXAMPLE_CHUNK]
            srt = np.argsort(part)
            inv = np.empty_like(srt)
            inv[srt] = np.arange(len(srt))
            feats = _encode_labels(ev, plog, part[srt], ctx.users, window_end, config)
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

    def __init__(self, open_shard: ShardOpener, prefix: str) -> None:
        self.open_shard, self.prefix = open_shard, prefix
        self.shards: list[tuple[str, int]] = []
        self._writer: pq.ParquetWriter | None = None
        self._sink: str | Path | BinaryIO | None = None
        self._in_shard = 0

    def write(self, tbl: pa.Table) -> None:
        start = 0
        while start < tbl.num_rows:
            if self._writer is None or self._in_shard >= ROWS_PER_SHARD:
                self.close()
                name = f"{self.prefix}-{len(self.shards):05d}.parquet"
                self._sink = self.open_shard(name)
                # Uncompressed (still dictionary-encoded): cheaper to write and to read back.
                self._writer = pq.ParquetWriter(self._sink, tbl.schema, compression="none")
                self.shards.append((name, 0))
                self._in_shard = 0
            take = min(ROWS_PER_SHARD - self._in_shard, tbl.num_rows - start)
            self._writer.write_table(tbl.slice(start, take), row_group_size=16_384)
            self._in_shard += take
            name, rows = self.shards[-1]
            self.shards[-1] = (name, rows + take)
            start += take

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._sink is not None and not isinstance(self._sink, str | Path):
            self._sink.close()
        self._sink = None


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


def new_example_set(
    meta: DatasetMeta, source: object, split: Split, config: FeatureConfig, seed: int
) -> ExampleSet:
    """The record of a build from the dataset ``meta`` describes (``source`` names it in errors).

    Its cut-off and window end come from the dataset's time range; shards and counts are
    filled by :meth:`ExampleSet.add_shards`.
    """
    if not meta.time_range:
        raise DatasetError(f"{source}: dataset has no events")
    t_lo, t_hi = meta.time_range
    cutoff = split.resolve_cutoff(np.array([t_lo, t_hi])) if split.name == "time" else None
    return ExampleSet(
        split=split.name,
        cutoff=cutoff,
        train_end=int(cutoff if cutoff is not None else t_hi),
        data_fingerprint=meta.fingerprint,
        feature_config=asdict(config),
        seed=seed,
    )


def default_partitions(meta: DatasetMeta) -> int:
    """User partitions for a dataset: one per EVENTS_PER_PARTITION events (memory per step)."""
    return max(1, -(-meta.counts.get("events", 0) // EVENTS_PER_PARTITION))


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

    The local builder: one process, one partition at a time. Written under a temporary name
    and renamed into ``out`` when complete.
    """
    config = config or FeatureConfig()
    data_dir, out = Path(data_dir), Path(out)
    started = time.perf_counter()
    meta = read_meta(data_dir)
    result = new_example_set(meta, data_dir, split, config, seed)
    partitions = partitions or default_partitions(meta)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        _write_examples(data_dir, tmp, split, config, partitions, result, progress)
        (tmp / EXAMPLES_META).write_text(result.to_json())
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


def user_sort_rank(user_ids: np.ndarray) -> np.ndarray:
    """``[num_users]`` the rank of each user's id string among all ids (events sort by it)."""
    rank = np.empty(len(user_ids), dtype=np.int64)
    rank[np.argsort(user_ids, kind="stable")] = np.arange(len(user_ids))
    return rank


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
    user_rank = user_sort_rank(user_ids.to_numpy(zero_copy_only=False))
    vocabs = build_vocabularies(
        list(parts.values()), users_df, items_df, split, result.cutoff, user_rank
    )
    vocabs.save(tmp / VOCAB_FILE)
    ctx = ExampleContext.build(vocabs, users_df, items_df, split, result, config)
    written = []
    for i, (partition, path) in enumerate(parts.items()):
        events = P.load_events(path, user_rank)
        written.append(partition_examples(partition, events, ctx, lambda name: tmp / name))
        del events
        path.unlink()
        if progress:
            progress(i + 1, len(parts))
    result.add_shards(written, vocabs)


def open_example_file(folder: str | Path, name: str) -> pa.NativeFile:
    """The file ``name`` of an examples folder, for reading.

    ``folder``: a local path, or a URI that pyarrow's filesystems open (``gs://``, ``s3://``,
    ``hdfs://``), so training reads the shards wherever a Beam pipeline wrote them.
    """
    text = str(folder)
    if "://" not in text:
        text = str(Path(text).resolve())
    fs, root = pafs.FileSystem.from_uri(text)
    return fs.open_input_file(f"{root.rstrip('/')}/{name}")


def read_example_text(folder: str | Path, name: str) -> str:
    """The text of a metadata file of an examples folder (:func:`open_example_file`)."""
    with open_example_file(folder, name) as f:
        return bytes(f.read()).decode()


def read_examples(
    example_dir: str | Path, kind: str, limit: int | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """All (or a seeded sample of ``limit``) examples of ``kind`` as arrays, label times included.

    2-D features come back as ``[n, width]`` matrices; rows keep their shard order.
    """
    meta = ExampleSet.load(example_dir)
    names = meta.train_shards if kind == "train" else meta.eval_shards
    tables = [pq.read_table(open_example_file(example_dir, n)) for n in names]
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

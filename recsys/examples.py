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

from recsys import features as F
from recsys.catalog import UserTable, encode_texts
from recsys.context import EventLog, encode_queries
from recsys.dataset import DatasetError, embeddings_from_arrow, iter_event_batches, read_meta
from recsys.features import FeatureConfig, tokenize
from recsys.logs import ProgressFn
from recsys.schema import EVENT_SEARCH, EVENT_WATCH
from recsys.splits import Split, holdout_mask
from recsys.vocab import Vocabularies, Vocabulary

log = logging.getLogger(__name__)

EXAMPLES_META = "examples.json"
VOCAB_FILE = "vocabularies.json"
EXAMPLES_FORMAT = 1
ROWS_PER_SHARD = 262_144
EVENT_COLUMNS = ["user_id", "timestamp", "type", "item_id", "query"]
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


def _partition_of(user_ids: pd.Series | np.ndarray, partitions: int) -> np.ndarray:
    hashed = pd.util.hash_array(np.asarray(user_ids, dtype=object))
    return (hashed % np.uint64(partitions)).astype(np.int64)


def _write_partitions(
    data_dir: Path, work: Path, partitions: int, progress: ProgressFn | None
) -> list[Path]:
    """Stream the event log into per-partition Parquet files (users hashed to partitions)."""
    total = read_meta(data_dir).counts.get("events", 0)
    writers: dict[int, pq.ParquetWriter] = {}
    paths = [work / f"events-part-{p:04d}.parquet" for p in range(partitions)]
    done = 0
    for batch in iter_event_batches(data_dir, columns=EVENT_COLUMNS):
        part = _partition_of(batch.column("user_id").to_numpy(zero_copy_only=False), partitions)
        tbl = pa.Table.from_batches([batch])
        for p in np.unique(part):
            if p not in writers:
                writers[int(p)] = pq.ParquetWriter(paths[p], tbl.schema)
            writers[int(p)].write_table(tbl.filter(pa.array(part == p)))
        done += batch.num_rows
        if progress:
            progress(done, total)
    for w in writers.values():
        w.close()
    return [p for p in paths if p.exists()]


def _load_events(path: Path) -> pd.DataFrame:
    """A partition's events sorted by user then time (ties keep file order)."""
    frame = pq.read_table(path, columns=EVENT_COLUMNS).to_pandas()
    frame["_row"] = np.arange(len(frame))
    return frame.sort_values(["user_id", "timestamp", "_row"], kind="stable").reset_index(drop=True)


def _training_mask(events: pd.DataFrame, split: Split, cutoff: int | None) -> np.ndarray:
    """Events usable for training and vocabularies: before the cut-off, never held out."""
    held = holdout_mask(events, Split(split.name, cutoff=cutoff, eval_fraction=split.eval_fraction))
    if split.name == "time":
        assert cutoff is not None
        return (events["timestamp"].to_numpy() < cutoff) & ~held
    return ~held


def build_vocabularies(
    parts: list[Path], users: pd.DataFrame, items: pd.DataFrame, split: Split, cutoff: int | None
) -> Vocabularies:
    """Vocabularies from the training part of the event log only (no evaluation-only ids)."""
    item_counts: Counter[str] = Counter()
    token_counts: Counter[str] = Counter()
    active: set[str] = set()
    for path in parts:
        ev = _load_events(path)
        train = ev[_training_mask(ev, split, cutoff)]
        watches = train[train["type"] == EVENT_WATCH]
        item_counts.update({str(k): int(v) for k, v in watches["item_id"].value_counts().items()})
        for q in train.loc[train["type"] == EVENT_SEARCH, "query"]:
            token_counts.update(tokenize(q))
        active.update(train["user_id"].unique().tolist())
    seen_items = items[items["item_id"].isin(list(item_counts))]
    for title in seen_items["title"]:
        token_counts.update(tokenize(title) if isinstance(title, str) else [])
    seen_users = users[users["user_id"].isin(list(active))]
    region = seen_users["region"] if "region" in seen_users.columns else pd.Series(dtype=object)

    def from_counts(name: str, counts: Counter[str]) -> Vocabulary:
        order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return Vocabulary(name, [k for k, _ in order])

    return Vocabularies(
        items=from_counts("items", item_counts),
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
    """Encode user-sorted events: (log, watches frame, searches frame) with row positions.

    Watches of videos outside the vocabulary are left out of contexts, as at serving.
    """
    is_watch = (events["type"] == EVENT_WATCH).to_numpy()
    watches = events[is_watch]
    ids = vocabs.items.lookup(watches["item_id"])
    in_context = watches[ids > F.OOV]
    searches = events[(events["type"] == EVENT_SEARCH).to_numpy()]
    tokens, offsets = encode_texts(searches["query"], vocabs)
    log_ = EventLog(
        watch_items=ids[ids > F.OOV],
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


def _examples_for_partition(
    events: pd.DataFrame,
    vocabs: Vocabularies,
    user_rows: pd.Series,
    users: UserTable,
    item_rows: pd.Series,
    split: Split,
    cutoff: int | None,
    train_end: int,
    config: FeatureConfig,
    rng: np.random.Generator,
) -> tuple[pa.Table, pa.Table]:
    """Train and eval examples of one partition's (user-sorted) events."""
    log_, ctx_watches, searches = event_log(events, vocabs)
    codes = pd.Categorical(events["user_id"]).codes.astype(np.int64)
    code_of = pd.Series(codes, index=events.index)
    held = holdout_mask(events, Split(split.name, cutoff=cutoff, eval_fraction=split.eval_fraction))
    train = _training_mask(events, split, cutoff)
    is_watch = (events["type"] == EVENT_WATCH).to_numpy()
    out = []
    for kind, mask in (("train", is_watch & train), ("eval", is_watch & held)):
        labels = events[mask]
        if kind == "train" and config.max_examples_per_user is not None and len(labels):
            # Cap each user's examples so heavy users don't dominate: a seeded random subset.
            order = rng.permutation(len(labels))
            shuffled = labels.iloc[order]
            rank = shuffled.groupby("user_id", sort=False).cumcount().to_numpy()
            labels = shuffled[rank < config.max_examples_per_user].sort_index()
        lab_codes = code_of[labels.index].to_numpy()
        lab_time = labels["timestamp"].to_numpy(np.int64)
        w_range = _ranges_before(
            lab_codes, lab_time, code_of[ctx_watches.index].to_numpy(), log_.watch_time
        )
        s_range = _ranges_before(
            lab_codes, lab_time, code_of[searches.index].to_numpy(), log_.search_time
        )
        urows = user_rows.loc[labels["user_id"]].to_numpy()
        demo = users.features(urows)
        if kind == "train":
            age = (train_end - lab_time) / F.SECONDS_PER_DAY
        else:
            age = np.zeros(len(labels))  # evaluated as a serving request: example age 0
        feats = encode_queries(log_, w_range, s_range, demo, age, lab_time, config)
        feats[F.ITEM_INDEX] = item_rows.loc[labels["item_id"]].to_numpy().astype(np.int32)
        feats[F.USER_INDEX] = urows.astype(np.int32)
        feats[LABEL_TIME] = lab_time
        out.append(_to_arrow(feats))
    return out[0], out[1]


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
                self._writer = pq.ParquetWriter(self.out / name, tbl.schema)
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
    users = pq.read_table(data_dir / "users.parquet").to_pandas()
    items_tbl = pq.read_table(data_dir / "items.parquet")
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
    train_end = cutoff if cutoff is not None else t_hi
    n_events = meta.counts.get("events", 0)
    partitions = partitions or max(1, -(-n_events // 4_000_000))
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        parts = _write_partitions(data_dir, tmp, partitions, None)
        users_df, items_df, _ = load_catalog(data_dir)
        vocabs = build_vocabularies(parts, users_df, items_df, split, cutoff)
        vocabs.save(tmp / VOCAB_FILE)
        users = UserTable.build(users_df, vocabs)
        user_rows = pd.Series(np.arange(len(users_df)), index=users_df["user_id"].to_numpy())
        item_rows = pd.Series(np.arange(len(items_df)), index=items_df["item_id"].to_numpy())
        rng = np.random.default_rng(seed)
        train_w, eval_w = _ShardWriter(tmp, "train"), _ShardWriter(tmp, "eval")
        for i, path in enumerate(parts):
            events = _load_events(path)
            train_tbl, eval_tbl = _examples_for_partition(
                events, vocabs, user_rows, users, item_rows, split, cutoff, train_end, config, rng
            )
            # Shuffle training rows within the partition so shards are not grouped by user.
            train_w.write(train_tbl.take(pa.array(rng.permutation(train_tbl.num_rows))))
            eval_w.write(eval_tbl.sort_by(LABEL_TIME))
            path.unlink()
            if progress:
                progress(i + 1, len(parts))
        train_w.close()
        eval_w.close()
        result = ExampleSet(
            split=split.name,
            cutoff=cutoff,
            train_end=int(train_end),
            data_fingerprint=meta.fingerprint,
            feature_config=asdict(config),
            seed=seed,
            counts={"train": train_w.rows, "eval": eval_w.rows, **vocabs.sizes()},
            train_shards=train_w.names,
            eval_shards=eval_w.names,
        )
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
    out: dict[str, np.ndarray] = {}
    for name in tbl.column_names:
        col = tbl.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            out[name] = col.flatten().to_numpy().reshape(-1, col.type.list_size)
        else:
            out[name] = col.to_numpy()
    return out

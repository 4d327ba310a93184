"""Example building as an Apache Beam pipeline: the local builder's steps on any Beam runner.

The pipeline (``build_examples_beam``):

1. the event log's row groups are read in parallel, integer-encoded
   (:func:`~recsys.examples.partitions.encode_event_batch`) and split by user partition
   (:func:`~recsys.examples.partitions.split_by_partition`) into small Parquet files under
   ``out/events-tmp``, each event keeping its row in the log so that a partition sorts
   exactly as the local builder's partition file does;
2. a ``GroupByKey`` gathers each partition's file names (only names go through the
   shuffle, so a worker holds one partition's events at a time, as the local builder does);
3. the vocabularies are a Beam combine of every partition's
   :class:`~recsys.examples.building.VocabCounts`;
4. each partition's examples are written by
   :func:`~recsys.examples.building.partition_examples`, the local builder's own step, with
   the vocabularies as a side input;
5. a last step writes ``vocabularies.json`` and then ``examples.json`` (a folder with
   ``examples.json`` is complete).

So the output equals the local builder's, shard for shard and row for row. Files are read
and written through Beam's ``FileSystems``: local paths, and ``gs://``, ``s3://`` or
``hdfs://`` where the matching Beam extra is installed. The runner is Beam's: ``local``
(the in-process FnApiRunner) here; ``DataflowRunner``, ``FlinkRunner``, ``SparkRunner`` with
their pipeline options passed through. Every worker must have this package installed (on
Dataflow: ``--setup_file`` or an SDK container image). Each worker loads the users and
items tables once (their id lookups are what step 1 and 4 need).
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from recsys.dataset.io import DatasetError, DatasetMeta
from recsys.dataset.schema import EVENTS, ITEMS, META_FILE, USERS
from recsys.dataset.splits import Split
from recsys.examples import partitions as P
from recsys.examples.building import (
    EXAMPLES_META,
    VOCAB_FILE,
    ExampleContext,
    ExampleSet,
    PartitionShards,
    VocabCounts,
    default_partitions,
    new_example_set,
    partition_examples,
    user_sort_rank,
    vocabularies_from_counts,
)
from recsys.features.contract import FeatureConfig
from recsys.features.vocab import Vocabularies

log = logging.getLogger(__name__)

# The in-process runner. Beam's DirectRunner would first try PrismRunner, which downloads
# its binary at run time; this runs the same pipeline without fetching anything.
LOCAL_RUNNER = "local"
# Where the pipeline keeps each partition's encoded events until its examples are written
# (inside the output folder, deleted when the build completes).
EVENTS_TMP = "events-tmp"


def pipeline_for(runner: str, beam_args: Sequence[str] = ()) -> beam.Pipeline:
    """A pipeline on ``runner`` ("local" or a Beam runner name) with Beam options passed through.

    ``beam_args``: Beam's own command-line options, e.g. ``--project=P``, ``--region=R``,
    ``--temp_location=gs://B/tmp``, ``--flink_master=HOST:8081``, ``--direct_num_workers=2``.
    """
    if runner == LOCAL_RUNNER:
        return beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(list(beam_args)))
    return beam.Pipeline(options=PipelineOptions([f"--runner={runner}", *beam_args]))


def _join(folder: str, name: str) -> str:
    return FileSystems.join(folder, name)


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


def read_dataset_meta(data: str) -> DatasetMeta:
    """``dataset.json`` of a dataset folder on any filesystem Beam supports."""
    path = _join(data, META_FILE)
    if not FileSystems.exists(path):
        raise DatasetError(f"{path}: missing; is {data} a canonical dataset folder?")
    try:
        with FileSystems.open(path) as f:
            raw = json.loads(f.read().decode())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    return DatasetMeta.from_dict(raw)


@dataclass(frozen=True)
class _Catalog:
    """A dataset's users and items as every worker needs them (ids in table order)."""

    users: pd.DataFrame
    items: pd.DataFrame
    user_ids: pa.Array
    item_ids: pa.Array
    user_rank: np.ndarray  # [num_users] the rank of each user's id (events sort by it)


@functools.lru_cache(maxsize=2)
def _catalog(data: str) -> _Catalog:
    """The users and items of ``data``, read once per worker process."""

    def read(name: str, drop: tuple[str, ...] = ()) -> pd.DataFrame:
        with FileSystems.open(_join(data, name)) as f:
            tbl = pq.read_table(f)
        return tbl.drop_columns([c for c in drop if c in tbl.column_names]).to_pandas()

    users = read(USERS.file_name)
    items = read(ITEMS.file_name, drop=("content_embedding",))
    user_ids = pa.array(users["user_id"].astype(str).to_numpy(dtype=object), pa.string())
    item_ids = pa.array(items["item_id"].astype(str).to_numpy(dtype=object), pa.string())
    rank = user_sort_rank(user_ids.to_numpy(zero_copy_only=False))
    return _Catalog(users, items, user_ids, item_ids, rank)


def _num_rows(data: str, name: str) -> int:
    """Rows of a table of ``data``, from its footer only."""
    with FileSystems.open(_join(data, name)) as f:
        return int(pq.ParquetFile(f).metadata.num_rows)


def _event_row_groups(data: str) -> list[tuple[int, int]]:
    """``(row group, row of its first event)`` of the event log, from its footer only."""
    with FileSystems.open(_join(data, EVENTS.file_name)) as f:
        md = pq.ParquetFile(f).metadata
    groups, offset = [], 0
    for g in range(md.num_row_groups):
        groups.append((g, offset))
        offset += md.row_group(g).num_rows
    return groups


class _EncodeEvents(beam.DoFn):
    """A row group of the event log -> ``(partition, file of its encoded events)`` per partition.

    Each partition's share of the row group is written to a Parquet file under
    ``out/EVENTS_TMP`` (with each event's row in the log), and only the file's name goes
    through the shuffle: a worker then holds one partition's events at a time, never the
    whole log, on any runner.
    """

    def __init__(self, data: str, out: str, partitions: int) -> None:
        self.data, self.out, self.partitions = data, out, partitions

    def setup(self) -> None:
        catalog = _catalog(self.data)
        ids = catalog.user_ids.to_numpy(zero_copy_only=False)
        self._user_partition = P.partition_of(ids, self.partitions)

    def process(self, group: tuple[int, int]) -> Iterator[tuple[int, str]]:
        index, first_row = group
        catalog = _catalog(self.data)
        with FileSystems.open(_join(self.data, EVENTS.file_name)) as f:
            batch = pq.ParquetFile(f).read_row_group(index, columns=P.EVENT_COLUMNS)
        tbl = P.encode_event_batch(batch, catalog.user_ids, catalog.item_ids, self.data)
        rows = np.arange(first_row, first_row + tbl.num_rows, dtype=np.int64)
        tbl = tbl.append_column(P.POSITION, pa.array(rows))
        for partition, part in P.split_by_partition(tbl, self._user_partition, self.partitions):
            path = _join(_join(self.out, EVENTS_TMP), f"part-{partition:05d}-{index:05d}.parquet")
            with FileSystems.create(path) as out:
                pq.write_table(part, out)
            yield partition, path


def _read_partition(paths: Sequence[str], user_rank: np.ndarray) -> P.Events:
    """A partition's events from its files (in any order: they carry their log rows)."""
    tables = []
    for path in paths:
        with FileSystems.open(path) as f:
            tables.append(pq.read_table(f))
    return P.events_from_table(pa.concat_tables(tables), user_rank)


class _CountVocab(beam.DoFn):
    """A partition's events -> its :class:`VocabCounts` (training events only)."""

    def __init__(self, data: str, split: Split, cutoff: int | None) -> None:
        self.data, self.split, self.cutoff = data, split, cutoff

    def process(self, element: tuple[int, Sequence[str]]) -> Iterator[VocabCounts]:
        catalog = _catalog(self.data)
        ev = _read_partition(element[1], catalog.user_rank)
        yield VocabCounts.of_partition(
            ev, self.split, self.cutoff, len(catalog.users), len(catalog.items)
        )


class _MergeVocabCounts(beam.CombineFn):
    """The vocabularies' combine: sums of every partition's counts."""

    def __init__(self, num_users: int, num_items: int) -> None:
        self.num_users, self.num_items = num_users, num_items

    def create_accumulator(self) -> VocabCounts:
        return VocabCounts.empty(self.num_users, self.num_items)

    def add_input(self, acc: VocabCounts, counts: VocabCounts) -> VocabCounts:
        return acc.merge(counts)

    def merge_accumulators(self, accs: Iterator[VocabCounts]) -> VocabCounts:
        merged = self.create_accumulator()
        for acc in accs:
            merged.merge(acc)
        return merged

    def extract_output(self, acc: VocabCounts) -> VocabCounts:
        return acc


def _vocabularies(counts: VocabCounts, data: str) -> Vocabularies:
    catalog = _catalog(data)
    return vocabularies_from_counts(counts, catalog.users, catalog.items)


class _WriteExamples(beam.DoFn):
    """A partition's events -> its example shards in ``out`` (the local builder's step)."""

    def __init__(
        self, data: str, out: str, split: Split, example_set: ExampleSet, config: FeatureConfig
    ) -> None:
        self.data, self.out, self.split = data, out, split
        self.example_set, self.config = example_set, config
        self._ctx: tuple[Vocabularies, ExampleContext] | None = None

    def _context(self, vocabs: Vocabularies) -> ExampleContext:
        # The side input is the same object for every partition a worker sees: build once.
        if self._ctx is None or self._ctx[0] is not vocabs:
            catalog = _catalog(self.data)
            ctx = ExampleContext.build(
                vocabs, catalog.users, catalog.items, self.split, self.example_set, self.config
            )
            self._ctx = (vocabs, ctx)
        return self._ctx[1]

    def process(
        self, element: tuple[int, Sequence[str]], vocabs: Vocabularies
    ) -> Iterator[PartitionShards]:
        partition, paths = element
        started = time.perf_counter()
        ctx = self._context(vocabs)
        ev = _read_partition(paths, _catalog(self.data).user_rank)
        shards = partition_examples(
            partition, ev, ctx, lambda name: FileSystems.create(_join(self.out, name))
        )
        log.info(
            "partition %d: %d events -> %d train, %d eval examples in %.1f s",
            partition,
            len(ev.kind),
            sum(rows for _, rows in shards.train),
            sum(rows for _, rows in shards.eval),
            time.perf_counter() - started,
        )
        yield shards


def _write_metadata(
    written: list[PartitionShards], out: str, example_set: ExampleSet, vocabs: Vocabularies
) -> None:
    """Write ``vocabularies.json``, then ``examples.json`` (which marks the folder complete)."""
    result = replace(example_set)
    result.add_shards(written, vocabs)
    for name, text in ((VOCAB_FILE, vocabs.to_json()), (EXAMPLES_META, result.to_json())):
        with FileSystems.create(_join(out, name)) as f:
            f.write(text.encode())


def build_examples_beam(
    data_dir: str | Path,
    out: str | Path,
    split: Split,
    config: FeatureConfig | None = None,
    seed: int = 0,
    partitions: int | None = None,
    runner: str = LOCAL_RUNNER,
    beam_args: Sequence[str] = (),
) -> ExampleSet:
    """:func:`~recsys.examples.building.build_examples` as a Beam pipeline on ``runner``.

    The same shards, vocabularies and ``examples.json`` as the local builder for the same
    arguments. ``data_dir`` and ``out`` are paths or URIs Beam's filesystems open. A local
    ``out`` is written under a temporary name and renamed when complete; elsewhere the
    shards go straight into ``out`` and ``examples.json`` is written last.
    """
    config = config or FeatureConfig()
    data, target = str(data_dir), str(out)
    started = time.perf_counter()
    meta = read_dataset_meta(data)
    example_set = new_example_set(meta, data, split, config, seed)
    partitions = partitions or default_partitions(meta)
    local = _is_local(target)
    if local:
        final = Path(target)
        work = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
        work.mkdir(parents=True)
        folder = str(work)
    else:
        folder = target
        stale = _join(folder, EXAMPLES_META)
        if FileSystems.exists(stale):
            FileSystems.delete([stale])  # a half-rewritten folder must not look complete
    try:
        _run(data, folder, split, config, partitions, example_set, pipeline_for(runner, beam_args))
        _delete_events_tmp(folder)
        with FileSystems.open(_join(folder, EXAMPLES_META)) as f:
            result = ExampleSet.from_json(f.read().decode(), source=target)
        if local:
            _replace_folder(work, final)
    except BaseException:
        if local:
            FileSystems.delete([str(work)])
        raise
    log.info(
        "built %d train and %d eval examples (%s split, %d partitions, Beam runner %s) "
        "from %s into %s in %.1f s",
        result.counts["train"],
        result.counts["eval"],
        split.name,
        partitions,
        runner,
        data,
        target,
        time.perf_counter() - started,
    )
    return result


def _delete_events_tmp(folder: str) -> None:
    """Delete the partitions' event files (and, locally, their folder)."""
    tmp = _join(folder, EVENTS_TMP)
    files = [m.path for r in FileSystems.match([_join(tmp, "*")]) for m in r.metadata_list]
    if files:
        FileSystems.delete(files)
    if _is_local(folder) and Path(tmp).exists():
        Path(tmp).rmdir()


def _replace_folder(work: Path, final: Path) -> None:
    if final.exists():
        FileSystems.delete([str(final)])
    work.rename(final)


def _run(
    data: str,
    out: str,
    split: Split,
    config: FeatureConfig,
    partitions: int,
    example_set: ExampleSet,
    pipeline: beam.Pipeline,
) -> None:
    """Build and run the pipeline (blocks until it finishes)."""
    num_users, num_items = _num_rows(data, USERS.file_name), _num_rows(data, ITEMS.file_name)
    with pipeline as p:
        parts = (
            p
            | "event row groups" >> beam.Create(_event_row_groups(data))
            | "spread" >> beam.Reshuffle()
            | "encode and key by partition" >> beam.ParDo(_EncodeEvents(data, out, partitions))
            | "gather partitions" >> beam.GroupByKey()
        )
        vocabs = (
            parts
            | "count vocabularies" >> beam.ParDo(_CountVocab(data, split, example_set.cutoff))
            | "sum counts" >> beam.CombineGlobally(_MergeVocabCounts(num_users, num_items))
            | "vocabularies" >> beam.Map(_vocabularies, data)
        )
        vocab_side = beam.pvalue.AsSingleton(vocabs)
        (
            parts
            | "write examples"
            >> beam.ParDo(_WriteExamples(data, out, split, example_set, config), vocab_side)
            | "all shards" >> beam.combiners.ToList()
            | "write metadata" >> beam.Map(_write_metadata, out, example_set, vocab_side)
        )

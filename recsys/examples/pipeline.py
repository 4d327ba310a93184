"""Example shards as shuffled batches and a ``tf.data.Dataset``.

Two paths give the same batches (the same rows per pass, the same features and signature):

* in memory, when the (worker's share of the) examples fits ``IN_MEMORY_MAX_BYTES``: every
  row is read once, candidate features joined once, and each pass is a seeded permutation of
  row indices sliced into batches and gathered by ``tf.data`` (no Python per batch, so the
  input pipeline neither holds the GIL nor competes with the training step);
* streaming, for worlds larger than that: the reader works on record batches, shuffles within
  a buffer of row groups and shuffles the shard order each epoch, so memory is bounded by the
  buffer, never by the world. Candidate features of each label are joined per batch.

Candidate features come from :meth:`~recsys.features.tables.ItemTable.features`, whatever it
returns.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import pyarrow.parquet as pq

from recsys.examples.building import LABEL_TIME, ExampleSet, open_example_file, table_to_numpy
from recsys.features import contract as F
from recsys.features.contract import FeatureConfig
from recsys.features.tables import ItemTable

if TYPE_CHECKING:
    import tensorflow as tf

Kind = Literal["train", "eval"]

# The in-memory path is used when one worker's examples (with joined candidate features) take
# at most this many bytes; larger example sets stream. The demo world's 341k training examples
# take about 250 MB.
IN_MEMORY_MAX_BYTES = 2 << 30
# The streaming path shuffles within this many row groups (16,384 rows each as written).
SHUFFLE_BUFFER_GROUPS = 8
_DROPPED = (LABEL_TIME, F.USER_INDEX)


def example_batches(
    example_dir: str | Path,
    kind: Kind,
    items: ItemTable,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    shuffle_buffer_groups: int = SHUFFLE_BUFFER_GROUPS,
    drop_remainder: bool = False,
    shard_index: int = 0,
    num_shards: int = 1,
    epoch: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield batches (feature name -> ``[B, ...]`` array) of one pass over the examples.

    With ``num_shards > 1`` this reader keeps every ``num_shards``-th row (in file order)
    starting at ``shard_index`` (one input pipeline per worker): every worker gets the same
    number of rows to within one, even with fewer files than workers, so synchronous workers
    stay in step. Label candidate features carry the video's upload age at the time of the
    watch. This is the streaming path: memory is bounded by ``shuffle_buffer_groups`` row
    groups.
    """
    blocks = _blocks(
        example_dir,
        kind,
        items,
        batch_size,
        shuffle,
        seed,
        shuffle_buffer_groups,
        drop_remainder,
        shard_index,
        num_shards,
        epoch,
    )
    for block in blocks:
        for start in range(0, len(block[F.ITEM_INDEX]), batch_size):
            yield {k: v[start : start + batch_size] for k, v in block.items()}


def _blocks(
    example_dir: str | Path,
    kind: Kind,
    items: ItemTable,
    batch_size: int,
    shuffle: bool,
    seed: int,
    shuffle_buffer_groups: int,
    drop_remainder: bool,
    shard_index: int,
    num_shards: int,
    epoch: int,
) -> Iterator[dict[str, np.ndarray]]:
    """:func:`example_batches` as blocks of consecutive batches, candidate features joined.

    Every block but the last holds a whole number of batches; a shuffle buffer's remainder
    is carried into the next buffer.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    _check_shard(shard_index, num_shards)
    by_shard: dict[str, list[_Group]] = {}
    for g in _row_groups(example_dir, kind, shard_index, num_shards):
        by_shard.setdefault(g.shard, []).append(g)
    shards = list(by_shard)
    rng = np.random.default_rng([seed, epoch])
    if shuffle:
        shards = [shards[i] for i in rng.permutation(len(shards))]
    pending: list[dict[str, np.ndarray]] = []
    carry: dict[str, np.ndarray] | None = None

    def emit(buffer: list[dict[str, np.ndarray]], final: bool) -> Iterator[dict[str, np.ndarray]]:
        nonlocal carry
        parts = ([carry] if carry is not None else []) + buffer
        carry = None
        if not parts:
            return
        rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        n = len(rows[F.ITEM_INDEX])
        if shuffle:
            order = rng.permutation(n)
            rows = {k: v[order] for k, v in rows.items()}
        full = n - n % batch_size
        if full:
            yield _with_candidates({k: v[:full] for k, v in rows.items()}, items)
        if full < n:
            rest = {k: v[full:] for k, v in rows.items()}
            if not final:
                carry = rest
            elif not drop_remainder:
                yield _with_candidates(rest, items)

    for name in shards:
        pf = pq.ParquetFile(open_example_file(example_dir, name))
        for g in by_shard[name]:
            pending.append(g.read(pf, num_shards))
            if len(pending) >= (shuffle_buffer_groups if shuffle else 1):
                yield from emit(pending, final=False)
                pending = []
    yield from emit(pending, final=True)


def _with_candidates(rows: dict[str, np.ndarray], items: ItemTable) -> dict[str, np.ndarray]:
    batch = {k: v for k, v in rows.items() if k not in _DROPPED}
    batch.update(items.features(rows[F.ITEM_INDEX], rows[LABEL_TIME]))
    return batch


def feature_signature(
    feature_config: dict[str, object], content_dim: int | None
) -> dict[str, tf.TensorSpec]:
    """The ``tf.TensorSpec`` of every feature in a batch (batch dimension unknown).

    ``feature_config``: the examples' :class:`FeatureConfig` as recorded in their metadata.
    """
    # TensorFlow only where tf.data is built: the numpy readers here run without it.
    import tensorflow as tf

    config = FeatureConfig(**feature_config)  # type: ignore[arg-type]
    shapes = {
        **F.query_feature_shapes(config),
        **F.candidate_feature_shapes(config, content_dim),
        F.ITEM_INDEX: ((), "int32"),
    }
    return {
        name: tf.TensorSpec((None, *shape), tf.as_dtype(dtype))
        for name, (shape, dtype) in shapes.items()
    }


def _shards(example_dir: str | Path, kind: Kind) -> list[str]:
    meta = ExampleSet.load(example_dir)
    return meta.train_shards if kind == "train" else meta.eval_shards


def _check_shard(shard_index: int, num_shards: int) -> None:
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")


class _Group(NamedTuple):
    """One row group of an example shard and the rows of it one worker keeps."""

    shard: str
    group: int
    first: int  # the first kept row within the group; then every num_shards-th
    kept: int

    def read(self, pf: pq.ParquetFile, num_shards: int) -> dict[str, np.ndarray]:
        """The kept rows as arrays (every column of the shard)."""
        rows = table_to_numpy(pf.read_row_group(self.group))
        if num_shards > 1:
            rows = {k: v[self.first :: num_shards] for k, v in rows.items()}
        return rows


def _row_groups(
    example_dir: str | Path, kind: Kind, shard_index: int, num_shards: int
) -> list[_Group]:
    """Every row group of ``kind`` in file order, with the rows worker ``shard_index`` keeps.

    Worker ``w`` keeps the rows whose position in the file order (shards as listed, then row
    groups, then rows) is ``w`` modulo ``num_shards``: any shard order reads the same rows.
    """
    groups, offset = [], 0
    for name in _shards(example_dir, kind):
        md = pq.ParquetFile(open_example_file(example_dir, name)).metadata
        for g in range(md.num_row_groups):
            rows = md.row_group(g).num_rows
            first = (shard_index - offset) % num_shards
            groups.append(_Group(name, g, first, len(range(first, rows, num_shards))))
            offset += rows
    return groups


def _empty_batch(example_dir: str | Path, kind: Kind, items: ItemTable) -> dict[str, np.ndarray]:
    """A zero-row batch with every feature's dtype and trailing shape (reads no rows)."""
    shards = _shards(example_dir, kind)
    meta = ExampleSet.load(example_dir)
    names = shards or meta.train_shards + meta.eval_shards
    if not names:
        raise ValueError(f"{example_dir}: no example shards")
    name = names[0]
    schema = pq.read_schema(open_example_file(example_dir, name))
    return _with_candidates(table_to_numpy(schema.empty_table()), items)


def example_bytes(
    example_dir: str | Path,
    kind: Kind,
    items: ItemTable,
    shard_index: int = 0,
    num_shards: int = 1,
) -> int:
    """Bytes that :func:`load_examples` needs for this worker's rows (from Parquet metadata)."""
    _check_shard(shard_index, num_shards)
    rows = sum(g.kept for g in _row_groups(example_dir, kind, shard_index, num_shards))
    if rows == 0:
        return 0
    empty = _empty_batch(example_dir, kind, items)
    row_bytes = sum(
        v.dtype.itemsize * int(np.prod(v.shape[1:], dtype=np.int64)) for v in empty.values()
    )
    return rows * row_bytes


def load_examples(
    example_dir: str | Path,
    kind: Kind,
    items: ItemTable,
    shard_index: int = 0,
    num_shards: int = 1,
) -> dict[str, np.ndarray]:
    """Every row of this worker's shard in file order, candidate features joined (batch keys).

    Rows are assigned to workers exactly as :func:`example_batches` assigns them; memory is
    the result plus one row group.
    """
    _check_shard(shard_index, num_shards)
    groups = _row_groups(example_dir, kind, shard_index, num_shards)
    total = sum(g.kept for g in groups)
    empty = _empty_batch(example_dir, kind, items)
    out = {k: np.empty((total, *v.shape[1:]), dtype=v.dtype) for k, v in empty.items()}
    names = {g.shard for g in groups}
    files = {name: pq.ParquetFile(open_example_file(example_dir, name)) for name in names}
    pos = 0
    for g in groups:
        pf = files[g.shard]
        for k, v in _with_candidates(g.read(pf, num_shards), items).items():
            out[k][pos : pos + g.kept] = v
        pos += g.kept
    return out


def make_dataset(
    example_dir: str | Path,
    kind: Kind,
    items: ItemTable,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    drop_remainder: bool = False,
    shard_index: int = 0,
    num_shards: int = 1,
    in_memory: bool | None = None,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of feature dicts: one pass per iteration, reshuffled each epoch.

    ``in_memory=None`` loads the examples when :func:`example_bytes` is at most
    ``IN_MEMORY_MAX_BYTES`` and streams them otherwise; True or False forces a path. Both
    give every pass the same rows (this worker's shard) with a fixed seed's order per pass.
    """
    # TensorFlow only where tf.data is built: the numpy readers here run without it.
    import tensorflow as tf

    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    _check_shard(shard_index, num_shards)
    meta = ExampleSet.load(example_dir)
    empty = _empty_batch(example_dir, kind, items)
    # The contract's specs, plus any feature the example shards or the ItemTable add.
    contract = feature_signature(meta.feature_config, items.content_dim)
    signature = {
        k: contract.get(k, tf.TensorSpec((None, *v.shape[1:]), tf.as_dtype(v.dtype)))
        for k, v in empty.items()
    }
    if in_memory is None:
        size = example_bytes(example_dir, kind, items, shard_index, num_shards)
        in_memory = size <= IN_MEMORY_MAX_BYTES
    pass_order = _PassOrder(batch_size, shuffle, seed, drop_remainder)
    if in_memory:
        rows = load_examples(example_dir, kind, items, shard_index, num_shards)
        return _in_memory_dataset(rows, signature, pass_order)

    def blocks(epoch: int) -> Iterator[dict[str, np.ndarray]]:
        # One Python call per shuffle buffer (thousands of rows), none per batch.
        yield from _blocks(
            example_dir,
            kind,
            items,
            batch_size,
            shuffle,
            seed,
            SHUFFLE_BUFFER_GROUPS,
            drop_remainder,
            shard_index,
            num_shards,
            epoch,
        )

    return _streamed_dataset(blocks, signature, batch_size)


@dataclasses.dataclass(frozen=True)
class _PassOrder:
    """How each pass over the examples is cut into batches."""

    batch_size: int
    shuffle: bool
    seed: int
    drop_remainder: bool


def _streamed_dataset(
    blocks: Callable[[int], Iterator[dict[str, np.ndarray]]],
    signature: dict[str, tf.TensorSpec],
    batch_size: int,
) -> tf.data.Dataset:
    """Shuffle buffers from ``blocks(epoch)`` sliced into batches inside ``tf.data``."""
    # TensorFlow only where tf.data is built: the numpy readers here run without it.
    import tensorflow as tf

    epochs = itertools.count()  # a new shuffle order every time the dataset is iterated

    def this_pass() -> Iterator[dict[str, np.ndarray]]:
        yield from blocks(next(epochs))

    def sliced(block: dict[str, tf.Tensor]) -> tf.data.Dataset:
        n = tf.shape(block[F.ITEM_INDEX], out_type=tf.int64)[0]
        starts = tf.data.Dataset.range(0, n, batch_size)
        return starts.map(lambda s: {k: v[s : s + batch_size] for k, v in block.items()})

    # prefetch(1): the next block is read while the current one's batches are consumed.
    ds = tf.data.Dataset.from_generator(this_pass, output_signature=signature).prefetch(1)
    return ds.flat_map(sliced).prefetch(tf.data.AUTOTUNE)


def _in_memory_dataset(
    rows: dict[str, np.ndarray], signature: dict[str, tf.TensorSpec], pass_order: _PassOrder
) -> tf.data.Dataset:
    """Rows held as constant tensors; one seeded permutation per pass, gathered per batch."""
    # TensorFlow only where tf.data is built: the numpy readers here run without it.
    import tensorflow as tf

    epochs = itertools.count()  # a new shuffle order every time the dataset is iterated
    n = len(rows[F.ITEM_INDEX])
    batch_size, seed = pass_order.batch_size, pass_order.seed
    # Column by column, so that a column's numpy copy is freed as its tensor is made.
    tables = {
        k: tf.constant(rows.pop(k).astype(spec.dtype.as_numpy_dtype, copy=False))
        for k, spec in signature.items()
    }
    end = n - n % batch_size if pass_order.drop_remainder else n

    def order() -> Iterator[np.ndarray]:
        # One permutation per pass; the only Python in the pipeline (once per epoch).
        epoch = next(epochs)
        shuffle = pass_order.shuffle
        yield np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)

    def batches(perm: tf.Tensor) -> tf.data.Dataset:
        starts = tf.data.Dataset.range(0, end, batch_size)
        return starts.map(lambda s: perm[s : s + batch_size])

    def gather(index: tf.Tensor) -> dict[str, tf.Tensor]:
        return {k: tf.gather(t, index) for k, t in tables.items()}

    ds = tf.data.Dataset.from_generator(order, output_signature=tf.TensorSpec((n,), tf.int64))
    ds = ds.flat_map(batches)
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)

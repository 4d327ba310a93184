"""Stream example shards from Parquet into shuffled batches and a ``tf.data.Dataset``.

The reader works on record batches, shuffles within a buffer of row groups and shuffles the
shard order each epoch, so memory is bounded by the buffer, never by the world. Candidate
features of each label are joined from the :class:`~recsys.catalog.ItemTable` per batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow.parquet as pq

from recsys import features as F
from recsys.catalog import ItemTable
from recsys.examples import LABEL_TIME, ExampleSet, table_to_numpy

if TYPE_CHECKING:
    import tensorflow as tf

Kind = Literal["train", "eval"]


def example_batches(
    example_dir: str | Path,
    kind: Kind,
    items: ItemTable,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    shuffle_buffer_groups: int = 8,
    drop_remainder: bool = False,
    shard_index: int = 0,
    num_shards: int = 1,
    epoch: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield batches (feature name -> ``[B, ...]`` array) of one pass over the examples.

    With ``num_shards > 1`` this reader keeps every ``num_shards``-th row starting at
    ``shard_index`` (one input pipeline per worker): every worker gets the same number of
    rows to within one, even with fewer files than workers, so synchronous workers stay in
    step. Label candidate features carry the video's upload age at the time of the watch.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    example_dir = Path(example_dir)
    meta = ExampleSet.load(example_dir)
    shards = meta.train_shards if kind == "train" else meta.eval_shards
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
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
        for start in range(0, full, batch_size):
            yield _with_candidates(
                {k: v[start : start + batch_size] for k, v in rows.items()}, items
            )
        if full < n:
            rest = {k: v[full:] for k, v in rows.items()}
            if not final:
                carry = rest
            elif not drop_remainder:
                yield _with_candidates(rest, items)

    for name in shards:
        pf = pq.ParquetFile(example_dir / name)
        for group in range(pf.num_row_groups):
            rows = table_to_numpy(pf.read_row_group(group))
            if num_shards > 1:
                rows = {k: v[shard_index::num_shards] for k, v in rows.items()}
            pending.append(rows)
            if len(pending) >= (shuffle_buffer_groups if shuffle else 1):
                yield from emit(pending, final=False)
                pending = []
    yield from emit(pending, final=True)


def _with_candidates(rows: dict[str, np.ndarray], items: ItemTable) -> dict[str, np.ndarray]:
    batch = {k: v for k, v in rows.items() if k not in (LABEL_TIME, F.USER_INDEX)}
    batch.update(items.features(rows[F.ITEM_INDEX], rows[LABEL_TIME]))
    return batch


def feature_signature(
    feature_config: dict[str, object], content_dim: int | None
) -> dict[str, tf.TensorSpec]:
    """The ``tf.TensorSpec`` of every feature in a batch (batch dimension unknown)."""
    import tensorflow as tf

    def ints(*shape: int) -> tf.TensorSpec:
        return tf.TensorSpec((None, *shape), tf.int32)

    def floats(*shape: int) -> tf.TensorSpec:
        return tf.TensorSpec((None, *shape), tf.float32)

    sig = {
        F.HISTORY: ints(int(feature_config["max_history"])),  # type: ignore[call-overload]
        F.SEARCH_TOKENS: ints(int(feature_config["max_search_tokens"])),  # type: ignore[call-overload]
        F.COUNTRY: ints(),
        F.REGION: ints(),
        F.GENDER: ints(),
        F.AGE: floats(),
        F.AGE_KNOWN: floats(),
        F.EXAMPLE_AGE: floats(),
        F.LAST_SEARCH_TOKENS: ints(int(feature_config.get("max_last_search_tokens", 8))),  # type: ignore[call-overload]
        F.SINCE_LAST_WATCH: floats(),
        F.SINCE_LAST_SEARCH: floats(),
        F.ITEM: ints(),
        F.CHANNEL: ints(),
        F.CATEGORY: ints(),
        F.TITLE_TOKENS: ints(int(feature_config["max_title_tokens"])),  # type: ignore[call-overload]
        F.UPLOAD_AGE: floats(),
        F.ITEM_INDEX: ints(),
    }
    if content_dim is not None:
        sig[F.CONTENT_EMBEDDING] = floats(content_dim)
    return sig


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
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of feature dicts: one pass per iteration, reshuffled each epoch."""
    import tensorflow as tf

    meta = ExampleSet.load(example_dir)
    signature = feature_signature(meta.feature_config, items.content_dim)
    epochs = iter(range(1 << 30))

    def generator() -> Iterator[dict[str, np.ndarray]]:
        # A new shuffle order every time the dataset is iterated (every epoch).
        yield from example_batches(
            example_dir,
            kind,
            items,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_remainder=drop_remainder,
            shard_index=shard_index,
            num_shards=num_shards,
            epoch=next(epochs),
        )

    ds = tf.data.Dataset.from_generator(generator, output_signature=signature)
    return ds.prefetch(tf.data.AUTOTUNE)

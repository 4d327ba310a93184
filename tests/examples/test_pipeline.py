"""The input pipeline: in-memory and streaming paths give the reference rows, shard and shuffle."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.dataset.splits import Split
from recsys.examples import pipeline
from recsys.examples.building import (
    EXAMPLES_META,
    LABEL_TIME,
    ExampleSet,
    build_examples,
    load_catalog,
    read_examples,
)
from recsys.examples.pipeline import (
    example_batches,
    example_bytes,
    feature_signature,
    load_examples,
    make_dataset,
)
from recsys.features import contract as F
from recsys.features.tables import ItemTable
from recsys.features.vocab import Vocabularies
from tests.examples.test_building import CONFIG, random_world

ROWS_PER_GROUP = 97  # odd, so that workers' shares of a group differ


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ItemTable]:
    """Examples of a random world, rewritten into several small row groups per shard."""
    root = tmp_path_factory.mktemp("pipeline")
    world = random_world(root / "data", seed=3)
    built = root / "built"
    build_examples(world, built, Split("time"), CONFIG, partitions=2)
    out = root / "ex"
    shutil.copytree(built, out)
    meta = ExampleSet.load(out)
    train = pa.concat_tables([pq.read_table(built / n) for n in meta.train_shards])
    for name in meta.train_shards:
        (out / name).unlink()
    n = train.num_rows
    cuts = [0, n // 3, n * 3 // 4, n]  # three shards of uneven sizes
    names = [f"train-{i:05d}.parquet" for i in range(3)]
    for name, start, end in zip(names, cuts, cuts[1:], strict=False):
        pq.write_table(train.slice(start, end - start), out / name, row_group_size=ROWS_PER_GROUP)
    raw = json.loads((out / EXAMPLES_META).read_text())
    raw["train_shards"] = names
    (out / EXAMPLES_META).write_text(json.dumps(raw))
    _, items, emb = load_catalog(world)
    table = ItemTable.build(items, emb, Vocabularies.load(out / "vocabularies.json"), CONFIG)
    return out, table


def reference(example_dir: Path, items: ItemTable) -> dict[str, np.ndarray]:
    """Every training row with its label's candidate features, joined here independently."""
    rows = read_examples(example_dir, "train")
    out = {k: v for k, v in rows.items() if k not in (LABEL_TIME, F.USER_INDEX)}
    out.update(items.features(rows[F.ITEM_INDEX], rows[LABEL_TIME]))
    return out


def row_keys(batch: dict[str, np.ndarray]) -> list[tuple[bytes, ...]]:
    """One hashable key per row: every feature's bytes, in name order."""
    names = sorted(batch)
    cols = [np.asarray(batch[k]) for k in names]
    return [tuple(c[i].tobytes() for c in cols) for i in range(len(cols[0]))]


def collect(ds: object) -> list[dict[str, np.ndarray]]:
    """One pass of a dataset as numpy batches."""
    return [{k: v.numpy() for k, v in b.items()} for b in ds]  # type: ignore[attr-defined]


def concat(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Batches joined into one set of rows."""
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_reference_world_has_several_groups_and_shards(examples: tuple[Path, ItemTable]) -> None:
    out, _ = examples
    meta = ExampleSet.load(out)
    groups = sum(pq.ParquetFile(out / n).num_row_groups for n in meta.train_shards)
    assert len(meta.train_shards) == 3  # or the tests below prove little
    assert groups >= 6


@pytest.mark.parametrize("in_memory", [True, False])
def test_one_pass_is_the_reference_rows(examples: tuple[Path, ItemTable], in_memory: bool) -> None:
    out, items = examples
    ref = reference(out, items)
    total = len(ref[F.ITEM_INDEX])
    ds = make_dataset(out, "train", items, 64, seed=1, in_memory=in_memory)
    sig = feature_signature(ExampleSet.load(out).feature_config, items.content_dim)
    assert ds.element_spec == sig  # the same features, dtypes and shapes as the contract
    batches = collect(ds)
    assert [len(b[F.ITEM_INDEX]) for b in batches] == [64] * (total // 64) + [total % 64]
    assert Counter(row_keys(concat(batches))) == Counter(row_keys(ref))
    dropped = collect(
        make_dataset(out, "train", items, 64, drop_remainder=True, in_memory=in_memory)
    )
    assert [len(b[F.ITEM_INDEX]) for b in dropped] == [64] * (total // 64)


def test_automatic_choice_streams_above_the_budget(
    examples: tuple[Path, ItemTable], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, items = examples
    ref = Counter(row_keys(reference(out, items)))
    assert 0 < example_bytes(out, "train", items) <= pipeline.IN_MEMORY_MAX_BYTES
    assert Counter(row_keys(concat(collect(make_dataset(out, "train", items, 50))))) == ref
    monkeypatch.setattr(pipeline, "IN_MEMORY_MAX_BYTES", 0)
    assert Counter(row_keys(concat(collect(make_dataset(out, "train", items, 50))))) == ref


def test_memory_estimate_is_exact(examples: tuple[Path, ItemTable]) -> None:
    out, items = examples
    for shard_index, num_shards in ((0, 1), (1, 3)):
        loaded = load_examples(out, "train", items, shard_index, num_shards)
        actual = sum(v.nbytes for v in loaded.values())
        assert example_bytes(out, "train", items, shard_index, num_shards) == actual


def test_load_examples_keeps_file_order(examples: tuple[Path, ItemTable]) -> None:
    out, items = examples
    ref, loaded = reference(out, items), load_examples(out, "train", items)
    assert sorted(loaded) == sorted(ref)
    for name, values in ref.items():
        np.testing.assert_array_equal(loaded[name], values, err_msg=name)


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("num_shards", [2, 3])
def test_worker_shards_cover_every_row_once(
    examples: tuple[Path, ItemTable], in_memory: bool, num_shards: int
) -> None:
    out, items = examples
    ref = reference(out, items)
    parts = [
        concat(collect(make_dataset(out, "train", items, 40, seed=2, **shard, in_memory=in_memory)))
        for shard in ({"shard_index": w, "num_shards": num_shards} for w in range(num_shards))
    ]
    sizes = [len(p[F.ITEM_INDEX]) for p in parts]
    assert max(sizes) - min(sizes) <= 1  # overall, not per row group
    joined: Counter[tuple[bytes, ...]] = Counter()
    for p in parts:
        joined.update(row_keys(p))
    assert joined == Counter(row_keys(ref))
    with pytest.raises(ValueError, match="shard_index"):
        make_dataset(out, "train", items, 40, shard_index=num_shards, num_shards=num_shards)


def test_both_paths_give_a_worker_the_same_rows(examples: tuple[Path, ItemTable]) -> None:
    out, items = examples
    kept = [
        Counter(row_keys(concat(collect(make_dataset(out, "train", items, 30, **kw)))))
        for kw in (
            {"shard_index": 1, "num_shards": 3, "in_memory": True},
            {"shard_index": 1, "num_shards": 3, "in_memory": False},
        )
    ]
    assert kept[0] == kept[1]


@pytest.mark.parametrize("in_memory", [True, False])
def test_seeded_order_repeats_and_changes_per_epoch(
    examples: tuple[Path, ItemTable], in_memory: bool
) -> None:
    out, items = examples

    def passes(seed: int) -> list[np.ndarray]:
        ds = make_dataset(out, "train", items, 32, seed=seed, in_memory=in_memory)
        # Two passes of the dataset (two epochs), then the same through .repeat(2).
        twice = [concat(collect(ds)) for _ in range(2)]
        again = make_dataset(out, "train", items, 32, seed=seed, in_memory=in_memory)
        repeated = concat(collect(again.repeat(2)))
        np.testing.assert_array_equal(
            repeated[F.HISTORY], np.concatenate([p[F.HISTORY] for p in twice])
        )
        return [np.concatenate([p[F.ITEM_INDEX][:, None], p[F.HISTORY]], axis=1) for p in twice]

    a, b, other = passes(7), passes(7), passes(8)
    for epoch in range(2):
        np.testing.assert_array_equal(a[epoch], b[epoch])  # same seed: same order
    assert not np.array_equal(a[0], a[1])  # a new order each epoch
    assert sorted(map(bytes, a[0])) == sorted(map(bytes, a[1]))  # of the same rows
    assert not np.array_equal(a[0], other[0])  # another seed, another order


def test_unshuffled_pass_is_file_order(examples: tuple[Path, ItemTable]) -> None:
    out, items = examples
    ref = reference(out, items)
    for in_memory in (True, False):
        got = concat(
            collect(make_dataset(out, "train", items, 50, shuffle=False, in_memory=in_memory))
        )
        for name, values in ref.items():
            np.testing.assert_array_equal(got[name], values, err_msg=f"{name} {in_memory}")


class WiderItemTable(ItemTable):
    """An ItemTable with one more candidate feature, as a new tower feature would add."""

    def features(self, rows: np.ndarray, reference_time: np.ndarray | int) -> dict[str, np.ndarray]:
        """The usual features plus the channel id times 10 as int64."""
        out = super().features(rows, reference_time)
        out["channel_x10"] = out[F.CHANNEL].astype(np.int64) * 10
        return out


@pytest.mark.parametrize("in_memory", [True, False])
def test_new_candidate_features_are_carried(
    examples: tuple[Path, ItemTable], in_memory: bool
) -> None:
    out, items = examples
    wider = WiderItemTable(**vars(items))
    ds = make_dataset(out, "train", wider, 64, in_memory=in_memory)
    assert ds.element_spec["channel_x10"].dtype.name == "int64"
    rows = concat(collect(ds))
    np.testing.assert_array_equal(rows["channel_x10"], rows[F.CHANNEL].astype(np.int64) * 10)
    assert Counter(row_keys(rows)) == Counter(row_keys(reference(out, wider)))


def test_streaming_dataset_yields_the_reader_batches(examples: tuple[Path, ItemTable]) -> None:
    out, items = examples
    for kw in ({"seed": 4}, {"seed": 4, "drop_remainder": True}, {"shuffle": False}):
        ds = make_dataset(out, "train", items, 40, in_memory=False, **kw)
        got = collect(ds)
        want = list(example_batches(out, "train", items, 40, **kw))
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert sorted(g) == sorted(w)
            for name in w:
                np.testing.assert_array_equal(g[name], w[name], err_msg=name)

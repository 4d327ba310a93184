"""The canonical dataset writer and reader: atomic folders, round trips, fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.dataset.io import (
    DatasetError,
    DatasetMeta,
    DatasetWriter,
    iter_event_batches,
    read_meta,
)
from recsys.dataset.schema import SCHEMA_VERSION
from recsys.dataset.validation import read_dataset
from tests.conftest import small_frames, write_small


def test_round_trip_keeps_every_table(small_dataset: Path) -> None:
    users, items, emb, events = small_frames()
    ds = read_dataset(small_dataset)
    assert ds.users["user_id"].tolist() == users["user_id"].tolist()
    assert ds.items["title"].tolist()[:3] == items["title"].tolist()[:3]
    assert pd.isna(ds.items["title"].iloc[3])
    assert ds.events["timestamp"].tolist() == events["timestamp"].tolist()
    assert ds.content_embeddings is not None
    np.testing.assert_array_equal(ds.content_embeddings, emb)
    assert ds.has_searches  # two search rows in the fixture


def test_meta_records_counts_modalities_and_checksums(small_dataset: Path) -> None:
    meta = read_meta(small_dataset)
    assert meta.schema_version == SCHEMA_VERSION
    # fixture: 3 users, 4 videos, 6 events of which 4 watches and 2 searches
    assert meta.counts == {"users": 3, "items": 4, "events": 6, "watches": 4, "searches": 2}
    assert meta.modalities == {"content_embedding": True, "searches": True}
    assert sorted(meta.files) == ["events.parquet", "items.parquet", "users.parquet"]
    assert len(meta.fingerprint) == 64


def test_dataset_without_content_modality(tmp_path: Path) -> None:
    path = write_small(tmp_path / "noemb", with_embeddings=False)
    ds = read_dataset(path)
    assert ds.content_embeddings is None
    assert read_meta(path).modalities["content_embedding"] is False


def test_fingerprint_changes_with_the_data(tmp_path: Path) -> None:
    _, _, _, events = small_frames()
    a = write_small(tmp_path / "a")
    events.loc[0, "watch_fraction"] = 0.9
    b = write_small(tmp_path / "b", events=events)
    assert read_meta(a).fingerprint != read_meta(b).fingerprint


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    users, _, _, _ = small_frames()
    out = tmp_path / "broken"

    def crash_mid_write() -> None:
        with DatasetWriter(out, DatasetMeta("x", "test")) as writer:
            writer.write_users(users)
            raise RuntimeError("simulated crash mid-write")

    with pytest.raises(RuntimeError, match="simulated crash"):
        crash_mid_write()
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too


def test_refuses_to_overwrite_unless_asked(small_dataset: Path) -> None:
    with pytest.raises(DatasetError, match="already exists"):
        DatasetWriter(small_dataset, DatasetMeta("x", "test"))
    users, items, emb, events = small_frames()
    with DatasetWriter(small_dataset, DatasetMeta("again", "test"), overwrite=True) as writer:
        writer.write_users(users)
        writer.write_items(items, emb)
        writer.append_events(events.iloc[:2])
    assert read_meta(small_dataset).name == "again"
    assert read_meta(small_dataset).counts["events"] == 2


def test_missing_table_is_an_error_and_nothing_is_written(tmp_path: Path) -> None:
    users, _, _, _ = small_frames()
    out = tmp_path / "partial"

    def forget_items() -> None:
        with DatasetWriter(out, DatasetMeta("x", "test")) as writer:
            writer.write_users(users)

    with pytest.raises(DatasetError, match=r"items\.parquet was never written"):
        forget_items()
    assert not out.exists()


def test_events_stream_in_batches(small_dataset: Path) -> None:
    batches = list(iter_event_batches(small_dataset, batch_size=4, columns=["user_id"]))
    assert [b.num_rows for b in batches] == [4, 2]  # 6 events in batches of 4


def test_read_meta_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"dataset\.json: missing"):
        read_meta(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_meta(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps([1, 2]))
    with pytest.raises(DatasetError, match="expected a JSON object"):
        read_meta(tmp_path)

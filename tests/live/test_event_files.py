"""Event sources for replays: a canonical dataset, Parquet and JSONL files, checked by row."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.live.event_files import EventFileError, event_batches, read_events
from recsys.live.events import Demographics, Event
from recsys.live.replay import replay
from tests.conftest import T0

NOW = T0 + 86_400


def test_a_dataset_replays_in_time_order_with_each_users_demographics_once(
    small_dataset: Path,
) -> None:
    source = read_events(small_dataset)
    assert [e.time for e in source.events] == sorted(e.time for e in source.events)
    assert source.events[0] == Event("u1", T0 + 100, "watch", video_id="v1", watch_fraction=0.5)
    assert source.events[1] == Event("u1", T0 + 200, "search", query="guitar")
    batches = list(event_batches(source, batch_size=2, now=NOW))
    assert [len(b.events) for b in batches] == [2, 2, 2]
    users = [u for b in batches for u in b.users]
    assert [u.user_id for u in users] == ["u1", "u2", "u3"]  # each with its first event
    assert users[0] == Demographics("u1", "US", "NA", 25, "f")
    assert users[2] == Demographics("u3", None, None, None, None)


def test_after_keeps_the_later_events_only(small_dataset: Path) -> None:
    source = read_events(small_dataset, after=T0 + 8_000)
    assert [e.time for e in source.events] == [T0 + 8_000, T0 + 8_100, T0 + 9_000]


def _rows() -> list[dict[str, object]]:
    return [
        {"user_id": "a", "timestamp": T0 + 5, "type": "watch", "item_id": "v1"},
        {"user_id": "b", "timestamp": T0 + 1, "type": "search", "query": "cats"},
        {"user_id": "a", "timestamp": T0 + 9, "type": "watch", "item_id": "v2"},
    ]


def test_jsonl_and_parquet_files_read_alike(tmp_path: Path) -> None:
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in _rows()) + "\n")
    parquet = tmp_path / "events.parquet"
    columns = ("user_id", "timestamp", "type", "item_id", "query")
    pq.write_table(pa.table({c: [r.get(c) for r in _rows()] for c in columns}), parquet)
    from_json, from_parquet = read_events(jsonl), read_events(parquet)
    assert from_json.events == from_parquet.events
    assert [e.user_id for e in from_json.events] == ["b", "a", "a"]
    assert from_json.rows == [1, 0, 2]  # each event's row in the file
    assert from_json.demographics == {}


def test_a_bad_row_is_named_by_its_row_in_the_file(tmp_path: Path) -> None:
    rows = _rows()
    rows[2]["item_id"] = None  # a watch without its video, row 2 of the file
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(EventFileError, match=r"events.jsonl: row 2: video_id is malformed"):
        list(event_batches(read_events(path), now=NOW))


def test_unreadable_or_incomplete_sources_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"user_id": "a"}\nnot json\n')
    with pytest.raises(EventFileError, match="line 2 is not JSON"):
        read_events(tmp_path / "bad.jsonl")
    pq.write_table(pa.table({"user_id": ["a"]}), tmp_path / "thin.parquet")
    with pytest.raises(EventFileError, match=r"no column\(s\) \['timestamp', 'type'\]"):
        read_events(tmp_path / "thin.parquet")
    with pytest.raises(EventFileError, match="not a canonical dataset"):
        read_events(tmp_path)


def test_replay_paces_by_schedule_and_totals_the_replies(small_dataset: Path) -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    sent: list[int] = []

    def record(events: object, users: object) -> tuple[int, int]:
        sent.append(len(events))  # type: ignore[arg-type]
        now[0] += 0.5  # each call takes half a second
        return len(events) - 1, 1  # type: ignore[arg-type]

    source = read_events(small_dataset)
    summary = replay(
        event_batches(source, batch_size=2, now=NOW),
        6,
        record,
        rate=2.0,
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert sent == [2, 2, 2]
    # Batch n may leave at 2n/2 = n seconds; each call ends 0.5 s after it left.
    assert slept == [0.5, 0.5]
    assert (summary.events, summary.recorded, summary.duplicates) == (6, 3, 3)
    assert summary.seconds == pytest.approx(2.5)

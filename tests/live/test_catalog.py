"""Tests for recsys.live.catalog: the durable change log of added and removed videos."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from recsys.live.catalog import (
    LiveCatalogStore,
    LiveVideo,
    LiveVideoError,
    catalog_path,
    check_video,
)

NOW = 1_800_000_000


def _video(item_id: str = "n1", **fields: object) -> LiveVideo:
    base: dict[str, object] = {
        "item_id": item_id,
        "title": "a new video",
        "category": "music",
        "channel": "c1",
        "upload_time": NOW - 60,
        "duration": 120.0,
        "content": None,
    }
    base.update(fields)
    return LiveVideo(**base)  # type: ignore[arg-type]


def test_changes_are_logged_in_order_with_each_models_vectors(tmp_path: Path) -> None:
    store = LiveCatalogStore(catalog_path(tmp_path / "demo"))
    content = np.arange(4, dtype=np.float32)
    vectors = np.eye(2, 3, dtype=np.float32)
    assert store.add([_video("a", content=content), _video("b")], "demo/v0001", vectors) == [1, 2]
    assert store.remove(["a"]) == [3]
    changes = store.changes_since(0, "demo/v0001")
    assert [(c.seq, c.item_id, c.video is None) for c in changes] == [
        (1, "a", False),
        (2, "b", False),
        (3, "a", True),
    ]
    assert changes[0].video is not None
    np.testing.assert_array_equal(changes[0].video.content, content)
    np.testing.assert_array_equal(changes[1].vector, vectors[1])
    # Another model version has no vectors until it stores its own.
    assert store.changes_since(0, "demo/v0002")[0].vector is None
    store.store_vectors("demo/v0002", [2], np.ones((1, 3), np.float32))
    assert store.changes_since(1, "demo/v0002")[0].vector.tolist() == [1.0, 1.0, 1.0]
    assert store.changes_since(3, "demo/v0001") == []
    assert store.last_seq() == 3


def test_an_acknowledged_addition_survives_kill_9(tmp_path: Path) -> None:
    path = catalog_path(tmp_path / "demo")
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        from recsys.live.catalog import LiveCatalogStore, LiveVideo
        store = LiveCatalogStore({str(path)!r})
        store.add([LiveVideo("k1", "t", "c", "ch", {NOW})], "m", np.ones((1, 2), np.float32))
        print("acknowledged", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert "acknowledged" in run.stdout
    changes = LiveCatalogStore(path).changes_since(0, "m")
    assert [c.item_id for c in changes] == ["k1"]
    assert changes[0].vector.tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("fields", "content_dim", "message"),
    [
        ({"item_id": ""}, None, "item_id must be"),
        ({"title": "x\x00y"}, None, "title must be"),
        ({"upload_time": NOW + 3 * 86_400}, None, "upload_time"),
        ({"duration": -1.0}, None, "duration"),
        ({"duration": float("nan")}, None, "duration"),
        ({"content": np.ones(3, np.float32)}, 4, "content_embedding has 3 values"),
        ({"content": np.ones(3, np.float32)}, None, "no content embedding"),
        ({"content": np.array([1, np.inf, 0, 0], np.float32)}, 4, "NaN or infinite"),
    ],
)
def test_bad_metadata_names_the_video_and_field(fields, content_dim, message) -> None:
    video = _video(**{"item_id": "bad-one", **fields})
    with pytest.raises(LiveVideoError, match=message) as caught:
        check_video(video, content_dim, NOW)
    assert "'bad-one'" in str(caught.value) or fields.get("item_id") == ""


def test_good_metadata_passes_with_content_as_float32() -> None:
    checked = check_video(_video(content=[0.5, 1, 2, 3]), 4, NOW)  # type: ignore[arg-type]
    assert checked.content is not None
    assert checked.content.dtype == np.float32
    assert check_video(_video(content=np.zeros(0)), 4, NOW).content is None

"""The next full export folds the live catalog in: additions join items.parquet, removals
leave it, and serving the new version applies only the changes logged after it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recsys.config import load_config
from recsys.inference.recommender import Recommender
from recsys.live.catalog import LiveCatalogStore, LiveVideo, catalog_path
from tests.conftest import TINY_TRAIN_OVERRIDES


def test_an_export_folds_in_the_live_catalog(tiny_world: Path, tmp_path: Path) -> None:
    from recsys_training.job import train

    artifacts = tmp_path / "artifacts"
    removed = str(pq.read_table(tiny_world / "items.parquet").column("item_id")[0])
    content_dim = len(pq.read_table(tiny_world / "items.parquet").column("content_embedding")[0])
    store = LiveCatalogStore(catalog_path(artifacts / "tiny"))
    live = LiveVideo("folded-1", "a live title", "music", "ch-live", 1_700_000_000, 5.0, None)
    gone = LiveVideo("added-then-removed", "t", "c", "ch", 1_700_000_000)
    store.add([live, gone], "tiny/v0000", np.zeros((2, 4), np.float32))
    store.remove(["added-then-removed", removed])
    later = LiveVideo("after-export", "t", "music", "ch", 1_700_000_000)
    config = load_config(None, [*TINY_TRAIN_OVERRIDES, "train.epochs=1"])
    result = train(tiny_world, artifacts, name="tiny", config=config, progress=False)
    assert result.version_dir is not None
    ids = set(pq.read_table(result.version_dir / "items.parquet").column("item_id").to_pylist())
    assert "folded-1" in ids
    assert removed not in ids
    assert "added-then-removed" not in ids
    store.add([later], "another-model/v0009", np.zeros((1, 4), np.float32))  # re-embedded
    model = Recommender.load(result.version_dir, live_catalog=catalog_path(artifacts / "tiny"))
    assert model.live is not None
    # Only the change after the export is applied live; the folded ones are the export's.
    assert int(model.live.delta.active.sum()) == 1
    assert len(model.live.delta.removed_rows) == 0
    assert model.catalog.row_of["folded-1"] < model.live.delta.first_row
    assert "after-export" in model.catalog.row_of
    assert content_dim > 0

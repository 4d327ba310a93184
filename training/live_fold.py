"""The live catalog folded into a full export: videos added since join the catalog, removed
ones leave it.

The export writes the catalog it is given; :func:`fold_live_catalog` turns the dataset's
catalog into the one being served (the dataset's items, less the live catalog's removals,
plus its additions, each with its content embedding or zeros) and says up to which change it
got, which the export records (``manifest.data["live_catalog_seq"]``) so that serving the new
version applies only the changes logged after it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.config import Config
from recsys.features.tables import ItemTable
from recsys.features.vocab import Vocabularies
from recsys.live.catalog import LiveCatalogStore, catalog_path, fold

log = logging.getLogger(__name__)


def fold_live_catalog(
    model_dir: Path,
    items_df: pd.DataFrame,
    items: ItemTable,
    vocabs: Vocabularies,
    config: Config,
) -> tuple[pd.DataFrame, ItemTable, int]:
    """``items_df`` / ``items`` with ``model_dir``'s live catalog folded in, and its last seq.

    Unchanged (seq 0) when the model has no live catalog.
    """
    path = catalog_path(model_dir)
    if not path.is_file():
        return items_df, items, 0
    store = LiveCatalogStore(path)
    try:
        folded = fold(store.changes_since(0, ""))
    finally:
        store.close()
    if not folded.seq:
        return items_df, items, 0
    added_ids = {v.item_id for v in folded.added}
    keep = ~items_df["item_id"].astype(str).isin(folded.removed | added_ids).to_numpy()
    new_rows = pd.DataFrame(
        {
            "item_id": [v.item_id for v in folded.added],
            "channel": [v.channel for v in folded.added],
            "category": [v.category for v in folded.added],
            "title": [v.title for v in folded.added],
            "upload_time": np.array([v.upload_time for v in folded.added], dtype=np.int64),
            "duration": np.array([v.duration for v in folded.added], dtype=np.float64),
        }
    )
    frame = pd.concat(
        [items_df[keep], new_rows.astype({c: items_df[c].dtype for c in new_rows.columns})],
        ignore_index=True,
    )
    content = items.content_embedding
    if content is not None:
        added = np.zeros((len(folded.added), content.shape[1]), np.float32)
        for i, video in enumerate(folded.added):
            if video.content is not None and video.content.shape == (content.shape[1],):
                added[i] = video.content
        content = np.concatenate([content[keep], added])
    log.info(
        "folded the live catalog %s (up to change %d) into the export: %d videos added, %d removed",
        path,
        folded.seq,
        len(folded.added),
        int((~keep).sum()) - len(added_ids & set(items_df["item_id"].astype(str))),
    )
    return frame, ItemTable.build(frame, content, vocabs, config.features), folded.seq

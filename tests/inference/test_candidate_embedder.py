"""The candidate embedder: the exported candidate SavedModel, at any reference time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys.artifact.layout import CANDIDATE_MODEL_DIR, EMBEDDINGS_FILE, ITEMS_FILE
from recsys.artifact.reader import open_version
from recsys.artifact.versions import ArtifactError
from recsys.inference.candidate_embedder import (
    STRING_FEATURES,
    CandidateEmbedder,
    upload_age_days,
)


@pytest.fixture(scope="module")
def catalog(trained_artifact: Path, tiny_world: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The exported catalog's rows with their world features, and their content embeddings."""
    exported = pq.read_table(trained_artifact / ITEMS_FILE).to_pandas()
    world = pq.read_table(tiny_world / "items.parquet").to_pandas().set_index("item_id")
    content = np.stack(world.loc[exported["item_id"], "content_embedding"].to_numpy())
    return exported, content.astype(np.float32)


def _embedder(
    version: Path, items: pd.DataFrame, content: np.ndarray | None, batch_size: int = 256
) -> CandidateEmbedder:
    strings = {
        name: items[name].fillna("").astype(str).to_numpy(dtype=object) for name in STRING_FEATURES
    }
    upload = items["upload_time"].to_numpy(np.int64)
    return CandidateEmbedder(version / CANDIDATE_MODEL_DIR, strings, upload, content, batch_size)


def test_it_embeds_the_catalog_as_the_export_did(
    trained_artifact: Path, catalog: tuple[pd.DataFrame, np.ndarray]
) -> None:
    items, content = catalog
    reference_time = open_version(trained_artifact).settings.reference_time
    embedder = _embedder(trained_artifact, items, content)
    assert len(embedder) == len(items)
    seen: list[tuple[int, int]] = []
    embeddings = embedder(reference_time, progress=lambda done, total: seen.append((done, total)))
    exported = np.load(trained_artifact / EMBEDDINGS_FILE)
    np.testing.assert_allclose(embeddings, exported, atol=1e-5)
    assert seen[-1] == (len(items), len(items))
    assert len(seen) == -(-len(items) // 256)  # once a batch


def test_upload_ages_follow_the_reference_time(
    trained_artifact: Path, catalog: tuple[pd.DataFrame, np.ndarray]
) -> None:
    items, content = catalog
    reference_time = open_version(trained_artifact).settings.reference_time
    embedder = _embedder(trained_artifact, items[:50], content[:50], batch_size=7)
    now = embedder(reference_time)
    later = embedder(reference_time + 90 * 86_400)
    assert now.shape == later.shape == (50, 32)
    assert not np.allclose(now, later)  # every video is 90 days older
    np.testing.assert_allclose(embedder(reference_time), now)  # and the same again


def test_upload_age_days_is_clipped_at_zero() -> None:
    ages = upload_age_days(np.array([0, 86_400, 3 * 86_400]), 2 * 86_400)
    np.testing.assert_array_equal(ages, np.array([2.0, 1.0, 0.0], np.float32))
    assert ages.dtype == np.float32


def test_a_content_embedding_the_model_does_not_take_is_refused(
    trained_artifact: Path, catalog: tuple[pd.DataFrame, np.ndarray]
) -> None:
    items, _ = catalog
    with pytest.raises(ArtifactError, match="takes content_embedding input"):
        _embedder(trained_artifact, items[:5], None)

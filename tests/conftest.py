"""Shared fixtures: small canonical datasets written with the real writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.dataset.io import DatasetMeta, DatasetWriter

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def small_frames() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Three users, four videos, a few watches and searches: valid by construction."""
    users = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "country": ["US", "DE", None],
            "region": ["NA", "EU", None],
            "age": [25, 61, None],
            "gender": ["f", "m", None],
        }
    )
    items = pd.DataFrame(
        {
            "item_id": ["v1", "v2", "v3", "v4"],
            "channel": ["c1", "c1", "c2", None],
            "category": ["music", "music", "news", None],
            "title": ["red guitar live", "guitar lesson", "evening news", None],
            "upload_time": [T0 - 86_400, T0, T0 + 3_600, T0 + 7_200],
            "duration": [200.0, 600.0, 1200.0, None],
        }
    )
    emb = np.arange(16, dtype=np.float32).reshape(4, 4) / 16
    events = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2", "u2", "u3"],
            "timestamp": [T0 + 100, T0 + 200, T0 + 4_000, T0 + 8_000, T0 + 8_100, T0 + 9_000],
            "type": ["watch", "search", "watch", "watch", "watch", "search"],
            "item_id": ["v1", None, "v3", "v4", "v2", None],
            "query": [None, "guitar", None, None, None, "news tonight"],
            "watch_fraction": [0.5, None, 1.0, 0.25, 0.75, None],
        }
    )
    return users, items, emb, events


def write_small(
    path: Path,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    emb: np.ndarray | None = None,
    events: pd.DataFrame | None = None,
    with_embeddings: bool = True,
) -> Path:
    """Write the small dataset (or the given replacements) to ``path`` with the real writer."""
    u, i, e, ev = small_frames()
    users = u if users is None else users
    items = i if items is None else items
    emb = (e if emb is None else emb) if with_embeddings else None
    events = ev if events is None else events
    with DatasetWriter(path, DatasetMeta(name="small", source="test")) as writer:
        writer.write_users(users)
        writer.write_items(items, emb)
        writer.append_events(events)
    return path


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """A valid small canonical dataset folder."""
    return write_small(tmp_path / "small")


# ---- shared, session-scoped: one tiny world and one trained artifact for all readers

TINY_TRAIN_OVERRIDES = [
    "train.batch_size=256",
    "train.epochs=2",
    "model.query_layers=[64, 32]",
    "model.candidate_layers=[64, 32]",
    "model.item_embedding_dim=32",
]


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic world's tiny preset (seed 0), generated once per test session."""
    from recsys_data.synth import generate_world
    from recsys_data.world import world_config

    out = tmp_path_factory.mktemp("tiny-world") / "tiny"
    generate_world(world_config("tiny", seed=0), out)
    return out


@pytest.fixture(scope="session")
def trained_artifact(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on the tiny world and exported (read-only for tests): its version dir."""
    from recsys.config import load_config
    from recsys_training.job import train

    artifacts = tmp_path_factory.mktemp("artifacts")
    config = load_config(None, TINY_TRAIN_OVERRIDES)
    result = train(tiny_world, artifacts, name="tiny", config=config, progress=False)
    assert result.version_dir is not None
    return result.version_dir


@pytest.fixture(scope="session")
def attention_artifact(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world's model with the attention history encoder, trained one epoch with
    validation recall under ``train.exclude_watched=yes`` (read-only for tests)."""
    from recsys.config import load_config
    from recsys_training.job import train

    artifacts = tmp_path_factory.mktemp("attention-artifacts")
    overrides = [
        *TINY_TRAIN_OVERRIDES,
        "train.epochs=1",
        "model.history_encoder=attention",
        "train.exclude_watched=yes",
    ]
    config = load_config(None, overrides)
    result = train(tiny_world, artifacts, name="attention", config=config, progress=False)
    assert result.version_dir is not None
    return result.version_dir


@pytest.fixture(scope="session")
def fresh_artifact(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with the freshness term, trained one epoch on the tiny world: its version dir."""
    from recsys.config import load_config
    from recsys_training.job import train

    artifacts = tmp_path_factory.mktemp("fresh-artifacts")
    overrides = [*TINY_TRAIN_OVERRIDES, "train.epochs=1", "model.freshness=true"]
    config = load_config(None, overrides)
    result = train(tiny_world, artifacts, name="fresh", config=config, progress=False)
    assert result.version_dir is not None
    return result.version_dir

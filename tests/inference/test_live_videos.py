"""Tests for recsys.inference.live_videos: videos added and removed while a model is served.

The expected logit of an added video is computed by hand from the artifact's candidate
SavedModel: the video embedded with its upload age at the start of the request's day, dotted
with the query tower's embedding of the same request.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys.artifact.layout import CANDIDATE_MODEL_DIR
from recsys.artifact.reader import open_version
from recsys.features.context import RequestContext
from recsys.inference.candidate_embedder import CandidateEmbedder
from recsys.inference.recommender import Recommender
from recsys.inference.request import RecommenderOptions
from recsys.live.catalog import LiveCatalogStore, LiveVideo, LiveVideoError, catalog_path

DAY = 86_400


@pytest.fixture
def model_dir(fresh_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the freshness model's folder (its live catalog starts empty)."""
    folder = tmp_path / "fresh"
    shutil.copytree(fresh_artifact, folder / fresh_artifact.name)
    return folder


def _load(model_dir: Path) -> Recommender:
    version = next(p for p in model_dir.iterdir() if p.name.startswith("v"))
    return Recommender.load(version, verify=False, live_catalog=catalog_path(model_dir))


def _new_video(model: Recommender, item_id: str, upload_time: int) -> LiveVideo:
    """A video with the content of catalog video 0, a new id and a category of its own."""
    dim = open_version(model.path, verify=False).settings.content_dim
    content = None if dim is None else np.linspace(-1, 1, dim).astype(np.float32)
    return LiveVideo(
        item_id, "brand new upload", "brand-new", "new-channel", upload_time, 60.0, content
    )


def test_added_video_is_served_with_its_logit_at_the_request(model_dir: Path) -> None:
    model = _load(model_dir)
    user = model.profiles.user_id_at(0) if model.profiles else None
    assert user is not None
    moment = 1_790_006_400 + 15 * 3600  # 15:00 UTC: ages are taken at 00:00 that day
    video = _new_video(model, "live-1", moment - 3 * DAY - 600)
    assert model.add_videos([video]) == 1
    result = model.recommend(RequestContext(request_time=moment), user, 5, category="brand-new")
    assert result.catalog.describe(result.rows)[0] == ["live-1"]
    # By hand: the candidate SavedModel's embedding at the day start, dotted with q.
    day_start = moment - moment % DAY
    content = None if video.content is None else video.content[None, :]
    strings = {
        "item_id": np.array(["live-1"], dtype=object),
        "channel": np.array(["new-channel"], dtype=object),
        "category": np.array(["brand-new"], dtype=object),
        "title": np.array(["brand new upload"], dtype=object),
    }
    embedder = CandidateEmbedder(
        model.path / CANDIDATE_MODEL_DIR, strings, np.array([video.upload_time]), content
    )
    expected = embedder(day_start)[0] @ model.query_embeddings([user], moment)[0]
    assert result.logits[0] == pytest.approx(expected, abs=1e-4)
    # The same model with other options serves the same live catalog.
    other = model.with_options(RecommenderOptions(overfetch=2))
    again = other.recommend(RequestContext(request_time=moment), user, 5, category="brand-new")
    assert again.catalog.describe(again.rows)[0] == ["live-1"]
    # Not uploaded yet at an earlier request: not served.
    early = model.recommend(
        RequestContext(request_time=video.upload_time - 1), user, 5, category="brand-new"
    )
    assert len(early.rows) == 0
    assert model.similar_items("live-1", 3)[0].item_id != "live-1"


def test_replicas_share_additions_and_removals_durably(model_dir: Path) -> None:
    first, second = _load(model_dir), _load(model_dir)
    moment = 1_790_006_400
    catalog_video = str(first.catalog.ids[0])
    first.add_videos([_new_video(first, "live-2", moment - 60)])
    assert "live-2" not in second.catalog.row_of  # until it reads the log
    assert second.refresh_live() == 1
    assert "live-2" in second.catalog.row_of
    assert len(second.similar_items("live-2", 3)) == 3
    assert first.remove_videos(["live-2", catalog_video]) == 2
    second.refresh_live()
    for model in (first, second, _load(model_dir)):  # the third: a restarted server
        assert "live-2" not in model.catalog.row_of
        assert catalog_video not in model.catalog.row_of
        ctx = RequestContext(watch_history=[str(model.catalog.ids[1])], request_time=moment)
        served = model.recommend(ctx, None, 1000, exclude_watched=False)
        ids = set(served.catalog.describe(served.rows)[0])
        assert catalog_video not in ids
        assert "live-2" not in ids
    # Added again after its removal: served again, by every process.
    first.add_videos([_new_video(first, "live-2", moment - 60)])
    assert _load(model_dir).catalog.row_of.get("live-2") is not None


def test_bad_metadata_adds_nothing(model_dir: Path) -> None:
    model = _load(model_dir)
    good = _new_video(model, "ok", 1_700_000_000)
    bad = LiveVideo("broken", "t", "c", "ch", 1_700_000_000, duration=-5.0)
    with pytest.raises(LiveVideoError, match="video 'broken': duration"):
        model.add_videos([good, bad])
    assert LiveCatalogStore(catalog_path(model_dir)).last_seq() == 0
    assert "ok" not in model.catalog.row_of
    with pytest.raises(ValueError, match="not in the served catalog"):
        model.remove_videos(["never-added"])


def test_items_file_is_untouched(model_dir: Path) -> None:
    model = _load(model_dir)
    before = pq.read_table(model.path / "items.parquet").num_rows
    model.add_videos([_new_video(model, "live-3", 1_700_000_000)])
    assert pq.read_table(model.path / "items.parquet").num_rows == before  # no new version


def test_an_unwritable_live_folder_serves_the_export_and_refuses_additions(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from recsys.inference.request import LiveCatalogUnavailableError

    blocker = model_dir / "live"
    blocker.write_text("a file where the live folder would be")  # as a read-only volume would
    version = sorted(model_dir.glob("v0*"))[-1]
    with caplog.at_level("WARNING"):
        model = Recommender.load(version, verify=False, live_catalog=catalog_path(model_dir))
    assert "cannot be opened" in caplog.text
    assert len(model.recommend(RequestContext(searches=["music"]), None, 5).items) == 5
    with pytest.raises(LiveCatalogUnavailableError):
        model.add_videos([_new_video(model, "new", 1_700_000_000)])

"""A query tower that reads the history as a sequence exports, and serves as TensorFlow Lite."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.artifact.layout import QUERY_MODEL_DIR, VOCAB_FILE
from recsys.artifact.reader import open_version
from recsys.features.context import RequestContext, encode_request
from recsys.features.vocab import Vocabularies
from recsys.inference.query_tower import LiteTower, load_query_tower

REQUEST_TIME = 1_800_000_000


def test_the_lite_copy_of_an_attention_tower_gives_the_saved_models_embeddings(
    attention_artifact: Path,
) -> None:
    version = open_version(attention_artifact)
    assert version.settings.config.model.history_encoder == "attention"
    vocabs = Vocabularies.load(attention_artifact / VOCAB_FILE)
    features = version.settings.config.features
    videos = vocabs.items.values[:60]
    contexts = [
        RequestContext(request_time=REQUEST_TIME),  # no history at all
        RequestContext(watch_history=videos[:3], searches=["a b"], request_time=REQUEST_TIME),
        RequestContext(  # more watches than the window: the latest 50 count
            watch_history=videos,
            watch_times=list(range(REQUEST_TIME - 6_000, REQUEST_TIME, 100)),
            request_time=REQUEST_TIME,
        ),
    ]
    probes = [encode_request(c, vocabs, features) for c in contexts]
    # "tflite" fails unless the copy converts with builtin ops and agrees on every probe
    lite = load_query_tower(attention_artifact / QUERY_MODEL_DIR, probes, "tflite")
    assert isinstance(lite, LiteTower)
    out = np.concatenate([lite(p) for p in probes])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(out[1], out[2], atol=1e-3)  # the history matters

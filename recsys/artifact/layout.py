"""The layout of an artifact: every file and folder name of a version, in one place.

A model folder ``artifacts/<name>/`` holds versions ``v0001``, ``v0002``, ... and ``LATEST``,
which names the served one. A version folder holds::

    manifest.json        schema version, config, data fingerprint, metrics, sha256 of every file
    config.json          the run's Config, vocabulary sizes, embedding and content dimensions,
                         and the reference time the item embeddings were computed at
    vocabularies.json    every vocabulary (plain JSON)
    query_model/         SavedModel: ``serving_default`` on raw context features, ``serve_ids``
                         on id features
    query_model.tflite   the query tower converted to TensorFlow Lite (absent when the
                         converter refused the graph: servers then serve the SavedModel)
    candidate_model/     SavedModel, ``serving_default`` on raw video features
    items.parquet        the catalog (ITEM_COLUMNS), in the order of the embedding rows
    item_embeddings.npy  float32 [num_items, d], candidate tower output at the reference time
    index/               the candidate index over those embeddings (recsys.index's own format;
                         absent when exported without one)
    profiles.parquet     per user: demographics, latest watches and searches (serving context)

Every writer (the export, the index operations) and every reader (serving, evaluation, the
index operations) names these files through this module only.
"""

from __future__ import annotations

# The model folder.
LATEST = "LATEST"

# A version folder.
MANIFEST = "manifest.json"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocabularies.json"
QUERY_MODEL_DIR = "query_model"
TFLITE_FILE = "query_model.tflite"
CANDIDATE_MODEL_DIR = "candidate_model"
ITEMS_FILE = "items.parquet"
EMBEDDINGS_FILE = "item_embeddings.npy"
INDEX_DIR = "index"
PROFILES_FILE = "profiles.parquet"

# The columns of items.parquet as exported (index operations keep its schema when adding).
ITEM_COLUMNS = ("item_id", "title", "category", "channel", "upload_time")

# What every exported version holds, and what it may hold besides.
REQUIRED_ENTRIES = frozenset(
    {
        MANIFEST,
        CONFIG_FILE,
        VOCAB_FILE,
        QUERY_MODEL_DIR,
        CANDIDATE_MODEL_DIR,
        ITEMS_FILE,
        EMBEDDINGS_FILE,
    }
)
OPTIONAL_ENTRIES = frozenset({TFLITE_FILE, INDEX_DIR, PROFILES_FILE})

"""Export a trained model as a versioned artifact (DESIGN contract 2).

Layout of ``artifacts/<name>/<version>/``::

    manifest.json        schema version, config, data fingerprint, metrics, sha256 of every file
    config.json          the run's Config, vocabulary sizes and the embedding reference time
    vocabularies.json    every vocabulary (plain JSON)
    query_model/         SavedModel, signature ``serving_default`` on raw context features
    candidate_model/     SavedModel, signature ``serving_default`` on raw video features
    items.parquet        the catalog rows (id, title, category, channel, upload_time), in
                         the order of the embedding rows
    item_embeddings.npy  float32 [num_items, d], candidate tower output at the reference time
    index/               the candidate index (ScaNN or exact) over those embeddings; ScaNN's
                         search setting tuned on the job's held-out queries
    profiles.parquet     per user: demographics, latest watches and searches (serving context)
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.artifact.profiles import PROFILES_FILE, build_profiles, write_profiles
from recsys.artifact.versions import Manifest, write_version
from recsys.config import Config
from recsys.dataset.io import read_meta
from recsys.examples.building import ExampleSet
from recsys.features.tables import ItemTable
from recsys.features.vocab import Vocabularies

if TYPE_CHECKING:
    from recsys.index.base import Index, IndexKind

log = logging.getLogger(__name__)

ITEMS_FILE = "items.parquet"
EMBEDDINGS_FILE = "item_embeddings.npy"
CONFIG_FILE = "config.json"
INDEX_DIR = "index"
QUERY_MODEL_DIR = "query_model"
TFLITE_FILE = "query_model.tflite"  # recsys.inference.query_tower.TFLITE_FILE
CANDIDATE_MODEL_DIR = "candidate_model"
ITEM_COLUMNS = ["item_id", "title", "category", "channel", "upload_time"]


def export_artifact(
    model: Any,
    artifacts: Path,
    name: str,
    config: Config,
    vocabs: Vocabularies,
    items: ItemTable,
    items_df: pd.DataFrame,
    reference_time: int,
    data: Path,
    example_set: ExampleSet,
    metrics: dict[str, Any],
    build_index: bool = True,
    tuning_queries: np.ndarray | None = None,
    index_kind: IndexKind = "auto",
) -> Path:
    """Write the artifact version and point ``LATEST`` at it; returns the version folder.

    ``tuning_queries`` (query embeddings ``[n, d]``, the job's held-out examples): a ScaNN
    tree index gets the fastest search setting that finds 95% of their exact top 100.
    """
    from recsys.model.signatures import (
        RawCandidateModel,
        RawQueryModel,
        save_candidate_model,
        save_query_model,
    )
    from recsys.model.two_tower import embed_candidates

    started = time.perf_counter()
    embeddings = embed_candidates(
        model.candidate_tower, items.features(np.arange(len(items)), reference_time)
    ).astype(np.float32)
    dataset_meta = read_meta(data)
    manifest = Manifest(
        name=name,
        version="",
        config=config.to_dict(),
        data={
            "path": str(data),
            "name": dataset_meta.name,
            "fingerprint": dataset_meta.fingerprint,
            "split": example_set.split,
            "cutoff": example_set.cutoff,
            "train_end": example_set.train_end,
        },
        metrics=metrics,
    )
    with write_version(artifacts, name, manifest) as tmp:
        save_query_model(
            RawQueryModel(model.query_tower, vocabs, config.features), tmp / QUERY_MODEL_DIR
        )
        _write_lite_query_tower(tmp / QUERY_MODEL_DIR, tmp / TFLITE_FILE)
        save_candidate_model(
            RawCandidateModel(model.candidate_tower, vocabs, config.features, items.content_dim),
            tmp / CANDIDATE_MODEL_DIR,
        )
        vocabs.save(tmp / "vocabularies.json")
        frame = items_df[ITEM_COLUMNS].reset_index(drop=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp / ITEMS_FILE)
        np.save(tmp / EMBEDDINGS_FILE, embeddings, allow_pickle=False)
        write_profiles(build_profiles(data, config.features), tmp / PROFILES_FILE)
        (tmp / CONFIG_FILE).write_text(
            json.dumps(
                {
                    "config": config.to_dict(),
                    "vocabulary_sizes": vocabs.sizes(),
                    "content_dim": items.content_dim,
                    "reference_time": int(reference_time),
                    "embedding_dim": int(embeddings.shape[1]),
                },
                indent=2,
            )
            + "\n"
        )
        if build_index:
            from recsys.index.base import IndexConfig
            from recsys.index.registry import build_index as make_index

            index_config = IndexConfig(kind=index_kind).resolve(len(embeddings))
            ids = frame["item_id"].astype(str).tolist()
            index = make_index(ids, embeddings, index_config)
            tuning = _tune(index, ids, embeddings, tuning_queries)
            index.save(tmp / INDEX_DIR)
            manifest.index = {
                "config": index.config.to_dict(),
                "kind": index.config.kind,
                "size": len(index),
                **({} if tuning is None else {"tuning": tuning}),
            }
    log.info(
        "exported %d item embeddings (dim %d) in %.1f s",
        len(embeddings),
        embeddings.shape[1],
        time.perf_counter() - started,
    )
    return Path(artifacts) / name / manifest.version


def _tune(
    index: Index, ids: list[str], embeddings: np.ndarray, queries: np.ndarray | None
) -> dict[str, Any] | None:
    """Tune a ScaNN tree index on held-out queries; the manifest's tuning entry, or None.

    The target is `recsys index tune`'s default (recall@100 >= 0.95 against exact search);
    `recsys index tune` re-tunes an exported version to another.
    """
    from recsys.index.scann_index import ScannIndex
    from recsys.indexing.tuning import TUNE_K, TUNE_QUERIES, TUNE_TARGET_RECALL, tune_index

    if not isinstance(index, ScannIndex) or index.num_leaves is None:
        return None  # exact search: nothing to tune
    if queries is None or len(queries) == 0:
        log.warning(
            "ScaNN index left at its default search setting (%s): no held-out queries to "
            "tune it on; run `recsys index tune` on the artifact",
            index.config.to_dict(),
        )
        return None
    started = time.perf_counter()
    queries = np.asarray(queries[:TUNE_QUERIES], dtype=np.float32)
    _, tuning = tune_index(
        index,
        ids,
        embeddings,
        queries,
        k=min(TUNE_K, len(index)),
        target_recall=TUNE_TARGET_RECALL,
        source="eval",
        described=f"query tower over {len(queries)} held-out examples of the training job",
    )
    log.info("tuned the index in %.1f s", time.perf_counter() - started)
    return tuning


def _write_lite_query_tower(saved_model: Path, out: Path) -> None:
    """The query tower's TensorFlow Lite copy, which servers check and use (see query_tower).

    Optional: when the converter refuses the graph, the artifact goes without it and servers
    serve the SavedModel.
    """
    from recsys.inference.query_tower import convert_to_tflite

    started = time.perf_counter()
    try:
        model = convert_to_tflite(saved_model)
    except Exception as exc:  # the converter's errors have no common type
        log.warning("no TensorFlow Lite query tower: conversion failed (%s)", exc)
        return
    out.write_bytes(model)
    log.info(
        "wrote %s (%.1f MB) in %.1f s", out.name, len(model) / 1e6, time.perf_counter() - started
    )

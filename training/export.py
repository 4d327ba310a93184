"""Export a trained model as a versioned artifact (layout: :mod:`recsys.artifact.layout`).

The candidate tower embeds the catalog at the reference time; both towers are saved as
SavedModels on raw features (the query tower also as TensorFlow Lite when it converts), with
the vocabularies, the catalog, the serving profiles, ``config.json`` and, unless asked not
to, the candidate index (a ScaNN tree tuned on the job's held-out queries).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.artifact.catalog import Catalog, write_catalog
from recsys.artifact.layout import (
    CANDIDATE_MODEL_DIR,
    CONFIG_FILE,
    INDEX_DIR,
    ITEM_COLUMNS,
    PROFILES_FILE,
    QUERY_MODEL_DIR,
    TFLITE_FILE,
    VOCAB_FILE,
)
from recsys.artifact.profiles import build_profiles, write_profiles
from recsys.artifact.settings import ModelSettings
from recsys.artifact.versions import Manifest, write_version
from recsys.config import Config
from recsys.dataset.io import read_meta
from recsys.examples.building import ExampleSet
from recsys.features.tables import ItemTable
from recsys.features.vocab import Vocabularies
from recsys.index.base import Index, IndexConfig, IndexKind
from recsys.index.registry import build_index as make_index
from recsys.index.scann_index import ScannIndex
from recsys.indexing.tuning import TUNE_K, TUNE_QUERIES, TUNE_TARGET_RECALL, tune_index
from recsys.inference.query_tower import convert_to_tflite

log = logging.getLogger(__name__)


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
    live_catalog_seq: int = 0,
) -> Path:
    """Write the artifact version and point ``LATEST`` at it; returns the version folder.

    ``tuning_queries`` (query embeddings ``[n, d]``, the job's held-out examples): a ScaNN
    tree index gets the fastest search setting that finds 95% of their exact top 100.
    ``live_catalog_seq``: the last live-catalog change folded into ``items`` (recorded as
    ``manifest.data["live_catalog_seq"]``; serving applies the later ones).
    """
    # TensorFlow: imported when exporting, so that importing this module stays light.
    from recsys.model.two_tower import embed_candidates

    started = time.perf_counter()
    embeddings = embed_candidates(
        model.candidate_tower, items.features(np.arange(len(items)), reference_time)
    ).astype(np.float32)
    manifest = Manifest(
        name=name,
        version="",
        config=config.to_dict(),
        data=_data_entry(data, example_set) | {"live_catalog_seq": int(live_catalog_seq)},
        metrics=metrics,
    )
    settings = ModelSettings(
        config=config,
        embedding_dim=int(embeddings.shape[1]),
        content_dim=items.content_dim,
        reference_time=int(reference_time),
        vocabulary_sizes=vocabs.sizes(),
    )
    with write_version(artifacts, name, manifest) as tmp:
        _write_towers(tmp, model, vocabs, config, items.content_dim)
        vocabs.save(tmp / VOCAB_FILE)
        frame = items_df[list(ITEM_COLUMNS)].reset_index(drop=True)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        write_catalog(Catalog(table, embeddings), tmp)
        until = _profiles_until(config, example_set)
        write_profiles(build_profiles(data, config.features, until), tmp / PROFILES_FILE)
        (tmp / CONFIG_FILE).write_text(settings.to_json())
        if build_index:
            ids = frame["item_id"].astype(str).tolist()
            manifest.index = _write_index(tmp, ids, embeddings, tuning_queries, index_kind)
    log.info(
        "exported %d item embeddings (dim %d) in %.1f s",
        len(embeddings),
        embeddings.shape[1],
        time.perf_counter() - started,
    )
    return Path(artifacts) / name / manifest.version


def _profiles_until(config: Config, example_set: ExampleSet) -> int | None:
    """The time the exported profiles stop at (``train.profiles_until``; None: no limit)."""
    if config.train.profiles_until == "end":
        return None
    if example_set.cutoff is None:
        raise ValueError(
            "train.profiles_until = 'cutoff' needs the time split (the 'last' split has no cut-off)"
        )
    return int(example_set.cutoff)


def _data_entry(data: Path, example_set: ExampleSet) -> dict[str, Any]:
    """The manifest's ``data`` entry: the dataset and the split the model was trained on."""
    dataset_meta = read_meta(data)
    return {
        "path": str(data),
        "name": dataset_meta.name,
        "fingerprint": dataset_meta.fingerprint,
        "split": example_set.split,
        "cutoff": example_set.cutoff,
        "train_end": example_set.train_end,
    }


def _write_towers(
    folder: Path, model: Any, vocabs: Vocabularies, config: Config, content_dim: int | None
) -> None:
    """Both towers as SavedModels on raw features, and the query tower's Lite copy."""
    # TensorFlow: imported when exporting, so that importing this module stays light.
    from recsys.model.signatures import (
        RawCandidateModel,
        RawQueryModel,
        save_candidate_model,
        save_query_model,
    )

    save_query_model(
        RawQueryModel(model.query_tower, vocabs, config.features), folder / QUERY_MODEL_DIR
    )
    _write_lite_query_tower(folder / QUERY_MODEL_DIR, folder / TFLITE_FILE)
    save_candidate_model(
        RawCandidateModel(model.candidate_tower, vocabs, config.features, content_dim),
        folder / CANDIDATE_MODEL_DIR,
    )


def _write_index(
    folder: Path,
    ids: list[str],
    embeddings: np.ndarray,
    tuning_queries: np.ndarray | None,
    index_kind: IndexKind,
) -> dict[str, Any]:
    """Build (and tune) the candidate index into ``folder``; the manifest's ``index`` entry."""
    index_config = IndexConfig(kind=index_kind).resolve(len(embeddings))
    index = make_index(ids, embeddings, index_config)
    tuning = _tune(index, ids, embeddings, tuning_queries)
    index.save(folder / INDEX_DIR)
    return {
        "config": index.config.to_dict(),
        "kind": index.config.kind,
        "size": len(index),
        **({} if tuning is None else {"tuning": tuning}),
    }


def _tune(
    index: Index, ids: list[str], embeddings: np.ndarray, queries: np.ndarray | None
) -> dict[str, Any] | None:
    """Tune a ScaNN tree index on held-out queries; the manifest's tuning entry, or None.

    The target is `recsys index tune`'s default (recall@100 >= 0.95 against exact search);
    `recsys index tune` re-tunes an exported version to another.
    """
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

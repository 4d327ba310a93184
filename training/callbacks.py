"""Keras callbacks of the training job: validation Recall@K each epoch, resume bookkeeping."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from recsys.dataset.validation import read_dataset
from recsys.evaluation.exclusion import Watched, WatchLog, resolve_exclude_watched
from recsys.evaluation.ranking import rank_by_day
from recsys.examples.building import LABEL_TIME
from recsys.features import contract as F
from recsys.features.tables import ItemTable
from recsys.index.recall import recall_at_k
from recsys.model.two_tower import embed_candidates, inference_fn

log = logging.getLogger(__name__)


class EvalQueries:
    """A fixed sample of evaluation examples: query features, label rows and label times.

    ``excluded``: each query's catalog rows left out of its ranking (its user's watched
    videos, under the evaluation's watched-video rule), or None.
    """

    def __init__(self, rows: dict[str, np.ndarray], excluded: Watched | None = None) -> None:
        self.features = {name: rows[name] for name in F.QUERY_FEATURES if name in rows}
        self.labels = np.asarray(rows.get(F.ITEM_INDEX, np.zeros(0)), dtype=np.int64)
        self.times = np.asarray(rows.get(LABEL_TIME, np.zeros(0)), dtype=np.int64)
        self.excluded = excluded
        if excluded is not None and len(excluded) != len(self.labels):
            raise ValueError(f"{len(excluded)} excluded lists for {len(self.labels)} queries")

    @classmethod
    def with_rule(
        cls, rows: dict[str, np.ndarray], data: Path, rule: str
    ) -> tuple[EvalQueries, dict[str, Any]]:
        """The queries of ``rows`` with ``rule`` ("auto", "yes", "no") applied to the users'
        watches in dataset ``data``; also the rule as the manifest records it."""
        if rule == "no":  # nothing to read: the rule keeps watched videos whatever the data
            resolve_exclude_watched(rule, rewatches=False)
            return cls(rows), {"rule": rule, "rewatches": None, "applied": False}
        watches = WatchLog.of(read_dataset(data, validate=False))
        rewatches = watches.rewatches
        applied = resolve_exclude_watched(rule, rewatches)
        excluded = None
        if applied and len(rows.get(F.ITEM_INDEX, ())):
            excluded = watches.before(rows[F.USER_INDEX], rows[LABEL_TIME])
        return cls(rows, excluded), {"rule": rule, "rewatches": rewatches, "applied": applied}

    def __len__(self) -> int:
        """Number of evaluation queries."""
        return len(self.labels)

    def batches(self, size: int = 1024) -> list[dict[str, np.ndarray]]:
        """The queries in batches of ``size``, in label order."""
        return [
            {k: v[s : s + size] for k, v in self.features.items()}
            for s in range(0, len(self), size)
        ]


def query_embeddings(query_tower: Any, queries: EvalQueries) -> np.ndarray:
    """Query-tower outputs ``[Q, d]`` for every evaluation query."""
    embed = inference_fn(query_tower)
    return np.concatenate([embed(b).numpy() for b in queries.batches()], axis=0)


def catalog_recall(
    model: Any,
    items: ItemTable,
    queries: EvalQueries,
    ks: Sequence[int],
    embedded: np.ndarray | None = None,
) -> dict[int, float]:
    """Recall@K of exact search over the catalog as it stood at each query's time.

    Videos uploaded after a query are out of its ranking; the catalog is embedded at the
    start of each query's day (see :mod:`recsys.evaluation.ranking`). Recall is
    :func:`recsys.index.recall.recall_at_k`, as in offline evaluation, and each query's
    ``queries.excluded`` rows are left out as there. ``embedded``: the
    queries' tower outputs when the caller has them already (:func:`query_embeddings`).
    """
    if len(queries) == 0:
        return {int(k): float("nan") for k in ks}
    rows = np.arange(len(items))

    def embed_catalog(reference_time: int) -> np.ndarray:
        return embed_candidates(model.candidate_tower, items.features(rows, reference_time))

    ranked = rank_by_day(
        query_embeddings(model.query_tower, queries) if embedded is None else embedded,
        queries.times,
        embed_catalog,
        items.upload_time,
        max(int(k) for k in ks),
        queries.excluded,
    )
    return {int(k): recall_at_k(ranked, queries.labels, int(k)) for k in ks}


class RecallCallback(tf.keras.callbacks.Callback):
    """Logs validation Recall@K over the whole catalog (exact search) after every epoch."""

    def __init__(self, items: ItemTable, queries: EvalQueries, ks: Sequence[int]) -> None:
        super().__init__()
        self.items = items
        self.queries = queries
        self.ks = tuple(int(k) for k in ks)
        self.history: list[dict[str, float]] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Compute and log Recall@K; the values join Keras' epoch logs (and TensorBoard)."""
        started = time.perf_counter()
        recall = catalog_recall(self.model, self.items, self.queries, self.ks)
        entry = {f"val_recall_at_{k}": v for k, v in recall.items()}
        if logs is not None:
            logs.update(entry)
        self.history.append(entry)
        shown = ", ".join(f"@{k} {v:.4f}" for k, v in recall.items())
        log.info(
            "epoch %d: validation recall %s on %d queries (%.1f s)",
            epoch + 1,
            shown,
            len(self.queries),
            time.perf_counter() - started,
        )


class EpochTracker(tf.keras.callbacks.Callback):
    """Remembers which epoch this process started at (after a resume) and epoch timings."""

    def __init__(self, total_epochs: int) -> None:
        super().__init__()
        self.total_epochs = total_epochs
        self.first_epoch: int | None = None
        self.epoch_seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Log a resume the first time an epoch starts past zero."""
        if self.first_epoch is None:
            self.first_epoch = epoch
            if epoch > 0:
                log.info(
                    "resumed from checkpoint: continuing at epoch %d/%d",
                    epoch + 1,
                    self.total_epochs,
                )
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Record how long the epoch took and log its loss."""
        self.epoch_seconds.append(time.perf_counter() - self._started)
        loss = (logs or {}).get("loss")
        log.info(
            "epoch %d/%d done in %.1f s, loss %s",
            epoch + 1,
            self.total_epochs,
            self.epoch_seconds[-1],
            "n/a" if loss is None else f"{float(loss):.4f}",
        )

"""The training job: examples, strategy, fit loop with checkpoints and resume, then export.

``train()`` is the typed entry point that ``recsys train`` and the tests call. It builds (or
reuses) the example shards for the dataset and split, trains the two towers under the
automatically chosen ``tf.distribute`` strategy, checkpoints every epoch with Keras'
``BackupAndRestore`` (a killed run started again with the same arguments resumes), logs to
TensorBoard, measures validation Recall@K each epoch, and exports a versioned artifact.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import tensorflow as tf

from recsys.config import Config
from recsys.dataset.io import read_meta
from recsys.dataset.splits import Split
from recsys.dataset.validation import validate_dataset
from recsys.examples.building import (
    VOCAB_FILE,
    ExampleSet,
    load_catalog,
    read_example_text,
    read_examples,
)
from recsys.examples.cache import check_examples, prepare_examples, short_digest
from recsys.examples.pipeline import example_batches, make_dataset
from recsys.features.tables import ItemTable
from recsys.features.vocab import Vocabularies
from recsys.logs import step
from recsys.model.towers import VocabSizes
from recsys.model.two_tower import TwoTowerModel, make_optimizer
from recsys_training.callbacks import (
    EpochTracker,
    EvalQueries,
    RecallCallback,
    catalog_recall,
    query_embeddings,
)
from recsys_training.export import export_artifact
from recsys_training.live_fold import fold_live_catalog
from recsys_training.strategy import choose_strategy, configure_threads, enable_mixed_precision

if TYPE_CHECKING:
    from recsys.index.base import IndexKind

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced."""

    version_dir: Path | None  # None on non-chief workers, which do not export
    metrics: dict[str, Any] = field(default_factory=dict)
    examples_dir: str | Path | None = None


@dataclass
class _Inputs:
    """The examples of one run and the catalog tables built from their vocabularies."""

    examples_dir: str | Path  # a path, or a URI where a Beam pipeline wrote them
    example_set: ExampleSet
    vocabs: Vocabularies
    items_df: pd.DataFrame
    items: ItemTable
    sizes: VocabSizes
    batch: int  # the global batch: the configured one, at most the training examples
    steps_per_epoch: int

    @property
    def num_train(self) -> int:
        return self.example_set.counts["train"]

    @property
    def reference_time(self) -> int:
        return self.example_set.train_end


@dataclass
class _Fitted:
    """What the fit loop recorded."""

    history: dict[str, list[float]]
    tracker: EpochTracker
    recall: RecallCallback
    seconds: float
    backup: Path  # the BackupAndRestore folder of this run


def train(
    data: str | Path,
    artifacts: str | Path,
    name: str = "default",
    config: Config | None = None,
    split: Split | None = None,
    epochs: int | None = None,
    work_dir: str | Path | None = None,
    max_eval_queries: int = 5000,
    build_index: bool = True,
    progress: bool = True,
    index_kind: IndexKind = "auto",
    runner: str | None = None,
    beam_args: Sequence[str] = (),
    examples: str | Path | None = None,
) -> TrainResult:
    """Train the two-tower model on a canonical dataset and export ``artifacts/<name>/vN``.

    ``index_kind``: the exported index, "auto" (exact below 20,000 videos, else ScaNN, tuned
    on the held-out queries), "exact" or "scann". ``runner``: None builds the examples with
    the local builder, else with the Apache Beam pipeline on that runner ("local" or a Beam
    runner name, with ``beam_args`` passed to Beam); both write the same examples.
    ``examples``: train on this examples folder instead (a path or a URI such as
    ``gs://bucket/examples``, e.g. from ``recsys examples build --runner DataflowRunner``),
    checked to come from ``data`` with this split and config; read where it is, streamed
    when large.
    """
    config = config or Config()
    split = split or Split("time")
    if config.train.profiles_until == "cutoff" and split.name != "time":
        raise ValueError("train.profiles_until = 'cutoff' needs the time split")
    data, artifacts = Path(data), Path(artifacts)
    started = time.perf_counter()
    # The strategy comes first: MultiWorkerMirroredStrategy must exist before any TF op runs.
    configure_threads(config.train.intra_op_threads, config.train.inter_op_threads)
    strategy = choose_strategy()
    is_chief = _is_chief(strategy)
    with step(f"validating {data}"):
        validate_dataset(data).raise_if_invalid()
    work = Path(work_dir) if work_dir else artifacts / name / ".work"
    work.mkdir(parents=True, exist_ok=True)
    inputs = _prepare_inputs(
        data, work, split, config, progress and is_chief, runner, beam_args, examples
    )
    total_epochs = epochs or config.train.epochs
    tf.keras.utils.set_random_seed(config.train.seed)
    if config.train.mixed_precision:
        enable_mixed_precision()
    # The order of what follows is the order TF draws its op seeds in: keep it.
    dataset = _distributed_dataset(strategy, inputs, config.train.seed)
    model = _build_model(strategy, inputs, config)
    queries, exclusion = EvalQueries.with_rule(
        read_examples(inputs.examples_dir, "eval", limit=max_eval_queries, seed=config.train.seed),
        data,
        config.train.exclude_watched,
    )
    fitted = _fit(
        strategy, model, dataset, inputs, queries, config, total_epochs, work, is_chief, progress
    )
    # Embedded once: the final recall and the export's index tuning both use them.
    embedded = query_embeddings(model.query_tower, queries) if len(queries) else None
    final = catalog_recall(model, inputs.items, queries, config.train.recall_ks, embedded=embedded)
    metrics = _metrics(split, queries, final, fitted, inputs, total_epochs, strategy)
    metrics["exclude_watched"] = exclusion
    log.info("final recall on %d eval queries: %s", len(queries), metrics["recall"])
    version_dir = _export(
        model,
        artifacts,
        name,
        config,
        inputs,
        data,
        metrics,
        is_chief=is_chief,
        build_index=build_index,
        index_kind=index_kind,
        tuning_queries=embedded,
    )
    shutil.rmtree(fitted.backup, ignore_errors=True)  # the run completed: nothing to resume
    log.info("training job finished in %.1f s", time.perf_counter() - started)
    return TrainResult(version_dir, metrics, inputs.examples_dir)


def _prepare_inputs(
    data: Path,
    work: Path,
    split: Split,
    config: Config,
    progress: bool,
    runner: str | None = None,
    beam_args: Sequence[str] = (),
    examples: str | Path | None = None,
) -> _Inputs:
    """The run's examples (given, built or reused), vocabularies, item table and batch shape."""
    examples_dir: str | Path
    if examples is not None:
        examples_dir = examples
        example_set = check_examples(examples, read_meta(data).fingerprint, split, config)
        log.info("training on the examples in %s", examples)
    else:
        examples_dir, example_set = prepare_examples(
            data, work, split, config, progress, runner, beam_args
        )
    vocab_source = f"{examples_dir}/{VOCAB_FILE}"
    vocabs = Vocabularies.from_json(read_example_text(examples_dir, VOCAB_FILE), vocab_source)
    _, items_df, content = load_catalog(data)
    items = ItemTable.build(items_df, content, vocabs, config.features)
    content_dim = items.content_dim if config.model.use_content_embedding else None
    if content_dim is None:
        items = replace(items, content_embedding=None)
    num_train = example_set.counts["train"]
    if num_train == 0:
        raise ValueError(f"{data}: the {split.name} split leaves no training examples")
    batch = min(config.train.batch_size, num_train)
    return _Inputs(
        examples_dir=examples_dir,
        example_set=example_set,
        vocabs=vocabs,
        items_df=items_df,
        items=items,
        sizes=VocabSizes.of(vocabs, content_dim),
        batch=batch,
        steps_per_epoch=max(1, num_train // batch),
    )


def _distributed_dataset(strategy: Any, inputs: _Inputs, seed: int) -> Any:
    """The training examples, split over the strategy's input pipelines, repeated."""

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = ctx.get_per_replica_batch_size(inputs.batch)
        ds = make_dataset(
            inputs.examples_dir,
            "train",
            inputs.items,
            per_replica,
            seed=seed,
            drop_remainder=True,
            shard_index=ctx.input_pipeline_id,
            num_shards=ctx.num_input_pipelines,
        )
        # Repeat so that every worker runs exactly steps_per_epoch steps (no ragged end).
        return ds.repeat()

    return strategy.distribute_datasets_from_function(dataset_fn)


def _build_model(strategy: Any, inputs: _Inputs, config: Config) -> TwoTowerModel:
    """The two towers under the strategy's scope, built and compiled."""
    corpus = None
    if config.model.num_uniform_negatives > 0:
        corpus = inputs.items.features(np.arange(len(inputs.items)), inputs.reference_time)
    # Build the towers on a real batch before fit, so BackupAndRestore restores into built
    # variables instead of deferring.
    sample = next(example_batches(inputs.examples_dir, "train", inputs.items, 2, shuffle=False))
    with strategy.scope():
        model = TwoTowerModel(
            config.model,
            inputs.sizes,
            candidate_corpus=corpus,
            reference_time=inputs.reference_time,
        )
        model.query_tower(sample)
        model.candidate_tower(sample)
        model.built = True
        model.compile(
            optimizer=make_optimizer(config.train),
            steps_per_execution=config.train.steps_per_execution,
        )
    return model


def _fit(
    strategy: Any,
    model: TwoTowerModel,
    dataset: Any,
    inputs: _Inputs,
    queries: EvalQueries,
    config: Config,
    epochs: int,
    work: Path,
    is_chief: bool,
    progress: bool,
) -> _Fitted:
    """Fit with epoch checkpoints (resuming a killed run), validation recall and TensorBoard."""
    run_key = short_digest(
        {
            "examples": str(inputs.examples_dir).rstrip("/").rsplit("/", 1)[-1],
            "config": config.to_dict(),
            "epochs": epochs,
        }
    )
    backup = work / f"checkpoints-{run_key}"
    tracker = EpochTracker(epochs)
    recall_cb = RecallCallback(inputs.items, queries, config.train.recall_ks)
    callbacks = [
        tf.keras.callbacks.BackupAndRestore(str(backup)),
        tracker,
        recall_cb,
        tf.keras.callbacks.TensorBoard(str(work / "tensorboard" / run_key), update_freq="epoch"),
    ]
    log.info(
        "training on %d examples: %d epochs x %d steps, global batch %d, %d replicas",
        inputs.num_train,
        epochs,
        inputs.steps_per_epoch,
        inputs.batch,
        strategy.num_replicas_in_sync,
    )
    started = time.perf_counter()
    history = model.fit(
        dataset,
        epochs=epochs,
        steps_per_epoch=inputs.steps_per_epoch,
        callbacks=callbacks,
        verbose=(1 if sys.stderr.isatty() and progress else 2) if is_chief else 0,
    )
    return _Fitted(history.history, tracker, recall_cb, time.perf_counter() - started, backup)


def _metrics(
    split: Split,
    queries: EvalQueries,
    final: dict[int, float],
    fitted: _Fitted,
    inputs: _Inputs,
    epochs: int,
    strategy: Any,
) -> dict[str, Any]:
    """The run's metrics as the manifest records them."""
    epochs_here = len(fitted.tracker.epoch_seconds)
    seconds = fitted.seconds
    return {
        "split": split.name,
        "eval_queries": len(queries),
        "recall": {str(k): v for k, v in final.items()},
        "loss": [float(x) for x in fitted.history.get("loss", [])],
        "validation": fitted.recall.history,
        "training": {
            "examples": inputs.num_train,
            "epochs": epochs,
            "steps_per_epoch": inputs.steps_per_epoch,
            "global_batch": inputs.batch,
            "replicas": strategy.num_replicas_in_sync,
            "resumed_from_epoch": fitted.tracker.first_epoch or 0,
            "fit_seconds": seconds,
            "examples_per_second": (epochs_here * inputs.steps_per_epoch * inputs.batch / seconds)
            if seconds > 0 and epochs_here
            else None,
        },
    }


def _export(
    model: TwoTowerModel,
    artifacts: Path,
    name: str,
    config: Config,
    inputs: _Inputs,
    data: Path,
    metrics: dict[str, Any],
    is_chief: bool,
    build_index: bool,
    index_kind: IndexKind,
    tuning_queries: np.ndarray | None,
) -> Path | None:
    """Export the artifact version on the chief; None on the other workers."""
    target = artifacts if is_chief else Path(tempfile.mkdtemp(prefix="recsys-worker-export-"))
    items_df, items, live_seq = fold_live_catalog(
        Path(artifacts) / name, inputs.items_df, inputs.items, inputs.vocabs, config
    )
    version_dir = export_artifact(
        model,
        target,
        name,
        config=config,
        vocabs=inputs.vocabs,
        items=items,
        items_df=items_df,
        reference_time=inputs.reference_time,
        data=data,
        example_set=inputs.example_set,
        metrics=metrics,
        build_index=build_index and is_chief,
        index_kind=index_kind,
        tuning_queries=tuning_queries if build_index and is_chief else None,
        live_catalog_seq=live_seq,
    )
    if not is_chief:
        # Every worker takes part in saving (variables are synchronised), only the chief keeps it.
        shutil.rmtree(target, ignore_errors=True)
        return None
    return version_dir


def _is_chief(strategy: Any) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return bool(
        resolver.task_type == "chief"
        or (
            resolver.task_type == "worker"
            and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict()
        )
    )

"""The training job: examples, strategy, fit loop with checkpoints and resume, then export.

``train()`` is the typed entry point that ``recsys train`` and the tests call. It builds (or
reuses) the example shards for the dataset and split, trains the two towers under the
automatically chosen ``tf.distribute`` strategy, checkpoints every epoch with Keras'
``BackupAndRestore`` (a killed run started again with the same arguments resumes), logs to
TensorBoard, measures validation Recall@K each epoch, and exports a versioned artifact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.config import Config
from recsys.dataset.splits import Split
from recsys.dataset.validation import validate_dataset
from recsys.examples.building import (
    VOCAB_FILE,
    ExampleSet,
    build_examples,
    load_catalog,
    read_examples,
)
from recsys.examples.pipeline import example_batches, make_dataset
from recsys.features.tables import ItemTable
from recsys.features.vocab import Vocabularies
from recsys.logs import Progress, step

if TYPE_CHECKING:
    from recsys.index.base import IndexKind

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced."""

    version_dir: Path | None  # None on non-chief workers, which do not export
    metrics: dict[str, Any] = field(default_factory=dict)
    examples_dir: Path | None = None


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :12
    ]


def prepare_examples(
    data: Path, work: Path, split: Split, config: Config, progress: bool = True
) -> tuple[Path, ExampleSet]:
    """Build the example shards for (dataset, split, feature config), or reuse a matching build."""
    from recsys.dataset.io import read_meta

    meta = read_meta(data)
    key = _digest(
        {
            "data": meta.fingerprint,
            "split": [split.name, split.cutoff, split.eval_fraction],
            "features": config.features,
            "seed": config.train.seed,
        }
    )
    out = work / f"examples-{key}"
    if (out / "examples.json").is_file():
        log.info("reusing examples in %s", out)
        return out, ExampleSet.load(out)
    with step(f"building {split.name}-split examples from {data}"):
        result = build_examples(
            data,
            out,
            split,
            config.features,
            seed=config.train.seed,
            progress=Progress("building examples", "partitions", enabled=progress),
        )
    return out, result


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
) -> TrainResult:
    """Train the two-tower model on a canonical dataset and export ``artifacts/<name>/vN``.

    ``index_kind``: the exported index, "auto" (exact below 20,000 videos, else ScaNN, tuned
    on the held-out queries), "exact" or "scann".
    """
    from recsys_training.strategy import choose_strategy, configure_threads

    config = config or Config()
    split = split or Split("time")
    data, artifacts = Path(data), Path(artifacts)
    started = time.perf_counter()
    # The strategy comes first: MultiWorkerMirroredStrategy must exist before any TF op runs.
    configure_threads(config.train.intra_op_threads, config.train.inter_op_threads)
    strategy = choose_strategy()
    import tensorflow as tf

    from recsys.model.towers import VocabSizes
    from recsys.model.two_tower import TwoTowerModel, make_optimizer
    from recsys_training.callbacks import (
        EpochTracker,
        EvalQueries,
        RecallCallback,
        catalog_recall,
        query_embeddings,
    )

    is_chief = _is_chief(strategy)
    with step(f"validating {data}"):
        validate_dataset(data).raise_if_invalid()
    work = Path(work_dir) if work_dir else artifacts / name / ".work"
    work.mkdir(parents=True, exist_ok=True)
    examples_dir, example_set = prepare_examples(data, work, split, config, progress and is_chief)
    vocabs = Vocabularies.load(examples_dir / VOCAB_FILE)
    _, items_df, content = load_catalog(data)
    items = ItemTable.build(items_df, content, vocabs, config.features)
    content_dim = items.content_dim if config.model.use_content_embedding else None
    if content_dim is None:
        items = _without_content(items)
    sizes = VocabSizes.of(vocabs, content_dim)
    reference_time = example_set.train_end
    global_batch = config.train.batch_size
    num_train = example_set.counts["train"]
    if num_train == 0:
        raise ValueError(f"{data}: the {split.name} split leaves no training examples")
    batch = min(global_batch, num_train)
    steps_per_epoch = max(1, num_train // batch)
    total_epochs = epochs or config.train.epochs
    tf.keras.utils.set_random_seed(config.train.seed)
    if config.train.mixed_precision:
        from recsys_training.strategy import enable_mixed_precision

        enable_mixed_precision()

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = ctx.get_per_replica_batch_size(batch)
        ds = make_dataset(
            examples_dir,
            "train",
            items,
            per_replica,
            seed=config.train.seed,
            drop_remainder=True,
            shard_index=ctx.input_pipeline_id,
            num_shards=ctx.num_input_pipelines,
        )
        # Repeat so that every worker runs exactly steps_per_epoch steps (no ragged end).
        return ds.repeat()

    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    corpus = None
    if config.model.num_uniform_negatives > 0:
        corpus = items.features(np.arange(len(items)), reference_time)
    # Build the towers on a real batch before fit, so BackupAndRestore restores into built
    # variables instead of deferring.
    sample = next(example_batches(examples_dir, "train", items, 2, shuffle=False))
    with strategy.scope():
        model = TwoTowerModel(
            config.model, sizes, candidate_corpus=corpus, reference_time=reference_time
        )
        model.query_tower(sample)
        model.candidate_tower(sample)
        model.built = True
        model.compile(
            optimizer=make_optimizer(config.train),
            steps_per_execution=config.train.steps_per_execution,
        )
    queries = EvalQueries(
        read_examples(examples_dir, "eval", limit=max_eval_queries, seed=config.train.seed)
    )
    run_key = _digest(
        {"examples": examples_dir.name, "config": config.to_dict(), "epochs": total_epochs}
    )
    backup = work / f"checkpoints-{run_key}"
    tracker = EpochTracker(total_epochs)
    recall_cb = RecallCallback(items, queries, config.train.recall_ks)
    callbacks = [
        tf.keras.callbacks.BackupAndRestore(str(backup)),
        tracker,
        recall_cb,
        tf.keras.callbacks.TensorBoard(str(work / "tensorboard" / run_key), update_freq="epoch"),
    ]
    log.info(
        "training on %d examples: %d epochs x %d steps, global batch %d, %d replicas",
        num_train,
        total_epochs,
        steps_per_epoch,
        batch,
        strategy.num_replicas_in_sync,
    )
    fit_started = time.perf_counter()
    history = model.fit(
        dataset,
        epochs=total_epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=(1 if sys.stderr.isatty() and progress else 2) if is_chief else 0,
    )
    fit_seconds = time.perf_counter() - fit_started
    # Embedded once: the final recall and the export's index tuning both use them.
    embedded = query_embeddings(model.query_tower, queries) if len(queries) else None
    final = catalog_recall(model, items, queries, config.train.recall_ks, embedded=embedded)
    epochs_here = len(tracker.epoch_seconds)
    metrics: dict[str, Any] = {
        "split": split.name,
        "eval_queries": len(queries),
        "recall": {str(k): v for k, v in final.items()},
        "loss": [float(x) for x in history.history.get("loss", [])],
        "validation": recall_cb.history,
        "training": {
            "examples": num_train,
            "epochs": total_epochs,
            "steps_per_epoch": steps_per_epoch,
            "global_batch": batch,
            "replicas": strategy.num_replicas_in_sync,
            "resumed_from_epoch": tracker.first_epoch or 0,
            "fit_seconds": fit_seconds,
            "examples_per_second": (epochs_here * steps_per_epoch * batch / fit_seconds)
            if fit_seconds > 0 and epochs_here
            else None,
        },
    }
    log.info("final recall on %d eval queries: %s", len(queries), metrics["recall"])
    from recsys_training.export import export_artifact

    target = artifacts if is_chief else Path(tempfile.mkdtemp(prefix="recsys-worker-export-"))
    version_dir: Path | None = export_artifact(
        model,
        target,
        name,
        config=config,
        vocabs=vocabs,
        items=items,
        items_df=items_df,
        reference_time=reference_time,
        data=data,
        example_set=example_set,
        metrics=metrics,
        build_index=build_index and is_chief,
        index_kind=index_kind,
        tuning_queries=embedded if build_index and is_chief else None,
    )
    if not is_chief:
        # Every worker takes part in saving (variables are synchronised), only the chief keeps it.
        shutil.rmtree(target, ignore_errors=True)
        version_dir = None
    shutil.rmtree(backup, ignore_errors=True)  # the run completed: nothing left to resume
    log.info("training job finished in %.1f s", time.perf_counter() - started)
    return TrainResult(version_dir, metrics, examples_dir)


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


def _without_content(items: ItemTable) -> ItemTable:
    from dataclasses import replace

    return replace(items, content_embedding=None)

"""Offline evaluation of an artifact: model vs baselines vs oracle, segments, plots, report.

:func:`evaluate` loads an artifact version, rebuilds (or reuses) the evaluation examples of
the split it was trained on, embeds the queries with the query SavedModel's ``serve_ids``
signature, ranks every catalog video by exact search and with the served index, scores the
baselines and, when the caller passes an :class:`Oracle` (synthetic worlds know their true
probabilities), the oracle on the very same queries, and writes ``metrics.json``,
``report.md`` and a self-contained ``report.html`` into ``out``. The Figure 6 ablations run
when the caller passes an :class:`~recsys.evaluation.ablation.Ablation` with a trainer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from recsys.config import ExcludeWatched
from recsys.dataset.io import CanonicalDataset, DatasetError, DatasetMeta, read_meta
from recsys.dataset.splits import Split
from recsys.dataset.validation import read_dataset
from recsys.evaluation import embeddings as E
from recsys.evaluation import metrics as M
from recsys.evaluation.ablation import Ablation, run_ablation
from recsys.evaluation.artifact_model import ArtifactModel, model_features
from recsys.evaluation.baselines import (
    EASE,
    Baseline,
    CoWatch,
    ItemGram,
    ItemKNN,
    MostPopular,
    TFRSBasic,
    TrainingData,
    Trending,
    load_training_data,
    vocab_to_rows,
)
from recsys.evaluation.exclusion import (
    Watched,
    WatchLog,
    drop_excluded,
    resolve_exclude_watched,
)
from recsys.evaluation.report import write_reports
from recsys.evaluation.result import DECIMALS, METHOD_LABELS, METRICS_FILE, METRICS_FORMAT, rounded
from recsys.evaluation.segments import (
    age_bin_labels,
    build_segments,
    observed_age_share,
    predicted_age_share,
    segment_metrics,
)
from recsys.examples.building import LABEL_TIME, VOCAB_FILE, ExampleSet, load_catalog, read_examples
from recsys.examples.cache import find_examples, prepare_examples
from recsys.features import contract as F
from recsys.features.vocab import Vocabularies
from recsys.index.top_k import top_k
from recsys.logs import Progress, step

log = logging.getLogger(__name__)


class OracleScores(Protocol):
    """True next-watch probabilities of a dataset whose generating process is known."""

    def __call__(self, dataset: CanonicalDataset, rows: np.ndarray) -> np.ndarray:
        """``[len(rows), num_items]`` (columns: ``dataset.items`` order) at the watch events
        ``rows`` (positions in ``dataset.events``), from strictly earlier events only."""
        ...


class Oracle(Protocol):
    """Where the oracle of a dataset folder comes from (for example a synthetic world's)."""

    def __call__(self, data: Path) -> OracleScores | None:
        """The oracle of the dataset in ``data``, or None when its truth is unknown."""
        ...


# ---------------------------------------------------------------- examples and queries


@dataclass
class Queries:
    """The evaluation examples every method is scored on, and the catalog they refer to."""

    split: Split
    examples_dir: Path
    vocab: Vocabularies  # the examples' vocabularies (ids in ``columns``)
    users: pd.DataFrame
    items: pd.DataFrame  # the catalog, in the artifact's row order
    content: np.ndarray | None  # content embeddings [num_items, d], row-aligned with items
    item_vocab_ids: np.ndarray  # [num_items] vocabulary id of each catalog row
    columns: dict[str, np.ndarray]  # example columns, [n, ...] each
    available: int  # held-out examples before sampling
    seed: int  # the sampling (and baseline) seed
    watched: Watched  # each query's user's videos watched before it
    exclusion: dict[str, Any]  # the watched-video rule: asked, rewatches, applied

    def __len__(self) -> int:
        return len(self.columns[F.ITEM_INDEX])

    @property
    def labels(self) -> np.ndarray:
        """``[n]`` catalog row of each query's true next watch."""
        return self.columns[F.ITEM_INDEX].astype(np.int64)

    @property
    def times(self) -> np.ndarray:
        """``[n]`` Unix seconds of each query."""
        return self.columns[LABEL_TIME].astype(np.int64)

    @property
    def upload_time(self) -> np.ndarray:
        """``[num_items]`` Unix seconds each catalog video was uploaded."""
        return self.items["upload_time"].to_numpy(np.int64)

    @property
    def excluded(self) -> Watched | None:
        """Each query's rows every ranking leaves out (watched videos), or None."""
        return self.watched if self.exclusion["applied"] else None

    def fetch(self, k: int) -> int:
        """How many rows a ranking must return for ``k`` to remain after the exclusions."""
        return k + (self.watched.max_count if self.exclusion["applied"] else 0)

    def final(self, ranked: np.ndarray, k: int) -> np.ndarray:
        """``ranked: [n, fetch(k)]`` without the excluded rows, ``[n, k]`` (-1 padded)."""
        if not self.exclusion["applied"]:
            return ranked
        return drop_excluded(ranked, self.watched, k)

    @property
    def rows_of_vocab(self) -> np.ndarray:
        """``[vocab size]`` catalog row of each item vocabulary id (-1: none)."""
        return vocab_to_rows(self.item_vocab_ids, len(self.vocab.items))


def resolve_split(model: ArtifactModel, data: Path, split: str | None) -> tuple[Split, list[str]]:
    """The split to evaluate (the artifact's by default, with its cut-off) and any warnings."""
    trained = str(model.manifest.data.get("split", "time"))
    name = split or trained
    warnings: list[str] = []
    if name == trained:
        cutoff = model.manifest.data.get("cutoff")
    else:
        warnings.append(
            f"the artifact was trained on the {trained!r} split but is evaluated on the "
            f"{name!r} split: some evaluation watches may be in its training data"
        )
        cutoff = None
    if name == "time" and cutoff is None:
        meta = read_meta(data)
        if not meta.time_range:
            raise DatasetError(f"{data}: dataset has no events")
        cutoff = Split("time").resolve_cutoff(np.array(meta.time_range))
    return Split(name, cutoff=None if cutoff is None else int(cutoff)), warnings  # type: ignore[arg-type]


def prepare_evaluation_examples(
    model: ArtifactModel, data: Path, split: Split, work_dir: Path, progress: bool
) -> Path:
    """Reuse the artifact's own examples (its training work folder) or build them."""
    fingerprint = read_meta(data).fingerprint
    folders = [work_dir, model.version_dir.parent / ".work"]
    found = find_examples(folders, fingerprint, split, model.config)
    if found is not None:
        log.info("reusing examples in %s", found)
        return found
    work_dir.mkdir(parents=True, exist_ok=True)
    path, _ = prepare_examples(data, work_dir, split, model.config, progress=progress)
    return path


def load_queries(
    model: ArtifactModel,
    data: Path,
    split: Split,
    work_dir: Path,
    max_queries: int | None,
    seed: int,
    progress: bool,
    exclude_watched: ExcludeWatched = "auto",
) -> Queries:
    """The split's evaluation examples (a seeded sample of ``max_queries``), the catalog, and
    each query's earlier watches with the exclusion rule resolved on ``data``."""
    with step(f"preparing {split.name}-split evaluation examples"):
        examples_dir = prepare_evaluation_examples(model, data, split, work_dir, progress)
    vocab = Vocabularies.load(examples_dir / VOCAB_FILE)
    users, items, content = load_catalog(data)
    if not np.array_equal(
        items["item_id"].astype(str).to_numpy(), model.items["item_id"].astype(str).to_numpy()
    ):
        raise DatasetError(
            f"{model.version_dir / 'items.parquet'} does not list the videos of "
            f"{data / 'items.parquet'} in the same order; was the artifact trained on {data}?"
        )
    available = ExampleSet.load(examples_dir).counts.get("eval", 0)
    columns = read_examples(examples_dir, "eval", limit=max_queries, seed=seed)
    if available == 0 or not columns:
        raise ValueError(f"the {split.name} split of {data} holds out no watches to evaluate")
    watches = WatchLog.of(read_dataset(data, validate=False))
    rewatches = watches.rewatches
    exclusion = {
        "rule": exclude_watched,
        "rewatches": rewatches,
        "applied": resolve_exclude_watched(exclude_watched, rewatches),
    }
    queries = Queries(
        split=split,
        examples_dir=examples_dir,
        vocab=vocab,
        users=users,
        items=items,
        content=content,
        item_vocab_ids=vocab.items.lookup(items["item_id"]),
        columns=columns,
        available=available,
        seed=seed,
        watched=watches.before(columns[F.USER_INDEX], columns[LABEL_TIME]),
        exclusion=exclusion,
    )
    log.info(
        "evaluating on %d of %d held-out watches (%s split), watched videos %s",
        len(queries),
        available,
        split.name,
        "excluded" if exclusion["applied"] else "kept",
    )
    return queries


# ---------------------------------------------------------------- the model and a compared one


class _Timer:
    """Seconds each stage took, by name, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started


def rank_model_exact(
    model: ArtifactModel, queries: Queries, k: int, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The queries' embeddings ``[n, d]`` and the model's exact top-``k`` ``[n, k]``."""
    with step(f"embedding {len(queries)} queries with {model.label}"):
        q_emb = model.query_embeddings(
            model_features(queries.columns, queries.vocab, model),
            progress=Progress("query embeddings", "queries", enabled=progress),
        )
    ranked = model.rank_exact(
        q_emb, queries.times, queries.items, queries.content, k, queries.excluded
    )
    return q_emb, ranked


def rank_model_served(
    model: ArtifactModel,
    q_emb: np.ndarray,
    query_times: np.ndarray,
    exact: np.ndarray,
    ks: Sequence[int],
    warnings: list[str],
    queries: Queries,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The served index's top-``max(ks)`` at each query's time (None without an index)."""
    served = model.rank_served(q_emb, query_times, queries.fetch(max(ks)))
    if served is None:
        warnings.append(f"{model.label} has no index: served-index numbers are left out")
        return None, {"kind": None}
    ranked, kind = queries.final(served[0], max(ks)), served[1]
    return ranked, {
        "kind": kind,
        "config": model.manifest.index.get("config"),
        "recall_vs_exact": {str(k): _overlap(ranked, exact, k) for k in ks},
    }


def rank_compared(
    compare_to: str | Path,
    model: ArtifactModel,
    fingerprint: str,
    queries: Queries,
    k: int,
    warnings: list[str],
) -> tuple[ArtifactModel, np.ndarray | None]:
    """Another artifact version and its exact top-``k`` on the same queries.

    The ranking is None (with a warning) when that version read other data or features.
    """
    compare = ArtifactModel(compare_to)
    if compare.manifest.data.get("fingerprint") != fingerprint:
        warnings.append(f"{compare.label} was trained on other data: its metrics are left out")
        return compare, None
    if asdict(compare.config.features) != asdict(model.config.features):
        warnings.append(f"{compare.label} uses other feature windows: its metrics are left out")
        return compare, None
    split = queries.split
    if compare.manifest.data.get("split") != split.name or (
        compare.manifest.data.get("cutoff") != split.cutoff
    ):
        warnings.append(
            f"{compare.label} was trained on another split: some evaluation watches "
            "may be in its training data"
        )
    c_emb = compare.query_embeddings(model_features(queries.columns, queries.vocab, compare))
    return compare, compare.rank_exact(
        c_emb, queries.times, queries.items, queries.content, k, queries.excluded
    )


# ---------------------------------------------------------------- baselines and oracle


@dataclass
class _Baselines:
    """What the baselines learned from and the settings they ran with."""

    training_examples: int
    counts: np.ndarray  # [num_items] training watches of each video
    settings: dict[str, Any]


def rank_item_item(
    train: TrainingData,
    queries: Queries,
    k: int,
    max_items: int,
    ranked: dict[str, np.ndarray],
    warnings: list[str],
) -> dict[str, Any]:
    """Rank with EASE and item-kNN into ``ranked`` (0 ``max_items``: left out); settings."""
    if max_items == 0:
        warnings.append("EASE and item-kNN were left out (--ease-max-items 0)")
        return {}
    with step(f"item co-occurrence over up to {max_items} videos"):
        gram = ItemGram(train, max_items)
    if gram.seen > len(gram.rows):
        warnings.append(
            f"EASE and item-kNN cover the {len(gram.rows)} most watched of the {gram.seen} "
            "videos watched in training (--ease-max-items): the others are never recommended "
            "by them"
        )
    with step(f"solving EASE over {len(gram.rows)} videos"):
        ease = EASE(gram)
    ranked["ease"] = queries.final(ease.rank_watched(queries.watched, queries.fetch(k)), k)
    del ease  # its [n, n] weights: one such matrix at a time
    knn = ItemKNN(gram)
    ranked["item_knn"] = queries.final(knn.rank_watched(queries.watched, queries.fetch(k)), k)
    covered = {"videos": len(gram.rows), "watched_videos": gram.seen, "max_videos": max_items}
    return {
        "ease": {"l2": 200.0, **covered},
        "item_knn": {"neighbours": knn.neighbours, "similarity": "cosine", **covered},
    }


def rank_baselines(
    queries: Queries,
    k: int,
    batch_size: int,
    tfrs_epochs: int,
    ranked: dict[str, np.ndarray],
    timer: _Timer,
    progress: bool,
    ease_max_items: int = 8000,
    warnings: list[str] | None = None,
) -> _Baselines:
    """Rank with most-popular, trending, co-watch, TFRS basic, EASE and item-kNN into
    ``ranked``."""
    rows_of_vocab = queries.rows_of_vocab
    with timer("baseline_data"), step("reading the training examples for the baselines"):
        train = load_training_data(
            queries.examples_dir, rows_of_vocab, len(queries.items), len(queries.users)
        )
    with timer("simple_baselines"):
        most_popular = MostPopular(train)
        simple: dict[str, Baseline] = {
            "most_popular": most_popular,
            "trending": Trending(train, queries.split.cutoff),
            "co_watch": CoWatch(train, rows_of_vocab),
        }
        for name, baseline in simple.items():
            ranked[name] = queries.final(baseline.rank(queries.columns, queries.fetch(k)), k)
    with timer("tfrs_basic"):
        with step(f"training the TFRS basic model ({tfrs_epochs} epochs)"):
            # The tutorial's towers, loss and optimizer; the model's own batch size, since the
            # in-batch softmax costs batch^2 per step and the tutorial's 8192 was for 80k ratings.
            tfrs_basic = TFRSBasic(epochs=tfrs_epochs, batch_size=batch_size, seed=queries.seed)
            tfrs_basic.fit(train, Progress("TFRS basic", "epochs", enabled=progress))
        ranked["tfrs_basic"] = queries.final(tfrs_basic.rank(queries.columns, queries.fetch(k)), k)
    with timer("ease_item_knn"):
        item_item = rank_item_item(
            train, queries, k, ease_max_items, ranked, [] if warnings is None else warnings
        )
    settings = {
        "trending": {"window_days": 7.0, "half_life_days": 1.0},
        "co_watch": {"recent_watches": 5},
        "tfrs_basic": {
            "embedding_dim": tfrs_basic.embedding_dim,
            "epochs": tfrs_basic.epochs,
            "batch_size": tfrs_basic.batch_size,
            "learning_rate": tfrs_basic.learning_rate,
        },
        **item_item,
    }
    return _Baselines(len(train.item_rows), most_popular.counts, settings)


def watch_rows(dataset: CanonicalDataset, queries: Mapping[str, np.ndarray]) -> np.ndarray:
    """``[n]`` position in ``dataset.events`` of the watch each evaluation example predicts."""
    ev = dataset.events
    watch = (ev["type"] == "watch").to_numpy()
    keys = pd.DataFrame(
        {
            "user": pd.Index(dataset.users["user_id"]).get_indexer(ev["user_id"])[watch],
            "time": ev["timestamp"].to_numpy(np.int64)[watch],
            "item": pd.Index(dataset.items["item_id"]).get_indexer(ev["item_id"][watch]),
            "row": np.flatnonzero(watch),
        }
    ).drop_duplicates(["user", "time", "item"], keep="first")
    wanted = pd.DataFrame(
        {
            "user": np.asarray(queries[F.USER_INDEX], np.int64),
            "time": np.asarray(queries[LABEL_TIME], np.int64),
            "item": np.asarray(queries[F.ITEM_INDEX], np.int64),
        }
    )
    rows = wanted.merge(keys, on=["user", "time", "item"], how="left")["row"]
    if rows.isna().any():
        raise DatasetError(
            f"{int(rows.isna().sum())} evaluation examples match no watch event; "
            "were the examples built from this dataset?"
        )
    return rows.to_numpy(np.int64)


def oracle_ranking(
    data: Path,
    queries: Mapping[str, np.ndarray],
    k: int,
    oracle: Oracle,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray | None:
    """The oracle's top-``k`` ``[n, k]`` for each query, or None when ``data`` has no oracle."""
    scores = oracle(data)
    if scores is None:
        return None
    dataset = read_dataset(data, validate=False)
    try:
        rows = watch_rows(dataset, queries)
    except DatasetError as exc:
        raise DatasetError(f"{data}: {exc}") from exc
    num_items = len(dataset.items)
    block = max(1, (1 << 24) // max(1, num_items))
    out = np.empty((len(rows), min(k, num_items)), dtype=np.int64)
    for start in range(0, len(rows), block):
        probs = scores(dataset, rows[start : start + block])
        out[start : start + block] = top_k(probs, k)[0]
        if progress:
            progress(min(start + block, len(rows)), len(rows))
    return out


def rank_oracle(
    oracle: Oracle | None, data: Path, queries: Queries, k: int, progress: bool
) -> np.ndarray | None:
    """The oracle's top-``k`` ``[n, k]``, or None (logged) when there is no oracle for ``data``."""
    top = None
    if oracle is not None:
        with step("oracle ceiling"):
            top = oracle_ranking(
                data,
                queries.columns,
                queries.fetch(k),
                oracle,
                Progress("oracle", "queries", enabled=progress),
            )
            top = None if top is None else queries.final(top, k)
    if top is None:
        log.info("no oracle for %s: the report leaves its ceiling out", data)
    return top


@dataclass
class Rankings:
    """Every method's top-K on the same queries, and what the later stages need besides."""

    ranked: dict[str, np.ndarray]  # method -> [n, max K] catalog rows, best first
    q_emb: np.ndarray  # [n, d] the model's query embeddings
    index: dict[str, Any]  # the served index: kind, config, recall against exact search
    compare: ArtifactModel | None
    baselines: _Baselines


def rank_all(
    model: ArtifactModel,
    fingerprint: str,
    data: Path,
    queries: Queries,
    ks: Sequence[int],
    *,
    compare_to: str | Path | None,
    tfrs_epochs: int,
    oracle: Oracle | None,
    timer: _Timer,
    warnings: list[str],
    progress: bool,
    ease_max_items: int = 8000,
) -> Rankings:
    """Rank with the model (exact, served), a compared model, the baselines and the oracle."""
    k = max(ks)
    ranked: dict[str, np.ndarray] = {}
    with timer("model_exact"):
        q_emb, ranked["model_exact"] = rank_model_exact(model, queries, k, progress)
    with timer("model_index"):
        served, index_info = rank_model_served(
            model, q_emb, queries.times, ranked["model_exact"], ks, warnings, queries
        )
        if served is not None:
            ranked["model_index"] = served
    compare = None
    if compare_to is not None:
        with timer("compare_exact"):
            compare, compared = rank_compared(compare_to, model, fingerprint, queries, k, warnings)
        if compared is not None:
            ranked["compare_exact"] = compared
    batch = model.config.train.batch_size
    baselines = rank_baselines(
        queries, k, batch, tfrs_epochs, ranked, timer, progress, ease_max_items, warnings
    )
    with timer("oracle"):
        top = rank_oracle(oracle, data, queries, k, progress)
        if top is not None:
            ranked["oracle"] = top
    return Rankings(ranked, q_emb, index_info, compare, baselines)


# ---------------------------------------------------------------- metrics and views


def score(
    ranked: Mapping[str, np.ndarray],
    queries: Queries,
    ks: Sequence[int],
    counts: np.ndarray,
    index_info: dict[str, Any],
) -> dict[str, Any]:
    """The metrics section of ``metrics.json``: every ranking's summary and segment metrics,
    the true next watches' popularity, and the served index with its recall cost."""
    labels, num_items = queries.labels, len(queries.items)
    percentiles = M.popularity_percentiles(counts)
    methods = {
        name: M.summarize(r, labels, ks, num_items, percentiles) for name, r in ranked.items()
    }
    per_query = {name: M.per_query_metrics(r, labels, ks) for name, r in ranked.items()}
    if "model_index" in methods:
        # From the rounded recalls, so that the report's three columns add up.
        exact_recall: dict[str, float] = methods["model_exact"]["recall"]  # type: ignore[assignment]
        served_recall: dict[str, float] = methods["model_index"]["recall"]  # type: ignore[assignment]
        index_info["recall_cost"] = {
            str(k): round(exact_recall[str(k)], DECIMALS) - round(served_recall[str(k)], DECIMALS)
            for k in ks
        }
    groups = build_segments(
        queries.columns, queries.users, queries.upload_time, queries.item_vocab_ids
    )
    return {
        "methods": methods,
        "method_labels": {name: METHOD_LABELS[name] for name in methods},
        "true_next_watch_popularity_percentile": float(percentiles[labels].mean()),
        "index": index_info,
        "segments": segment_metrics(groups, per_query, ks),
    }


def embedding_view(
    model: ArtifactModel, rankings: Rankings, queries: Queries
) -> tuple[dict[str, Any], E.Projection]:
    """Video-embedding statistics and neighbours (against the compared model's) and the PCA."""
    compare = rankings.compare
    return E.embedding_report(
        model.item_embeddings,
        queries.items,
        counts=rankings.baselines.counts,
        compare=None if compare is None else (compare.item_embeddings, compare.items),
        seed=queries.seed,
    )


def example_age_view(model: ArtifactModel, queries: Queries, q_emb: np.ndarray) -> dict[str, Any]:
    """Figure 4 for the model: watch share by video age, observed and predicted."""
    times, upload_time = queries.times, queries.upload_time
    pred, unreleased = predicted_age_share(
        q_emb, model.item_embeddings, model.temperature, times, upload_time
    )
    return {
        "bins": age_bin_labels(),
        "observed": observed_age_share(times, queries.labels, upload_time),
        "predicted": {"model": pred},
        "not_yet_uploaded": {"model": unreleased},
        "uses_example_age": {"model": model.config.model.use_example_age},
    }


def ablation_view(
    ablation: Ablation,
    data: Path,
    model: ArtifactModel,
    queries: Queries,
    ks: Sequence[int],
    out: Path,
    work_dir: Path,
    example_age: dict[str, Any],
    progress: bool,
) -> dict[str, Any]:
    """Train and score the ablation variants; their Figure 4 curves go into ``example_age``."""
    result = run_ablation(
        ablation,
        data=data,
        split=queries.split,
        base=model.config,
        queries=queries.columns,
        examples_vocab=queries.vocab,
        catalog=(queries.items, queries.content),
        ks=ks,
        out=out,
        work_dir=work_dir,
        progress=progress,
        excluded=queries.excluded,
    )
    for name, share in result.pop("example_age_predicted", {}).items():
        example_age["predicted"][name] = share["predicted"]
        example_age["not_yet_uploaded"][name] = share["not_yet_uploaded"]
        example_age["uses_example_age"][name] = share["uses_example_age"]
    return result


# ---------------------------------------------------------------- the whole evaluation


def _iso(ts: int | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(ts)))


def describe_run(
    model: ArtifactModel,
    compare: ArtifactModel | None,
    data: Path,
    meta: DatasetMeta,
    queries: Queries,
) -> dict[str, Any]:
    """The head of ``metrics.json``: what was evaluated, on which data, split and queries."""
    split = queries.split
    return {
        "format": METRICS_FORMAT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "artifact": {
            "path": str(model.version_dir),
            "name": model.manifest.name,
            "version": model.manifest.version,
            "embedding_dim": int(model.item_embeddings.shape[1]),
            "temperature": model.temperature,
            "query_layers": list(model.config.model.query_layers),
            "candidate_layers": list(model.config.model.candidate_layers),
            "epochs": model.config.train.epochs,
        },
        "compare_to": None if compare is None else {"path": str(compare.version_dir)},
        "data": {"path": str(data), "name": meta.name, "fingerprint": meta.fingerprint},
        "split": {"name": split.name, "cutoff": split.cutoff, "cutoff_utc": _iso(split.cutoff)},
        "queries": {
            "evaluated": len(queries),
            "available": queries.available,
            "seed": queries.seed,
        },
        "catalog_size": len(queries.items),
        "exclude_watched": queries.exclusion,
    }


def _open_artifact(artifact: str | Path, data: Path) -> tuple[ArtifactModel, DatasetMeta]:
    """The artifact and the dataset's meta, checked to be the data it was trained on."""
    model = ArtifactModel(artifact)
    meta = read_meta(data)
    trained_on = model.manifest.data.get("fingerprint")
    if trained_on not in (None, meta.fingerprint):
        raise DatasetError(
            f"{data}: data fingerprint {meta.fingerprint[:12]} is not the one {model.label} was "
            f"trained on ({str(trained_on)[:12]}, from {model.manifest.data.get('path')}); "
            "evaluate it on the dataset it was trained on"
        )
    return model, meta


def _checked_arguments(
    ks: Sequence[int], max_queries: int | None, exclude_watched: str = "auto", ease_max: int = 0
) -> tuple[int, ...]:
    """The sorted distinct ``ks``; ValueError for any bad argument, before any work is done."""
    resolve_exclude_watched(exclude_watched, rewatches=False)
    if ease_max < 0:
        raise ValueError(f"ease_max_items must be >= 0, got {ease_max}")
    out = tuple(sorted({int(k) for k in ks}))
    if not out or out[0] <= 0:
        raise ValueError(f"ks must be positive integers, got {list(out)}")
    if max_queries is not None and max_queries <= 0:
        raise ValueError(f"max_queries must be positive, got {max_queries}")
    return out


def evaluate(
    artifact: str | Path,
    data: str | Path,
    split: str | None = None,
    out: str | Path = "evaluation",
    ks: Sequence[int] = (10, 50, 100),
    compare_to: str | Path | None = None,
    max_queries: int | None = 5000,
    progress: bool = True,
    tfrs_epochs: int = 3,
    seed: int | None = None,
    work_dir: str | Path | None = None,
    oracle: Oracle | None = None,
    ablation: Ablation | None = None,
    online: Mapping[str, Any] | None = None,
    exclude_watched: ExcludeWatched = "auto",
    ease_max_items: int = 8000,
) -> dict[str, Any]:
    """Evaluate ``artifact`` on ``data``, write the reports into ``out``, return the metrics.

    Writes ``metrics.json`` (the returned dict), ``report.md`` and ``report.html``.
    ``split`` defaults to the artifact's own (with its cut-off); ``max_queries`` evaluation
    examples are sampled with ``seed`` (default: the artifact's training seed, which gives
    the training job's own validation sample; ``max_queries=None``: all).
    ``compare_to`` is another artifact version: its neighbourhoods (and, when it reads the
    same features, its metrics) are compared. Examples are reused from the artifact's
    training work folder when they match, else built in ``work_dir`` (default ``out/work``).
    ``oracle``: the ceiling's true probabilities (left out when None or when it has none for
    ``data``); ``ablation``: the Figure 6 variants to train and score (left out when None);
    ``online``: an online evaluation's result (:mod:`recsys.evaluation.online`) to report
    beside the offline one. ``exclude_watched``: the watched-video rule of every ranking
    (:mod:`.exclusion`); ``ease_max_items``: the most watched videos EASE and item-kNN cover
    (0: left out).
    """
    started = time.perf_counter()
    ks = _checked_arguments(ks, max_queries, exclude_watched, ease_max_items)
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(work_dir) if work_dir else out / "work"
    timer = _Timer()
    model, meta = _open_artifact(artifact, data)
    eval_split, warnings = resolve_split(model, data, split)
    seed = model.config.train.seed if seed is None else seed
    with timer("examples"):
        queries = load_queries(
            model, data, eval_split, work, max_queries, seed, progress, exclude_watched
        )
    r = rank_all(
        model,
        meta.fingerprint,
        data,
        queries,
        ks,
        compare_to=compare_to,
        tfrs_epochs=tfrs_epochs,
        oracle=oracle,
        timer=timer,
        warnings=warnings,
        progress=progress,
        ease_max_items=ease_max_items,
    )
    with timer("metrics"):
        scored = score(r.ranked, queries, ks, r.baselines.counts, r.index)
    with timer("example_age"):
        example_age = example_age_view(model, queries, r.q_emb)
    with timer("embeddings"):
        emb_report, projection = embedding_view(model, r, queries)
    ablation_result = None
    if ablation is not None:
        with timer("ablation"):
            ablation_result = ablation_view(
                ablation, data, model, queries, ks, out / "ablation", work, example_age, progress
            )
    timer.seconds["total"] = time.perf_counter() - started
    result = {
        **describe_run(model, r.compare, data, meta, queries),
        "training_examples": r.baselines.training_examples,
        "ks": list(ks),
        **scored,
        "example_age": example_age,
        "embeddings": emb_report,
        "ablation": ablation_result,
        "baseline_settings": r.baselines.settings,
        "warnings": warnings,
        "seconds": timer.seconds,
        "online": None if online is None else dict(online),
    }
    return write_result(result, out, projection, started)


def write_result(
    result: dict[str, Any], out: Path, projection: E.Projection | None, started: float
) -> dict[str, Any]:
    """Round ``result``, write it as ``metrics.json`` and the reports beside it; return it."""
    result = rounded(result)
    (out / METRICS_FILE).write_text(json.dumps(result, indent=2) + "\n")
    md_path, html_path = write_reports(result, out, projection=projection)
    log.info(
        "wrote %s, %s and %s in %.1f s",
        out / METRICS_FILE,
        md_path,
        html_path,
        time.perf_counter() - started,
    )
    return result


def _overlap(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean share of the exact top-``k`` that the approximate top-``k`` also returns."""
    a, e = approx[:, :k], exact[:, :k]
    if not len(e):
        return float("nan")
    block = max(1, (1 << 24) // max(1, k * k))  # [block, k, k] comparisons at a time
    same = np.concatenate(
        [
            (a[s : s + block, :, None] == e[s : s + block, None, :]).any(axis=2).sum(axis=1)
            for s in range(0, len(e), block)
        ]
    )
    return float((same / e.shape[1]).mean())

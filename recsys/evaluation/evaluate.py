"""Offline evaluation of an artifact: model vs baselines vs oracle, segments, plots, report.

:func:`evaluate` loads an artifact version, rebuilds (or reuses) the evaluation examples of
the split it was trained on, embeds the queries with the query SavedModel's ``serve_ids``
signature, ranks every catalog video by exact search and with the served index, scores the
baselines and, for synthetic worlds, the oracle on the very same queries, and writes
``metrics.json``, ``report.md`` and a self-contained ``report.html`` into ``out``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys.config import Config
from recsys.dataset.io import DatasetError, read_meta
from recsys.dataset.splits import Split
from recsys.evaluation import metrics as M
from recsys.evaluation.artifact_model import ArtifactModel, model_features
from recsys.evaluation.baselines import (
    CoWatch,
    MostPopular,
    TFRSBasic,
    Trending,
    load_training_data,
    vocab_to_rows,
)
from recsys.evaluation.segments import (
    age_bin_labels,
    build_segments,
    observed_age_share,
    predicted_age_share,
    segment_metrics,
)
from recsys.examples.building import EXAMPLES_META, LABEL_TIME, VOCAB_FILE, ExampleSet, load_catalog
from recsys.features import contract as F
from recsys.features.vocab import Vocabularies
from recsys.index.top_k import top_k
from recsys.logs import Progress, step

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
METRICS_FORMAT = 1
DECIMALS = 4  # every metric in metrics.json and in the reports has this many decimals
METHOD_LABELS = {
    "model_exact": "Model (exact search)",
    "model_index": "Model (served index)",
    "compare_exact": "Compared model (exact search)",
    "most_popular": "Most popular",
    "trending": "Trending",
    "co_watch": "Item-to-item co-watch",
    "tfrs_basic": "TFRS basic (id-only two-tower)",
    "oracle": "Oracle (true probabilities)",
}


# ---------------------------------------------------------------- examples and queries


def read_examples(example_dir: str | Path, kind: str = "eval") -> dict[str, np.ndarray]:
    """Every column of an examples folder's ``kind`` shards: ``[n, ...]`` arrays."""
    example_dir = Path(example_dir)
    meta = ExampleSet.load(example_dir)
    shards = meta.eval_shards if kind == "eval" else meta.train_shards
    columns: dict[str, list[np.ndarray]] = {}
    for name in shards:
        tbl = pq.read_table(example_dir / name)
        for col_name in tbl.column_names:
            col = tbl.column(col_name).combine_chunks()
            if hasattr(col.type, "list_size"):
                arr = col.flatten().to_numpy().reshape(-1, col.type.list_size)
            else:
                arr = col.to_numpy()
            columns.setdefault(col_name, []).append(arr)
    return {k: np.concatenate(v) for k, v in columns.items()}


def _matching_examples(
    folders: Sequence[Path], fingerprint: str, split: Split, config: Config
) -> Path | None:
    """An existing examples folder built from this data, split, feature config and seed."""
    want_features = asdict(config.features)
    for root in folders:
        if not root.is_dir():
            continue
        for meta_path in sorted(root.glob(f"examples-*/{EXAMPLES_META}")):
            try:
                found = ExampleSet.load(meta_path.parent)
            except (DatasetError, TypeError, ValueError, OSError):
                continue
            if (
                found.data_fingerprint == fingerprint
                and found.split == split.name
                and found.cutoff == split.cutoff
                and found.feature_config == want_features
                and found.seed == config.train.seed
            ):
                return meta_path.parent
    return None


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
    found = _matching_examples(folders, fingerprint, split, model.config)
    if found is not None:
        log.info("reusing examples in %s", found)
        return found
    from recsys_training.job import prepare_examples

    work_dir.mkdir(parents=True, exist_ok=True)
    path, _ = prepare_examples(data, work_dir, split, model.config, progress=progress)
    return path


# ---------------------------------------------------------------- oracle


def oracle_ranking(
    data: Path,
    queries: Mapping[str, np.ndarray],
    k: int,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray | None:
    """The oracle's top-``k`` ``[n, k]`` for each query, or None when ``data`` is not synthetic."""
    from recsys.dataset.validation import read_dataset
    from recsys_data.oracle import load_world, oracle_probabilities

    try:
        world = load_world(data)
    except DatasetError as exc:
        log.info("no oracle: %s", exc)
        return None
    dataset = read_dataset(data, validate=False)
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
            f"{data}: {int(rows.isna().sum())} evaluation examples match no watch event; "
            "were the examples built from this dataset?"
        )
    rows_arr = rows.to_numpy(np.int64)
    block = max(1, (1 << 24) // max(1, world.num_items))
    out = np.empty((len(rows_arr), min(k, world.num_items)), dtype=np.int64)
    for start in range(0, len(rows_arr), block):
        probs = oracle_probabilities(world, dataset, rows_arr[start : start + block])
        out[start : start + block] = top_k(probs, k)[0]
        if progress:
            progress(min(start + block, len(rows_arr)), len(rows_arr))
    return out


# ---------------------------------------------------------------- the whole evaluation


def _rounded(value: Any) -> Any:
    """Floats rounded to DECIMALS places, recursively (ints, strings and None unchanged)."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, DECIMALS)
    if isinstance(value, np.floating):
        return _rounded(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_rounded(v) for v in value]
    return value


def _iso(ts: int | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(ts)))


@dataclass
class _Timer:
    seconds: dict[str, float]

    def __call__(self, name: str, started: float) -> None:
        self.seconds[name] = time.perf_counter() - started


def evaluate(
    artifact: str | Path,
    data: str | Path,
    split: str | None = None,
    out: str | Path = "evaluation",
    ks: Sequence[int] = (10, 50, 100),
    ablation: bool = False,
    compare_to: str | Path | None = None,
    max_queries: int | None = 5000,
    progress: bool = True,
    ablation_epochs: int = 2,
    ablation_variants: Sequence[str] | None = None,
    ablation_batch_size: int | None = None,
    tfrs_epochs: int = 3,
    seed: int | None = None,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``artifact`` on ``data``, write the reports into ``out``, return the metrics.

    Writes ``metrics.json`` (the returned dict), ``report.md`` and ``report.html``.
    ``split`` defaults to the artifact's own (with its cut-off); ``max_queries`` evaluation
    examples are sampled with ``seed`` (default: the artifact's training seed, which gives
    the training job's own validation sample; ``max_queries=None``: all). ``ablation``
    trains the Figure 6 variants with ``ablation_epochs`` epochs each
    (``ablation_variants`` picks some by name).
    ``compare_to`` is another artifact version: its neighbourhoods (and, when it reads the
    same features, its metrics) are compared. Examples are reused from the artifact's
    training work folder when they match, else built in ``work_dir`` (default ``out/work``).
    """
    started_all = time.perf_counter()
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] <= 0:
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    if max_queries is not None and max_queries <= 0:
        raise ValueError(f"max_queries must be positive, got {max_queries}")
    k_max = ks[-1]
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(work_dir) if work_dir else out / "work"
    timer = _Timer({})
    warnings: list[str] = []

    model = ArtifactModel(artifact)
    meta = read_meta(data)
    if model.manifest.data.get("fingerprint") not in (None, meta.fingerprint):
        raise DatasetError(
            f"{data}: data fingerprint {meta.fingerprint[:12]} is not the one {model.label} was "
            f"trained on ({str(model.manifest.data.get('fingerprint'))[:12]}, from "
            f"{model.manifest.data.get('path')}); evaluate it on the dataset it was trained on"
        )
    eval_split, split_warnings = resolve_split(model, data, split)
    if seed is None:
        seed = model.config.train.seed
    warnings += split_warnings

    t = time.perf_counter()
    with step(f"preparing {eval_split.name}-split evaluation examples"):
        examples_dir = prepare_evaluation_examples(model, data, eval_split, work, progress)
    examples_vocab = Vocabularies.load(examples_dir / VOCAB_FILE)
    users_df, items_df, item_content = load_catalog(data)
    if not np.array_equal(
        items_df["item_id"].astype(str).to_numpy(), model.items["item_id"].astype(str).to_numpy()
    ):
        raise DatasetError(
            f"{model.version_dir / 'items.parquet'} does not list the videos of "
            f"{data / 'items.parquet'} in the same order; was the artifact trained on {data}?"
        )
    num_items = len(items_df)
    upload_time = items_df["upload_time"].to_numpy(np.int64)
    item_vocab_ids = examples_vocab.items.lookup(items_df["item_id"])
    rows_of_vocab = vocab_to_rows(item_vocab_ids, len(examples_vocab.items))

    all_queries = read_examples(examples_dir, "eval")
    available = len(all_queries.get(F.ITEM_INDEX, []))
    if available == 0:
        raise ValueError(f"the {eval_split.name} split of {data} holds out no watches to evaluate")
    if max_queries is not None and available > max_queries:
        keep = np.sort(np.random.default_rng(seed).choice(available, max_queries, replace=False))
        queries = {k: v[keep] for k, v in all_queries.items()}
    else:
        queries = all_queries
    del all_queries
    n = len(queries[F.ITEM_INDEX])
    labels = queries[F.ITEM_INDEX].astype(np.int64)
    timer("examples", t)
    log.info("evaluating on %d of %d held-out watches (%s split)", n, available, eval_split.name)

    ranked: dict[str, np.ndarray] = {}
    # ---- the model: exact search and the served index
    t = time.perf_counter()
    with step(f"embedding {n} queries with {model.label}"):
        q_emb = model.query_embeddings(
            model_features(queries, examples_vocab, model),
            progress=Progress("query embeddings", "queries", enabled=progress),
        )
    ranked["model_exact"] = model.rank_exact(
        q_emb, queries[LABEL_TIME].astype(np.int64), items_df, item_content, k_max
    )
    timer("model_exact", t)
    t = time.perf_counter()
    served = model.rank_served(q_emb, k_max)
    index_info: dict[str, Any] = {"kind": None}
    if served is None:
        warnings.append(f"{model.label} has no index: served-index numbers are left out")
    else:
        ranked["model_index"], kind = served
        index_info = {
            "kind": kind,
            "config": model.manifest.index.get("config"),
            "recall_vs_exact": {
                str(k): _overlap(ranked["model_index"], ranked["model_exact"], k) for k in ks
            },
        }
    timer("model_index", t)

    # ---- compared model
    compare: ArtifactModel | None = None
    if compare_to is not None:
        compare = ArtifactModel(compare_to)
        if compare.manifest.data.get("fingerprint") != meta.fingerprint:
            warnings.append(f"{compare.label} was trained on other data: its metrics are left out")
        elif asdict(compare.config.features) != asdict(model.config.features):
            warnings.append(f"{compare.label} uses other feature windows: its metrics are left out")
        else:
            if compare.manifest.data.get("split") != eval_split.name or (
                compare.manifest.data.get("cutoff") != eval_split.cutoff
            ):
                warnings.append(
                    f"{compare.label} was trained on another split: some evaluation watches "
                    "may be in its training data"
                )
            t = time.perf_counter()
            c_emb = compare.query_embeddings(model_features(queries, examples_vocab, compare))
            ranked["compare_exact"] = compare.rank_exact(
                c_emb, queries[LABEL_TIME].astype(np.int64), items_df, item_content, k_max
            )
            timer("compare_exact", t)

    # ---- baselines
    t = time.perf_counter()
    with step("reading the training examples for the baselines"):
        train = load_training_data(examples_dir, rows_of_vocab, num_items, len(users_df))
    timer("baseline_data", t)
    baselines: dict[str, Any] = {}
    t = time.perf_counter()
    baselines["most_popular"] = MostPopular(train)
    baselines["trending"] = Trending(train, eval_split.cutoff)
    baselines["co_watch"] = CoWatch(train, rows_of_vocab)
    for name, baseline in baselines.items():
        ranked[name] = baseline.rank(queries, k_max)
    timer("simple_baselines", t)
    t = time.perf_counter()
    with step(f"training the TFRS basic model ({tfrs_epochs} epochs)"):
        # The tutorial's towers, loss and optimizer; the model's own batch size, since the
        # in-batch softmax costs batch^2 per step and the tutorial's 8192 was for 80k ratings.
        tfrs_basic = TFRSBasic(
            epochs=tfrs_epochs, batch_size=model.config.train.batch_size, seed=seed
        ).fit(train, Progress("TFRS basic", "epochs", enabled=progress))
    ranked["tfrs_basic"] = tfrs_basic.rank(queries, k_max)
    timer("tfrs_basic", t)

    # ---- oracle
    t = time.perf_counter()
    with step("oracle ceiling"):
        oracle = oracle_ranking(
            data, queries, k_max, Progress("oracle", "queries", enabled=progress)
        )
    if oracle is not None:
        ranked["oracle"] = oracle
    timer("oracle", t)

    # ---- metrics
    t = time.perf_counter()
    percentiles = M.popularity_percentiles(baselines["most_popular"].counts)
    methods = {
        name: M.summarize(r, labels, ks, num_items, percentiles) for name, r in ranked.items()
    }
    per_query = {name: M.per_query_metrics(r, labels, ks) for name, r in ranked.items()}
    true_pct = float(percentiles[labels].mean())
    if served is not None:
        # From the rounded recalls, so that the report's three columns add up.
        exact_recall: dict[str, float] = methods["model_exact"]["recall"]  # type: ignore[assignment]
        served_recall: dict[str, float] = methods["model_index"]["recall"]  # type: ignore[assignment]
        index_info["recall_cost"] = {
            str(k): round(exact_recall[str(k)], DECIMALS) - round(served_recall[str(k)], DECIMALS)
            for k in ks
        }
    groups = build_segments(queries, users_df, upload_time, item_vocab_ids)
    segments = segment_metrics(groups, per_query, ks)
    timer("metrics", t)

    # ---- Figure 4 for the model
    t = time.perf_counter()
    times_q = queries[LABEL_TIME].astype(np.int64)
    pred, unreleased = predicted_age_share(
        q_emb, model.item_embeddings, model.temperature, times_q, upload_time
    )
    example_age: dict[str, Any] = {
        "bins": age_bin_labels(),
        "observed": observed_age_share(times_q, labels, upload_time),
        "predicted": {"model": pred},
        "not_yet_uploaded": {"model": unreleased},
        "uses_example_age": {"model": model.config.model.use_example_age},
    }
    timer("example_age", t)

    # ---- embeddings
    from recsys.evaluation import embeddings as E

    t = time.perf_counter()
    emb_report, projection = E.embedding_report(
        model.item_embeddings,
        items_df,
        counts=baselines["most_popular"].counts,
        compare=None if compare is None else (compare.item_embeddings, compare.items),
        seed=seed,
    )
    timer("embeddings", t)

    # ---- ablation
    ablation_result: dict[str, Any] | None = None
    if ablation:
        from recsys.evaluation.ablation import run_ablation

        t = time.perf_counter()
        ablation_result = run_ablation(
            data=data,
            split=eval_split,
            base=model.config,
            queries=queries,
            examples_vocab=examples_vocab,
            upload_time=upload_time,
            ks=ks,
            out=out / "ablation",
            work_dir=work,
            epochs=ablation_epochs,
            variants=ablation_variants,
            batch_size=ablation_batch_size,
            progress=progress,
        )
        for name, share in ablation_result.pop("example_age_predicted", {}).items():
            example_age["predicted"][name] = share["predicted"]
            example_age["not_yet_uploaded"][name] = share["not_yet_uploaded"]
            example_age["uses_example_age"][name] = share["uses_example_age"]
        timer("ablation", t)

    timer("total", started_all)
    result: dict[str, Any] = {
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
        "split": {
            "name": eval_split.name,
            "cutoff": eval_split.cutoff,
            "cutoff_utc": _iso(eval_split.cutoff),
        },
        "queries": {"evaluated": n, "available": available, "seed": seed},
        "catalog_size": num_items,
        "training_examples": len(train.item_rows),
        "ks": list(ks),
        "methods": methods,
        "method_labels": {name: METHOD_LABELS[name] for name in methods},
        "true_next_watch_popularity_percentile": true_pct,
        "index": index_info,
        "segments": segments,
        "example_age": example_age,
        "embeddings": emb_report,
        "ablation": ablation_result,
        "baseline_settings": {
            "trending": {"window_days": 7.0, "half_life_days": 1.0},
            "co_watch": {"recent_watches": 5},
            "tfrs_basic": {
                "embedding_dim": tfrs_basic.embedding_dim,
                "epochs": tfrs_basic.epochs,
                "batch_size": tfrs_basic.batch_size,
                "learning_rate": tfrs_basic.learning_rate,
            },
        },
        "warnings": warnings,
        "seconds": timer.seconds,
    }
    result = _rounded(result)
    (out / METRICS_FILE).write_text(json.dumps(result, indent=2) + "\n")
    from recsys.evaluation.report import write_reports

    md_path, html_path = write_reports(result, out, projection=projection)
    log.info(
        "wrote %s, %s and %s in %.1f s",
        out / METRICS_FILE,
        md_path,
        html_path,
        time.perf_counter() - started_all,
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

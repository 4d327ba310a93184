"""Offline evaluation of an artifact: model vs baselines vs oracle, segments, plots, report.

:func:`evaluate` loads an artifact version, rebuilds (or reuses) the evaluation examples of
the split it was trained on, embeds the queries with the query SavedModel's ``serve_ids``
signature, ranks every catalog video by exact search and with the served index, scores the
baselines and, for synthetic worlds, the oracle on the very same queries, and writes
``metrics.json``, ``report.md`` and a self-contained ``report.html`` into ``out``.
"""

from __future__ import annotations

import itertools
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

from recsys import features as F
from recsys.artifacts import read_manifest, resolve_version
from recsys.config import Config
from recsys.dataset import DatasetError, read_meta
from recsys.evaluation import metrics as M
from recsys.evaluation.baselines import (
    CoWatch,
    MostPopular,
    TFRSBasic,
    Trending,
    load_training_data,
    vocab_to_rows,
)
from recsys.examples import EXAMPLES_META, LABEL_TIME, VOCAB_FILE, ExampleSet, load_catalog
from recsys.logs import Progress, step
from recsys.splits import Split
from recsys.vocab import Vocabularies, Vocabulary

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
METRICS_FORMAT = 1
DECIMALS = 4  # every metric in metrics.json and in the reports has this many decimals
DAY = 86_400
# Video age at watch time (days since upload), the x axis of the paper's Figure 4.
AGE_EDGES = (0.0, 1.0, 2.0, 4.0, 7.0, 14.0, 30.0, 60.0, 120.0, 365.0, math.inf)
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


# ---------------------------------------------------------------- the artifact's model


class ArtifactModel:
    """An exported model version: query SavedModel, item embeddings, vocabularies, index."""

    def __init__(self, path: str | Path) -> None:
        self.version_dir = resolve_version(path)
        self.manifest = read_manifest(self.version_dir)
        raw = json.loads((self.version_dir / "config.json").read_text())
        self.config = Config.from_dict(raw["config"], str(self.version_dir / "config.json"))
        self.reference_time = int(raw["reference_time"])
        self.content_dim: int | None = raw.get("content_dim")  # None: no content input
        self.temperature = float(self.config.model.temperature)
        self.items = pq.read_table(self.version_dir / "items.parquet").to_pandas()
        self.item_embeddings = np.load(
            self.version_dir / "item_embeddings.npy", allow_pickle=False
        ).astype(np.float32)
        self.vocabularies = Vocabularies.load(self.version_dir / "vocabularies.json")
        self._serve_ids: Any = None

    @property
    def label(self) -> str:
        """``name/version`` of the artifact."""
        return f"{self.manifest.name}/{self.manifest.version}"

    def _signature(self) -> Any:
        if self._serve_ids is None:
            import tensorflow as tf

            loaded = tf.saved_model.load(str(self.version_dir / "query_model"))
            self._loaded = loaded  # keep the module alive while the signature is used
            self._serve_ids = loaded.signatures["serve_ids"]
        return self._serve_ids

    def input_specs(self) -> dict[str, Any]:
        """``serve_ids``' input ``tf.TensorSpec`` by feature name."""
        return dict(self._signature().structured_input_signature[1])

    def query_embeddings(
        self,
        features: Mapping[str, np.ndarray],
        batch_size: int = 4096,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Query embeddings ``[n, d]`` from id features ``[n, ...]`` through ``serve_ids``."""
        import tensorflow as tf

        fn = self._signature()
        specs = self.input_specs()
        n = len(features[F.HISTORY])
        chunks = []
        for start in range(0, n, batch_size):
            args = {
                name: tf.constant(
                    np.asarray(features[name][start : start + batch_size]), spec.dtype
                )
                for name, spec in specs.items()
            }
            chunks.append(fn(**args)["query_embedding"].numpy())
            if progress:
                progress(min(start + batch_size, n), n)
        if not chunks:
            return np.zeros((0, self.item_embeddings.shape[1]), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32)

    def rank_exact(
        self,
        query_embeddings: np.ndarray,
        query_times: np.ndarray,
        items: pd.DataFrame,
        content: np.ndarray | None,
        k: int,
    ) -> np.ndarray:
        """Exact top-``k`` catalog rows ``[n, k]``, the catalog as it stood each query's day.

        Every video is embedded by the candidate SavedModel with its upload age at the start
        of the query's UTC day, and videos uploaded after that are left out
        (:func:`recsys.ranking.rank_by_day`): what an index rebuilt daily would serve, and
        the training job's validation protocol. (``item_embeddings.npy`` holds the catalog
        at the training cut-off only: it would give every later upload age 0 and rank
        videos not yet uploaded.)
        """
        from recsys.new_items import CandidateEmbedder
        from recsys.ranking import rank_by_day

        strings = {
            name: items[name].fillna("").astype(str).to_numpy(dtype=object)
            for name in ("item_id", "channel", "category", "title")
        }
        upload = items["upload_time"].to_numpy(np.int64)
        wants_content = self.content_dim is not None and content is not None
        embed = CandidateEmbedder(
            self.version_dir / "candidate_model",
            strings,
            upload,
            content if wants_content else None,
            batch_size=8192,
        )
        return rank_by_day(query_embeddings, query_times, embed, upload, k)

    def rank_served(self, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, str] | None:
        """Top-``k`` rows ``[n, k]`` from the served index, and its kind; None without one."""
        from recsys.index import load_index

        index_dir = self.version_dir / "index"
        if not (index_dir / "index.json").is_file():
            return None
        index = load_index(index_dir, expected_dim=self.item_embeddings.shape[1])
        ids, _ = index.search_batch(query_embeddings, k)
        rows = pd.Index(self.items["item_id"].astype(str)).get_indexer(
            np.asarray(ids, dtype=object).reshape(-1)
        )
        return rows.reshape(ids.shape).astype(np.int64), str(index.config.kind)


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


def _vocab_map(src: Vocabulary, dst: Vocabulary) -> np.ndarray:
    """``[len(src)]`` ids in ``dst`` of every id of ``src`` (PAD and OOV map to themselves)."""
    mapped = dst.lookup(src.values) if src.values else np.zeros(0, np.int32)
    return np.concatenate([[F.PAD, F.OOV], mapped]).astype(np.int32)


def remap_query_ids(
    features: Mapping[str, np.ndarray], src: Vocabularies, dst: Vocabularies
) -> dict[str, np.ndarray]:
    """Query id features encoded with ``src`` re-encoded with ``dst`` (unknown history dropped).

    Used when the examples' vocabularies are not the model's (another split or version).
    """
    out = dict(features)
    for name, attr in (
        (F.HISTORY, "items"),
        (F.SEARCH_TOKENS, "tokens"),
        (F.LAST_SEARCH_TOKENS, "tokens"),
        (F.COUNTRY, "countries"),
        (F.REGION, "regions"),
        (F.GENDER, "genders"),
    ):
        table = _vocab_map(getattr(src, attr), getattr(dst, attr))
        out[name] = table[np.asarray(features[name], dtype=np.int64)]
    # History keeps known videos only, packed to the front (as the serving path does).
    hist = out[F.HISTORY]
    keep = hist > F.OOV
    order = np.argsort(~keep, axis=1, kind="stable")
    packed = np.take_along_axis(hist, order, axis=1)
    packed[~np.take_along_axis(keep, order, axis=1)] = F.PAD
    out[F.HISTORY] = packed.astype(np.int32)
    return out


def _same_vocabularies(a: Vocabularies, b: Vocabularies) -> bool:
    return all(
        getattr(a, name).values == getattr(b, name).values
        for name in ("items", "tokens", "countries", "regions", "genders")
    )


def model_features(
    queries: Mapping[str, np.ndarray], examples_vocab: Vocabularies, model: ArtifactModel
) -> dict[str, np.ndarray]:
    """The query features of ``queries`` as ``model`` reads them."""
    feats = {name: queries[name] for name in F.QUERY_FEATURES}
    if _same_vocabularies(examples_vocab, model.vocabularies):
        return feats
    log.info("re-encoding query ids with the vocabularies of %s", model.label)
    return remap_query_ids(feats, examples_vocab, model.vocabularies)


# ---------------------------------------------------------------- oracle


def top_k_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` columns ``[n, k]`` of ``scores: [n, N]``, largest first (ties: lower column)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


def oracle_ranking(
    data: Path,
    queries: Mapping[str, np.ndarray],
    k: int,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray | None:
    """The oracle's top-``k`` ``[n, k]`` for each query, or None when ``data`` is not synthetic."""
    from recsys.dataset import read_dataset
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
        out[start : start + block] = top_k_scores(probs, k)
        if progress:
            progress(min(start + block, len(rows_arr)), len(rows_arr))
    return out


# ---------------------------------------------------------------- Figure 4: example age


def age_bin_labels() -> list[str]:
    """Labels of the video-age bins (days since upload)."""
    labels = []
    for lo, hi in itertools.pairwise(AGE_EDGES):
        labels.append(f"{lo:g}+" if math.isinf(hi) else f"{lo:g}-{hi:g}")
    return labels


def _age_bins(age_days: np.ndarray) -> np.ndarray:
    """Bin index of each age; -1 for videos not uploaded yet."""
    edges = np.asarray(AGE_EDGES[1:-1])
    idx = np.searchsorted(edges, age_days, side="right")
    return np.where(age_days < 0, -1, idx)


def observed_age_share(
    query_times: np.ndarray, label_rows: np.ndarray, upload_time: np.ndarray
) -> np.ndarray:
    """Share of the true next watches in each video-age bin ``[num_bins]``."""
    age = (np.asarray(query_times) - upload_time[label_rows]) / DAY
    bins = _age_bins(np.maximum(age, 0.0))
    return np.bincount(bins, minlength=len(AGE_EDGES) - 1) / max(len(bins), 1)


def predicted_age_share(
    query_embeddings: np.ndarray,
    item_embeddings: np.ndarray,
    temperature: float,
    query_times: np.ndarray,
    upload_time: np.ndarray,
) -> tuple[np.ndarray, float]:
    """Mean softmax mass per video-age bin ``[num_bins]`` and the mass on unreleased videos.

    Ages are taken at each query's time; "unreleased" videos were uploaded after it.
    ``query_embeddings: [n, d]``, ``item_embeddings: [N, d]``: the logit is their dot
    product over ``temperature``, the model's training temperature.
    """
    num_bins = len(AGE_EDGES) - 1
    n, num_items = len(query_embeddings), len(item_embeddings)
    totals = np.zeros(num_bins + 1)
    block = max(1, (1 << 22) // max(1, num_items))
    for start in range(0, n, block):
        q = query_embeddings[start : start + block]
        logits = (q @ item_embeddings.T).astype(np.float64) / temperature
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        age = (query_times[start : start + block, None] - upload_time[None, :]) / DAY
        bins = _age_bins(age) + 1  # 0: not uploaded yet
        totals += np.bincount(bins.reshape(-1), weights=p.reshape(-1), minlength=num_bins + 1)
    totals /= max(n, 1)
    return totals[1:], float(totals[0])


# ---------------------------------------------------------------- segments


def _history_length_segments(queries: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    count = (np.asarray(queries[F.HISTORY]) != F.PAD).sum(axis=1)
    return [
        ("0-2 watches (new users)", count <= 2),
        ("3-9 watches", (count >= 3) & (count <= 9)),
        ("10-49 watches", (count >= 10) & (count <= 49)),
        ("50+ watches (full window)", count >= 50),
    ]


def _video_age_segments(age_days: np.ndarray) -> list[tuple[str, np.ndarray]]:
    return [
        ("< 2 days (fresh uploads)", age_days < 2),
        ("2-7 days", (age_days >= 2) & (age_days < 7)),
        ("7-30 days", (age_days >= 7) & (age_days < 30)),
        ("30-365 days", (age_days >= 30) & (age_days < 365)),
        ("> 1 year", age_days >= 365),
    ]


def _categorical_segments(
    values: pd.Series, top: int | None = None, missing: str = "unknown"
) -> list[tuple[str, np.ndarray]]:
    filled = values.astype(object).where(values.notna() & (values.astype(str) != ""), missing)
    vals = filled.astype(str).to_numpy()
    counts = pd.Series(vals).value_counts()
    names = counts.index.tolist()
    out = []
    shown = names if top is None else names[:top]
    for name in shown:
        out.append((str(name), vals == name))
    if top is not None and len(names) > top:
        out.append(("other", ~np.isin(vals, shown)))
    return out


def _age_band_segments(ages: pd.Series) -> list[tuple[str, np.ndarray]]:
    age = pd.to_numeric(ages, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    edges = [(0, 18, "under 18"), (18, 25, "18-24"), (25, 35, "25-34"), (35, 45, "35-44")]
    edges += [(45, 55, "45-54"), (55, 65, "55-64"), (65, 200, "65+")]
    out = [(label, (age >= lo) & (age < hi)) for lo, hi, label in edges]
    out.append(("unknown", np.isnan(age)))
    return out


def build_segments(
    queries: Mapping[str, np.ndarray],
    users: pd.DataFrame,
    upload_time: np.ndarray,
    item_vocab_ids: np.ndarray,
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Segment masks ``[n]`` bool by group: history length, video age, demographics."""
    user_rows = np.asarray(queries[F.USER_INDEX], np.int64)
    labels = np.asarray(queries[F.ITEM_INDEX], np.int64)
    age_days = (np.asarray(queries[LABEL_TIME]) - upload_time[labels]) / DAY
    seen = item_vocab_ids[labels] > F.OOV
    u = users.iloc[user_rows].reset_index(drop=True)
    groups: dict[str, list[tuple[str, np.ndarray]]] = {
        "history_length": _history_length_segments(queries),
        "video_age": _video_age_segments(age_days),
        "video_in_training": [
            ("seen in training", seen),
            ("not in training (cold start)", ~seen),
        ],
    }
    if "region" in u.columns:
        groups["region"] = _categorical_segments(u["region"])
    groups["country"] = _categorical_segments(u["country"], top=10)
    groups["age_band"] = _age_band_segments(u["age"])
    groups["gender"] = _categorical_segments(u["gender"])
    return groups


SEGMENT_TITLES = {
    "history_length": "Users by history length (watches in the model's context window)",
    "video_age": "Videos by age at watch time",
    "video_in_training": "Videos seen in training vs new (cold start)",
    "region": "Users by region",
    "country": "Users by country (10 largest)",
    "age_band": "Users by age band",
    "gender": "Users by gender",
}


def segment_metrics(
    groups: Mapping[str, list[tuple[str, np.ndarray]]],
    per_query: Mapping[str, Mapping[str, np.ndarray]],
    ks: Sequence[int],
) -> dict[str, list[dict[str, Any]]]:
    """Recall@K of every method within every segment (empty segments left out)."""
    out: dict[str, list[dict[str, Any]]] = {}
    n = len(next(iter(next(iter(per_query.values())).values())))
    for group, segments in groups.items():
        rows = []
        for label, mask in segments:
            size = int(mask.sum())
            if not size:
                continue
            rows.append(
                {
                    "segment": label,
                    "queries": size,
                    "share": size / max(n, 1),
                    "recall": {
                        method: {str(k): float(values[f"recall@{k}"][mask].mean()) for k in ks}
                        for method, values in per_query.items()
                    },
                }
            )
        out[group] = rows
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

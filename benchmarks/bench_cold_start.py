"""Cold start: videos uploaded after the training cut-off, served from the export or added live.

On an artifact whose export holds the whole catalog (the demo's does), ranks `recsys
evaluate`'s queries (the same sample) three ways, each query at its own time:
  exact     exact search over the catalog as it stood at the start of the query's day;
  export    the served path over the export (`ArtifactModel.rank_served`);
  live      the served path over an index of the videos uploaded by the cut-off only, the
            later ones added through `LiveVideos.add` (the AddVideos path: checked, embedded
            by the candidate SavedModel, logged to a live catalog in a temporary folder) in
            batches of --batch, timed (videos/s).
Prints R@100 per segment of `recsys evaluate`'s report (video age at watch time, and seen
in training vs not: a video nobody watched before the cut-off has only its content
features) and the live / export ratio.

    .venv/bin/python benchmarks/bench_cold_start.py --artifact artifacts/demo \
        --data data/generated/demo
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from recsys.artifact.layout import CANDIDATE_MODEL_DIR, INDEX_DIR, ITEMS_FILE
from recsys.evaluation import evaluate as ev
from recsys.evaluation.artifact_model import ArtifactModel
from recsys.evaluation.segments import build_segments
from recsys.index.base import IndexConfig
from recsys.index.registry import build_index, load_index
from recsys.inference.candidate_embedder import STRING_FEATURES, CandidateEmbedder
from recsys.inference.freshness import AgedCatalog, age_independent, read_freshness_term
from recsys.inference.live_videos import LiveVideos
from recsys.inference.retrieval import Retriever
from recsys.inference.served_catalog import served_catalog
from recsys.live.catalog import LiveCatalogStore, LiveVideo, catalog_path

K = 100


def live_retriever(
    model: ArtifactModel, content: np.ndarray | None, store_dir: Path, batch: int
) -> tuple[Retriever, LiveVideos, list[float]]:
    """A Retriever over the videos uploaded by the cut-off, the later ones added live."""
    items = model.items.reset_index(drop=True)
    upload = items["upload_time"].to_numpy(np.int64)
    old = np.flatnonzero(upload <= model.reference_time)
    new = np.flatnonzero(upload > model.reference_time)
    exported = load_index(model.version_dir / INDEX_DIR)
    config = IndexConfig.from_dict(exported.config.to_dict()) if exported.kind == "scann" else None
    ids = items["item_id"].astype(str).to_numpy()
    embeddings = model.item_embeddings[old]
    index = build_index(ids[old].tolist(), embeddings, config)
    table = pa.Table.from_pandas(items.iloc[old], preserve_index=False)
    catalog = served_catalog(table, model.version_dir / ITEMS_FILE)
    term = read_freshness_term(
        model.version_dir / CANDIDATE_MODEL_DIR, model.content_dim, model.reference_time
    )
    aged = AgedCatalog(term, age_independent(embeddings), upload[old])
    retriever = Retriever(index, catalog, embeddings, aged=aged)

    def load_embedder() -> CandidateEmbedder:
        none = np.zeros(0, dtype=object)
        empty = None if model.content_dim is None else np.zeros((0, model.content_dim))
        return CandidateEmbedder(
            model.version_dir / CANDIDATE_MODEL_DIR,
            dict.fromkeys(STRING_FEATURES, none),
            np.zeros(0, np.int64),
            empty,
        )

    live = LiveVideos(
        LiveCatalogStore(catalog_path(store_dir)),
        model.label,
        catalog,
        load_embedder,
        model.content_dim,
        model.reference_time,
        True,
        embeddings.shape[1],
        retriever.serve_live,
    )
    videos = [
        LiveVideo(
            ids[row],
            str(items.at[row, "title"] or ""),
            str(items.at[row, "category"] or ""),
            str(items.at[row, "channel"] or ""),
            int(upload[row]),
            0.0,
            None if content is None else content[row],
        )
        for row in new
    ]
    live.embed(videos[:1])  # load the model before timing
    seconds = []
    for start in range(0, len(videos), batch):
        began = time.perf_counter()
        live.add(videos[start : start + batch])
        seconds.append((time.perf_counter() - began) / len(videos[start : start + batch]))
    return retriever, live, seconds


def main() -> int:
    """Rank the queries three ways and print R@100 by segment."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500, help="videos per AddVideos call")
    args = parser.parse_args()
    model, _ = ev._open_artifact(args.artifact, args.data)
    split, _ = ev.resolve_split(model, args.data, None)
    with tempfile.TemporaryDirectory() as work:
        queries = ev.load_queries(
            model, args.data, split, Path(work), args.queries, model.config.train.seed, False
        )
    q_emb, exact = ev.rank_model_exact(model, queries, K, False)
    served = model.rank_served(q_emb, queries.times, K)
    assert served is not None, "the artifact has no index"
    with tempfile.TemporaryDirectory() as store:
        retriever, live, seconds = live_retriever(model, queries.content, Path(store), args.batch)
        ids = model.items["item_id"].astype(str).to_numpy()
        row_of_id = {item_id: row for row, item_id in enumerate(ids)}
        none = np.empty(0, dtype=np.int64)
        live_ranked = np.full((len(queries), K), -1, dtype=np.int64)
        for i, (query, moment) in enumerate(zip(q_emb, queries.times, strict=True)):
            rows, logits, _ = retriever.candidates(query, K, none, None, int(moment))
            rows, _ = retriever.rank(rows, logits, none, None)
            live_ids = live.catalog.ids[rows[:K]]
            live_ranked[i, : len(live_ids)] = [row_of_id[str(x)] for x in live_ids]
    rate = 1.0 / statistics.median(seconds)
    print(
        f"{len(seconds)} AddVideos batches of {args.batch}: median {rate:,.0f} videos/s "
        f"(embedded, logged, served), {int(live.delta.active.sum())} videos added live\n"
    )
    hit = {
        "exact": (exact[:, :K] == queries.labels[:, None]).any(axis=1),
        "export": (served[0][:, :K] == queries.labels[:, None]).any(axis=1),
        "live": (live_ranked == queries.labels[:, None]).any(axis=1),
    }
    segments = build_segments(
        queries.columns, queries.users, queries.upload_time, queries.item_vocab_ids
    )
    new = queries.upload_time[queries.labels] > model.reference_time
    rows = [("all queries", np.ones(len(queries), bool))]
    rows.append(("true next watch uploaded after the cut-off", new))
    rows += segments["video_age"] + segments["video_in_training"]
    print("| segment | queries | R@100 exact | R@100 export | R@100 live | live / export |")
    print("|---|---|---|---|---|---|")
    for name, mask in rows:
        if not mask.any():
            continue
        r = {key: float(h[mask].mean()) for key, h in hit.items()}
        ratio = r["live"] / r["export"] if r["export"] else float("nan")
        print(
            f"| {name} | {int(mask.sum())} | {r['exact']:.4f} | {r['export']:.4f} | "
            f"{r['live']:.4f} | {ratio:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

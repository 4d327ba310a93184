"""Baselines the model must beat: most-popular, trending, item-to-item co-watch, TFRS basic,
EASE and item-kNN.

All of them learn from the same training examples as the model (the example shards'
``item_index``, ``user_index``, ``timestamp`` and the last watch of ``history``) and rank the
whole catalog for evaluation queries: ``rank(queries, k) -> [n, k]`` catalog rows, best first.
``queries`` is a dict of evaluation-example columns (``[n, ...]`` arrays named as in
:mod:`recsys.features.contract`, plus ``timestamp`` and ``user_index``). EASE and item-kNN,
the item-item models, read each query's user's earlier watches instead
(``rank_watched(watched, k)``, :class:`~recsys.evaluation.exclusion.Watched`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys.evaluation.exclusion import Watched
from recsys.examples.building import LABEL_TIME, ExampleSet
from recsys.features import contract as F
from recsys.index.top_k import exact_top_k, top_k
from recsys.logs import ProgressFn

log = logging.getLogger(__name__)

Queries = Mapping[str, np.ndarray]
DAY_SECONDS = 86_400


class Baseline(Protocol):
    """Anything that ranks the catalog for evaluation queries."""

    name: str

    def rank(self, queries: Queries, k: int) -> np.ndarray:
        """Top-``k`` catalog rows ``[n, k]`` for ``n`` queries, best first."""
        ...


@dataclass
class TrainingData:
    """What the baselines learn from, one entry per training example (``[m]`` arrays)."""

    item_rows: np.ndarray  # int64: catalog row of the label video
    user_rows: np.ndarray  # int64: users-table row of the user
    times: np.ndarray  # int64: Unix seconds of the label watch
    previous_rows: np.ndarray  # int64: catalog row of the watch just before (-1: none)
    num_items: int
    num_users: int


def vocab_to_rows(item_vocab_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Inverse of ``ItemTable.item``: ``[vocab_size]`` catalog row of each item id (-1: none).

    ``item_vocab_ids: [num_items]`` is the vocabulary id of every catalog row.
    """
    ids = np.asarray(item_vocab_ids, dtype=np.int64)
    out = np.full(vocab_size, -1, dtype=np.int64)
    known = ids > F.OOV
    out[ids[known]] = np.flatnonzero(known)
    return out


def history_rows(history: np.ndarray, rows_of_vocab: np.ndarray, last: int) -> np.ndarray:
    """Catalog rows ``[n, last]`` of the latest watches in ``history``, most recent first.

    ``history: [n, H]`` holds vocabulary ids, oldest first, 0-padded at the end; rows are -1
    where the history is shorter than ``last``.
    """
    history = np.asarray(history, dtype=np.int64)
    count = (history != F.PAD).sum(axis=1)  # [n]
    out = np.full((len(history), last), -1, dtype=np.int64)
    for j in range(last):
        pos = count - 1 - j
        has = pos >= 0
        ids = history[np.flatnonzero(has), pos[has]]
        out[has, j] = rows_of_vocab[ids]
    return out


def load_training_data(
    example_dir: str | Path, rows_of_vocab: np.ndarray, num_items: int, num_users: int
) -> TrainingData:
    """Read the training shards of an examples folder, one row group at a time."""
    example_dir = Path(example_dir)
    meta = ExampleSet.load(example_dir)
    parts: dict[str, list[np.ndarray]] = {"item": [], "user": [], "time": [], "prev": []}
    for name in meta.train_shards:
        pf = pq.ParquetFile(example_dir / name)
        for group in range(pf.num_row_groups):
            tbl = pf.read_row_group(group, columns=[F.ITEM_INDEX, F.USER_INDEX, LABEL_TIME])
            parts["item"].append(tbl.column(F.ITEM_INDEX).to_numpy().astype(np.int64))
            parts["user"].append(tbl.column(F.USER_INDEX).to_numpy().astype(np.int64))
            parts["time"].append(tbl.column(LABEL_TIME).to_numpy().astype(np.int64))
            hist = pf.read_row_group(group, columns=[F.HISTORY]).column(0).combine_chunks()
            width = hist.type.list_size
            matrix = hist.flatten().to_numpy().reshape(-1, width)
            parts["prev"].append(history_rows(matrix, rows_of_vocab, 1)[:, 0])

    def cat(key: str) -> np.ndarray:
        return np.concatenate(parts[key]) if parts[key] else np.zeros(0, dtype=np.int64)

    return TrainingData(
        item_rows=cat("item"),
        user_rows=cat("user"),
        times=cat("time"),
        previous_rows=cat("prev"),
        num_items=num_items,
        num_users=num_users,
    )


def popularity_order(counts: np.ndarray) -> np.ndarray:
    """Catalog rows ``[N]`` by ``counts`` descending, ties to the lower row."""
    counts = np.asarray(counts)
    return np.lexsort((np.arange(len(counts)), -counts))


class MostPopular:
    """The videos with the most training watches, the same list for everyone."""

    name = "most_popular"

    def __init__(self, train: TrainingData) -> None:
        self.counts = np.bincount(train.item_rows, minlength=train.num_items)
        self.order = popularity_order(self.counts)

    def rank(self, queries: Queries, k: int) -> np.ndarray:
        """The top-``k`` most watched videos ``[n, k]`` for every query."""
        n = len(queries[LABEL_TIME])
        return np.broadcast_to(self.order[:k], (n, min(k, len(self.order)))).copy()


class Trending:
    """Recent popularity: decayed training watches of the last days before a reference time.

    Watches in the ``window_days`` before the reference count ``0.5 ** (age /
    half_life_days)`` each; overall popularity breaks ties.
    The reference time is the split's cut-off (time split: everyone shares one list) or, for
    splits without one, the start of the query's day (only complete earlier days count).
    """

    name = "trending"

    def __init__(
        self,
        train: TrainingData,
        cutoff: int | None,
        window_days: float = 7.0,
        half_life_days: float = 1.0,
    ) -> None:
        if window_days <= 0 or half_life_days <= 0:
            raise ValueError("window_days and half_life_days must be positive")
        order = np.argsort(train.times, kind="stable")
        self.times = train.times[order]
        self.items = train.item_rows[order]
        self.num_items = train.num_items
        self.cutoff = cutoff
        self.window = int(window_days * DAY_SECONDS)
        self.half_life = half_life_days * DAY_SECONDS
        counts = np.bincount(train.item_rows, minlength=train.num_items)
        # A unique tie-break rank: N - 1 for the most popular video, 0 for the least.
        self.tie = np.empty(self.num_items, dtype=np.float64)
        self.tie[popularity_order(counts)] = np.arange(self.num_items)[::-1]

    def scores(self, reference: int) -> np.ndarray:
        """Decayed recent watch counts ``[N]`` at ``reference`` (Unix seconds)."""
        lo = np.searchsorted(self.times, reference - self.window, side="left")
        hi = np.searchsorted(self.times, reference, side="left")
        age = reference - self.times[lo:hi]
        weight = np.power(0.5, age / self.half_life)
        return np.bincount(self.items[lo:hi], weights=weight, minlength=self.num_items)

    def reference_times(self, queries: Queries) -> np.ndarray:
        """The reference time of each query ``[n]``."""
        t = np.asarray(queries[LABEL_TIME], dtype=np.int64)
        if self.cutoff is not None:
            return np.minimum(t, self.cutoff)
        return t - t % DAY_SECONDS

    def rank(self, queries: Queries, k: int) -> np.ndarray:
        """Top-``k`` trending videos ``[n, k]`` at each query's reference time."""
        refs = self.reference_times(queries)
        out = np.empty((len(refs), min(k, self.num_items)), dtype=np.int64)
        for ref in np.unique(refs):
            s = self.scores(int(ref))
            order = np.lexsort((-self.tie, -s))[: out.shape[1]]
            out[refs == ref] = order
        return out


class CoWatch:
    """Item-to-item co-watch: how often video b was watched right after video a in training.

    A query is scored from its ``recent`` latest watches, the latest weighted most (weights
    ``2**(recent-1)``, ..., 2, 1): ``score(b) = sum_j w_j * count(a_j -> b)``. Videos with no
    co-watch evidence follow in order of popularity (which also breaks ties).
    """

    name = "co_watch"

    def __init__(self, train: TrainingData, rows_of_vocab: np.ndarray, recent: int = 5) -> None:
        if recent <= 0:
            raise ValueError(f"recent must be positive, got {recent}")
        n = train.num_items
        self.num_items = n
        self.recent = recent
        self.rows_of_vocab = rows_of_vocab
        has = train.previous_rows >= 0
        pair = train.previous_rows[has] * n + train.item_rows[has]
        keys, counts = np.unique(pair, return_counts=True)  # sorted by (a, b)
        self.targets = keys % n
        self.counts = counts.astype(np.int64)
        self.starts = np.searchsorted(keys // n, np.arange(n + 1), side="left")
        pop = np.bincount(train.item_rows, minlength=n)
        self.tie = np.empty(n, dtype=np.int64)
        self.tie[popularity_order(pop)] = np.arange(n)[::-1]  # N-1 = most popular
        self.weights = 2 ** np.arange(recent - 1, -1, -1, dtype=np.int64)
        log.info("co-watch: %d distinct consecutive pairs from %d examples", len(keys), has.sum())

    def scores(self, recent_rows: np.ndarray) -> np.ndarray:
        """Integer co-watch scores ``[n, N]`` from ``recent_rows: [n, recent]`` (-1: none)."""
        n_q = len(recent_rows)
        flat_scores = np.zeros(n_q * self.num_items, dtype=np.int64)
        for j in range(recent_rows.shape[1]):
            a = recent_rows[:, j]
            q = np.flatnonzero(a >= 0)
            if not q.size:
                continue
            starts, ends = self.starts[a[q]], self.starts[a[q] + 1]
            lengths = ends - starts
            total = int(lengths.sum())
            if not total:
                continue
            owner = np.repeat(q, lengths)
            offset = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            idx = np.repeat(starts, lengths) + offset
            flat = owner * self.num_items + self.targets[idx]
            flat_scores += np.bincount(
                flat, weights=self.counts[idx] * self.weights[j], minlength=flat_scores.size
            ).astype(np.int64)
        return flat_scores.reshape(n_q, self.num_items)

    def rank(self, queries: Queries, k: int) -> np.ndarray:
        """Top-``k`` co-watched videos ``[n, k]`` from each query's latest watches."""
        recent = history_rows(queries[F.HISTORY], self.rows_of_vocab, self.recent)
        block = max(1, (1 << 22) // self.num_items)  # dense [block, N] scores at a time
        out = []
        for start in range(0, len(recent), block):
            s = self.scores(recent[start : start + block])
            # Distinct integer keys: co-watch score first, then popularity.
            out.append(top_k(s * self.num_items + self.tie[None, :], k)[0])
        if not out:
            return np.zeros((0, min(k, self.num_items)), dtype=np.int64)
        return np.concatenate(out)


class TFRSBasic:
    """The TFRS retrieval tutorial's model: a user-id embedding against an item-id embedding.

    ``tfrs.Model`` with two ``IntegerLookup`` + ``Embedding`` towers (unknown ids share the
    OOV row), ``tfrs.tasks.Retrieval`` (in-batch softmax, no logQ correction, no
    temperature), Adagrad(0.1), batches of 8192, a few epochs: trained on the same training
    examples' ``user_index`` and ``item_index``. The tutorial's FactorizedTopK metric is left
    out of training (it only measures; we measure with exact search afterwards).
    """

    name = "tfrs_basic"

    def __init__(
        self,
        embedding_dim: int = 32,
        epochs: int = 3,
        batch_size: int = 8192,
        learning_rate: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.embedding_dim = embedding_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.seed = seed
        self.user_model: Any = None
        self.item_model: Any = None
        self.item_embeddings: np.ndarray | None = None
        self.train_seconds = 0.0

    def fit(self, train: TrainingData, progress: ProgressFn | None = None) -> TFRSBasic:
        """Train on ``(user_rows, item_rows)`` of ``train``; returns self."""
        # TensorFlow loads when this baseline trains: the other baselines run without it.
        import tensorflow as tf
        import tensorflow_recommenders as tfrs

        if not len(train.item_rows):
            raise ValueError("TFRS basic needs training examples; got none")
        started = time.perf_counter()
        tf.keras.utils.set_random_seed(self.seed)
        users = np.unique(train.user_rows)
        items = np.unique(train.item_rows)
        dim = self.embedding_dim
        self.user_model = tf.keras.Sequential(
            [
                tf.keras.layers.IntegerLookup(vocabulary=users, mask_token=None),
                tf.keras.layers.Embedding(len(users) + 1, dim),
            ]
        )
        self.item_model = tf.keras.Sequential(
            [
                tf.keras.layers.IntegerLookup(vocabulary=items, mask_token=None),
                tf.keras.layers.Embedding(len(items) + 1, dim),
            ]
        )

        class BasicModel(tfrs.Model):
            """The tutorial's ``MovielensModel``: user tower, item tower, retrieval task."""

            def __init__(self, user_model: Any, item_model: Any) -> None:
                super().__init__()
                self.user_model = user_model
                self.item_model = item_model
                self.task = tfrs.tasks.Retrieval()

            def compute_loss(self, features: Any, training: bool = False) -> Any:
                """In-batch softmax loss of the users against their watched items."""
                user_embeddings = self.user_model(features["user_id"])
                positive_item_embeddings = self.item_model(features["item_id"])
                return self.task(user_embeddings, positive_item_embeddings)

        model = BasicModel(self.user_model, self.item_model)
        model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=self.learning_rate))
        n = len(train.item_rows)
        ds = (
            tf.data.Dataset.from_tensor_slices(
                {"user_id": train.user_rows.astype(np.int64), "item_id": train.item_rows}
            )
            .shuffle(min(n, 100_000), seed=self.seed, reshuffle_each_iteration=True)
            .batch(self.batch_size)
        )

        epochs = self.epochs

        class Report(tf.keras.callbacks.Callback):
            """Reports finished epochs to ``progress``."""

            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                """Report one more finished epoch."""
                if progress:
                    progress(epoch + 1, epochs)

        model.fit(ds, epochs=self.epochs, verbose=0, callbacks=[Report()])
        all_rows = np.arange(train.num_items, dtype=np.int64)
        self.item_embeddings = np.concatenate(
            [
                self.item_model(all_rows[s : s + 65_536]).numpy()
                for s in range(0, len(all_rows), 65_536)
            ]
        ).astype(np.float32)
        self.train_seconds = time.perf_counter() - started
        log.info(
            "TFRS basic: %d examples, %d users, %d items, %d epochs in %.1f s",
            n,
            len(users),
            len(items),
            self.epochs,
            self.train_seconds,
        )
        return self

    def query_embeddings(self, queries: Queries) -> np.ndarray:
        """User embeddings ``[n, d]`` of the queries' ``user_index``."""
        if self.user_model is None:
            raise RuntimeError("TFRSBasic.fit must run before ranking")
        users = np.asarray(queries[F.USER_INDEX], dtype=np.int64)
        if not len(users):
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return np.concatenate(
            [self.user_model(users[s : s + 65_536]).numpy() for s in range(0, len(users), 65_536)]
        ).astype(np.float32)

    def rank(self, queries: Queries, k: int) -> np.ndarray:
        """Exact top-``k`` catalog rows ``[n, k]`` by user-item dot product."""
        assert self.item_embeddings is not None, "TFRSBasic.fit must run before ranking"
        rows, _ = exact_top_k(self.query_embeddings(queries), self.item_embeddings, k)
        return rows


class ItemGram:
    """The item-item co-occurrence matrix of training users: ``G = X^T X`` over the videos
    with the most training watches (at most ``max_items``), float32.

    ``X`` is the binary user x video matrix of the training examples' (user, next watch)
    pairs. EASE and item-kNN both start from ``G``; a cap keeps ``G`` and EASE's inverse
    within memory and minutes (``max_items ** 2 * 4`` bytes each: 256 MB at 8,000 videos).
    """

    def __init__(self, train: TrainingData, max_items: int) -> None:
        if max_items <= 0:
            raise ValueError(f"max_items must be positive, got {max_items}")
        counts = np.bincount(train.item_rows, minlength=train.num_items)
        seen = int((counts > 0).sum())
        # The catalog rows the matrix covers, most watched first; column j is rows[j].
        self.rows = popularity_order(counts)[: min(seen, max_items)]
        self.seen = seen
        self.num_items = train.num_items
        column = np.full(train.num_items, -1, dtype=np.int64)
        column[self.rows] = np.arange(len(self.rows))
        self.column = column  # [num_items] column of each catalog row (-1: not covered)
        n = len(self.rows)
        pairs = pd.DataFrame({"user": train.user_rows, "col": column[train.item_rows]})
        pairs = pairs[pairs["col"] >= 0].drop_duplicates().sort_values(["user", "col"])
        self.gram = np.zeros((n, n), dtype=np.float32)
        users = pairs["user"].to_numpy(np.int64)
        cols = pairs["col"].to_numpy(np.int64)
        bounds = np.flatnonzero(np.diff(users)) + 1
        starts = np.concatenate([[0], bounds]).astype(np.int64)
        ends = np.concatenate([bounds, [len(users)]]).astype(np.int64)
        # Users in chunks of about 2**24 (i, j) pairs: G += counts of each pair.
        sizes = (ends - starts) ** 2
        chunk_of = np.cumsum(sizes) // (1 << 24)
        for chunk in np.unique(chunk_of):
            which = np.flatnonzero(chunk_of == chunk)
            keys = np.concatenate(
                [
                    (cols[a:b, None] * n + cols[None, a:b]).ravel()
                    for a, b in zip(starts[which], ends[which], strict=True)
                ]
            )
            flat, times = np.unique(keys, return_counts=True)
            self.gram.ravel()[flat] += times.astype(np.float32)
        pop = counts[self.rows].astype(np.float64)
        # A tie-break below any real score difference: popularity, as a share in [0, 1e-6).
        self.tie = (1e-6 * pop / (pop.max() + 1.0)).astype(np.float64)
        log.info("item co-occurrence: %d of %d watched videos, %d users", n, seen, len(starts))

    def history_matrix(self, watched: Watched, start: int, stop: int) -> np.ndarray:
        """``[stop - start, n]`` float32 0/1 rows: each query's watched videos (covered ones)."""
        part = watched.take(np.arange(start, stop))
        query, row = part.pairs()
        cols = self.column[row]
        out = np.zeros((stop - start, len(self.rows)), dtype=np.float32)
        out[query[cols >= 0], cols[cols >= 0]] = 1.0
        return out

    def rank_scores(self, weights: np.ndarray, watched: Watched, k: int) -> np.ndarray:
        """Top-``k`` catalog rows ``[n, k]`` by ``x_q @ weights`` (``weights: [n_cols, n_cols]``),
        popularity breaking ties; -1 where fewer than ``k`` videos are covered."""
        n = len(watched)
        out = np.full((n, k), -1, dtype=np.int64)
        cols = len(self.rows)
        block = max(1, (1 << 24) // max(1, cols))
        for start in range(0, n, block):
            stop = min(n, start + block)
            scores = self.history_matrix(watched, start, stop) @ weights
            best, _ = top_k(scores.astype(np.float64) + self.tie[None, :], min(k, cols))
            out[start:stop, : best.shape[1]] = self.rows[best]
        return out


class EASE:
    """EASE (Steck, *Embarrassingly Shallow Autoencoders for Sparse Data*, 2019): item-item
    weights in closed form, ``B = I - P / diag(P)`` with ``P = (G + l2 I)^-1`` (zero
    diagonal), over :class:`ItemGram`'s videos. A query's scores are ``x_q B``, ``x_q`` its
    user's videos watched before it (every earlier watch, not only the model's window).
    """

    name = "ease"

    def __init__(self, gram: ItemGram, l2: float = 200.0) -> None:
        if l2 <= 0:
            raise ValueError(f"EASE's l2 must be positive, got {l2}")
        self.gram = gram
        self.l2 = l2
        started = time.perf_counter()
        g = gram.gram.copy()
        g[np.diag_indices_from(g)] += np.float32(l2)
        p = np.linalg.inv(g)
        self.weights = -p / np.diag(p)[None, :]
        self.weights[np.diag_indices_from(self.weights)] = 0.0
        self.fit_seconds = time.perf_counter() - started
        log.info("EASE over %d videos solved in %.1f s", len(gram.rows), self.fit_seconds)

    def rank_watched(self, watched: Watched, k: int) -> np.ndarray:
        """Top-``k`` catalog rows ``[n, k]`` from each query's watched videos."""
        return self.gram.rank_scores(self.weights, watched, k)


class ItemKNN:
    """Item-based k-nearest-neighbours (Sarwar et al., 2001; Deshpande and Karypis, 2004):
    cosine similarity of videos' training audiences, each video keeping its ``neighbours``
    most similar; a query scores video j by the summed similarity of its watched videos to j.
    """

    name = "item_knn"

    def __init__(self, gram: ItemGram, neighbours: int = 100) -> None:
        if neighbours <= 0:
            raise ValueError(f"item-kNN's neighbours must be positive, got {neighbours}")
        self.gram = gram
        self.neighbours = neighbours
        g = gram.gram
        norm = np.sqrt(np.maximum(np.diag(g), 1.0)).astype(np.float32)
        sim = g / norm[:, None] / norm[None, :]
        sim[np.diag_indices_from(sim)] = 0.0
        keep = min(neighbours, max(0, len(sim) - 1))
        if keep < len(sim):
            # Each video's row keeps its most similar ``keep`` videos (ties: lower column).
            drop = np.argpartition(-sim, keep, axis=1)[:, keep:]
            np.put_along_axis(sim, drop, 0.0, axis=1)
        self.weights = sim

    def rank_watched(self, watched: Watched, k: int) -> np.ndarray:
        """Top-``k`` catalog rows ``[n, k]`` from each query's watched videos."""
        return self.gram.rank_scores(self.weights, watched, k)

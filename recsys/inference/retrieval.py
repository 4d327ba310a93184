"""Candidate retrieval for a query embedding: the index's top candidates, filtered and ranked.

:class:`Retriever` owns the served index and the catalog rows it maps to. It asks the index
for enough candidates that, after exclusions and a category filter, the scored set still
holds the wanted number (doubling the request while it does not), and ranks the survivors
by their logits ``q·v``. The logits are the index's own scores: its contract is exact dot
products (ScaNN re-scores its candidates in float32; the model's load probe checks them).

With a freshness term (:class:`recsys.inference.freshness.AgedCatalog`) the logits are taken
at the request's moment instead: the index is asked with the query's age-independent part
for :data:`FRESH_WIDEN` times the candidates, the videos uploaded in the last
:data:`YOUNG_DAYS` (where the learned freshness term changes fastest) join them, videos not
uploaded yet leave, and every one is re-scored exactly with its upload age at that moment.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from recsys.index.base import Index
from recsys.index.scann_index import ScannIndex
from recsys.inference.candidate_embedder import upload_age_days
from recsys.inference.freshness import AgedCatalog, age_moment, rowwise_dot
from recsys.inference.live_videos import LiveDelta
from recsys.inference.served_catalog import ServedCatalog, in_sorted

log = logging.getLogger(__name__)

# Index candidates per wanted one when the freshness term is re-applied at the request's
# moment (BENCHMARKS.md measures recall against exact search by this factor).
FRESH_WIDEN = 1
# Videos uploaded this recently are all scored exactly (at most YOUNG_LIMIT, the newest):
# the freshness curve has whole-day buckets up to 10 days.
YOUNG_DAYS = 10.0
YOUNG_LIMIT = 20_000


class Retriever:
    """Index search, exclusions, category filter and ranking over one catalog; thread-safe."""

    def __init__(
        self,
        index: Index,
        catalog: ServedCatalog,
        embeddings: np.ndarray,
        leaves_to_search: int | None = None,
        reorder_k: int | None = None,
        aged: AgedCatalog | None = None,
    ) -> None:
        """Retrieve from ``index`` (over ``catalog``'s videos, ``embeddings`` row-aligned).

        ``leaves_to_search`` / ``reorder_k`` override a ScaNN index's saved search setting;
        an exact index ignores them (with a warning). ``aged``: the catalog's freshness
        term, re-applied at each request's moment (None: the index's scores as exported).
        """
        self.index = index
        self.aged = aged
        # The export's rows (the index's); live additions are rows from here on.
        self._base_size = len(index)
        self.live: LiveDelta | None = None  # replaced whole by LiveVideos on each change
        self._live_terms: tuple[int, int, np.ndarray, np.ndarray] | None = None
        self.catalog = catalog
        self.embeddings = embeddings
        # Index positions -> catalog rows, once: results then map with one gather, not a
        # dict probe per id (the served index is never mutated, see Index.row_ids).
        self._catalog_row_at = catalog.rows_or_missing(index.row_ids)
        self._search_overrides: dict[str, int] = {}
        if isinstance(index, ScannIndex):
            if leaves_to_search is not None:
                self._search_overrides["leaves_to_search"] = leaves_to_search
            if reorder_k is not None:
                self._search_overrides["reorder_k"] = reorder_k
        elif leaves_to_search is not None or reorder_k is not None:
            log.warning(
                "leaves_to_search / reorder_k ignored: the %s index searches exactly", index.kind
            )

    def share_rows(self, other: Retriever) -> None:
        """Map index positions as ``other`` (over the same index and catalog) does."""
        self._catalog_row_at = other._catalog_row_at

    def serve_live(self, delta: LiveDelta) -> None:
        """Search ``delta``'s additions beside the index and hide its removals from now on."""
        self.live = delta

    @property
    def num_items(self) -> int:
        """Videos in the catalog."""
        return len(self.catalog.row_of)

    def candidates(
        self,
        query: np.ndarray,
        wanted: int,
        excluded_rows: np.ndarray,
        category: str | None,
        request_time: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Candidate rows, their exact logits, and the seconds spent in the index.

        Asks the index for ``wanted`` + |excluded| (``wanted`` / category share with a
        category filter), doubling while the filters leave fewer than ``wanted``; a category
        smaller than that is scanned exactly instead (every one of its videos is a candidate).
        ``excluded_rows`` must be sorted. ``request_time`` (Unix s) is the moment the
        freshness term is taken at, when there is one (default: now).
        """
        moment = int(time.time()) if request_time is None else int(request_time)
        if self.aged is not None:
            found = self._fresh_candidates(query, wanted, excluded_rows, category, moment)
        else:
            found = self._index_candidates(query, wanted, excluded_rows, category)
        live = self.live
        if live is None or not (len(live.active) or len(live.removed_rows)):
            return found
        rows, logits, spent = found
        if len(live.removed_rows):
            kept = ~in_sorted(rows, live.removed_rows)
            rows, logits = rows[kept], logits[kept]
        extra, extra_logits = self._live_candidates(
            live, query, wanted + len(excluded_rows), category, moment
        )
        return np.concatenate([rows, extra]), np.concatenate([logits, extra_logits]), spent

    def _base_category(self, category: str) -> np.ndarray | None:
        """The export's rows of ``category`` (sorted; live additions left out)."""
        rows = self.catalog.category_rows.get(category)
        if rows is None or not len(rows) or rows[-1] < self._base_size:
            return rows
        return rows[: np.searchsorted(rows, self._base_size)]

    def _category_fetch(
        self, category: str | None, wanted: int, excluded_rows: np.ndarray
    ) -> tuple[np.ndarray | None, int, int]:
        """The exported videos of ``category`` (None: any category; empty: none of it), its
        code (-1: any), and how many index results hold ``wanted`` eligible ones on average
        (the category's share of the catalog taken into account)."""
        fetch = wanted + len(excluded_rows)
        if category is None:
            return None, -1, fetch
        in_category = self._base_category(category)
        if in_category is None or len(in_category) == 0:
            return _NO_ROWS, -1, fetch
        code = self.catalog.category_names.index(category)
        share = math.ceil(wanted * self._base_size / len(in_category))
        return in_category, code, share + len(excluded_rows)

    def _live_candidates(
        self, live: LiveDelta, query: np.ndarray, fetch: int, category: str | None, moment: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``fetch`` live additions for ``query`` at ``moment``, scored exactly."""
        dots = rowwise_dot(live.vectors, query)
        if self.aged is None:
            logits = dots
        else:
            cosine, sine = self._live_freshness(live, moment)
            logits = cosine * dots + query[-1] * sine
        usable = live.active & (live.upload_time <= moment)
        if category is not None:
            code = self.catalog.category_names.index(category)
            usable &= self.catalog.category_code[live.first_row : live.first_row + len(usable)] == (
                code
            )
        at = np.flatnonzero(usable)
        if len(at) > fetch:
            at = at[np.argpartition(-logits[at], fetch - 1)[:fetch]]
        return live.first_row + at, logits[at].astype(np.float32)

    def _live_freshness(self, live: LiveDelta, moment: int) -> tuple[np.ndarray, np.ndarray]:
        """``cos(psi)``, ``sin(psi)`` ``[m]`` of the live additions at ``moment``'s day start
        (cached: the same all day, until the additions change)."""
        assert self.aged is not None
        day = age_moment(moment)
        cached = self._live_terms
        if cached is not None and cached[0] == day and cached[1] == len(live.upload_time):
            return cached[2], cached[3]
        sine = self.aged.term.sine(upload_age_days(live.upload_time, day))
        cosine = np.sqrt(1.0 - np.square(sine))
        self._live_terms = (day, len(live.upload_time), cosine, sine)
        return cosine, sine

    def _index_candidates(
        self, query: np.ndarray, wanted: int, excluded_rows: np.ndarray, category: str | None
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """:meth:`candidates` from the index alone, its scores the logits."""
        num_items = self._base_size
        in_category, code, fetch = self._category_fetch(category, wanted, excluded_rows)
        if in_category is not None:
            if len(in_category) == 0:
                return _NO_ROWS, _NO_LOGITS, 0.0
            if len(in_category) <= fetch:
                logits = np.take(self.embeddings, in_category, axis=0) @ query
                return in_category, np.asarray(logits, dtype=np.float32), 0.0
        spent = 0.0
        fetch = min(fetch, num_items)
        while True:
            t = time.perf_counter()
            rows, logits = self.search(query, fetch)
            spent += time.perf_counter() - t
            if fetch >= num_items:
                return rows, logits, spent
            if in_category is None and len(rows) >= wanted + len(excluded_rows):
                return rows, logits, spent  # whatever the exclusions remove, `wanted` remain
            eligible = ~in_sorted(rows, excluded_rows)
            if in_category is not None:
                eligible &= self.catalog.category_code[rows] == code
            if int(eligible.sum()) >= wanted:
                return rows, logits, spent
            fetch = min(num_items, 2 * fetch)

    def _fresh_candidates(
        self,
        query: np.ndarray,
        wanted: int,
        excluded_rows: np.ndarray,
        category: str | None,
        moment: int,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """:meth:`candidates` with the freshness term taken at ``moment``."""
        aged = self.aged
        assert aged is not None
        num_items = self._base_size
        in_category, code, fetch = self._category_fetch(category, wanted, excluded_rows)
        if in_category is not None:
            if len(in_category) == 0:
                return _NO_ROWS, _NO_LOGITS, 0.0
            if len(in_category) <= FRESH_WIDEN * fetch:
                rows = in_category[aged.uploaded(in_category, moment)]
                return rows, aged.logits(query, rows, moment), 0.0
        # The index's scores are q_main . main scaled by the export's cos(psi): ask it with
        # the query's freshness sine zeroed, so the export's stale freshness term is gone.
        ask = np.array(query, dtype=np.float32)
        ask[-1] = 0.0
        young = aged.young(moment, YOUNG_DAYS, YOUNG_LIMIT)
        spent = 0.0
        fetch = min(FRESH_WIDEN * fetch, num_items)
        while True:
            t = time.perf_counter()
            found, _ = self.search(ask, fetch)
            spent += time.perf_counter() - t
            rows = np.union1d(found, young) if len(young) else found
            rows = rows[aged.uploaded(rows, moment)]
            if fetch >= num_items:
                break
            eligible = ~in_sorted(rows, excluded_rows)
            if category is not None:
                eligible &= self.catalog.category_code[rows] == code
            if int(eligible.sum()) >= FRESH_WIDEN * wanted:
                break
            fetch = min(num_items, 2 * fetch)
        return rows, aged.logits(query, rows, moment), spent

    def search(self, query: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """Catalog rows of the index's top ``fetch`` for ``query: [d]`` and their logits."""
        positions, scores = self.index.search_rows(query, fetch, **self._search_overrides)
        rows = self._catalog_row_at[positions]
        if len(rows) and rows.min() < 0:
            raise RuntimeError("the index returned ids not in the served catalog")
        return rows, np.asarray(scores, dtype=np.float32)

    def rank(
        self,
        rows: np.ndarray,
        logits: np.ndarray,
        excluded_rows: np.ndarray,
        category: str | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Eligible candidates and their logits ``q·v``, best first (ties: catalog order)."""
        keep: np.ndarray | None = None
        if len(rows) and len(excluded_rows):
            keep = ~in_sorted(rows, excluded_rows)
        if category is not None and len(rows):
            code = self.catalog.category_names.index(category)
            in_category = self.catalog.category_code[rows] == code
            keep = in_category if keep is None else keep & in_category
        if keep is not None:
            rows, logits = rows[keep], logits[keep]
        steps = np.diff(logits)
        if len(steps) and not (steps < 0).all():  # unsorted, or ties to put in catalog order
            order = np.lexsort((rows, -logits))
            rows, logits = rows[order], logits[order]
        return rows, logits

    def similar(self, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` catalog rows nearest to video ``row`` (itself left out) and their scores.

        Live additions are compared by their stored vectors (with a freshness term, the
        age-independent part), the export's videos by their exported embeddings.
        """
        live = self.live
        if row >= self._base_size:
            assert live is not None
            vector = np.asarray(live.vectors[row - live.first_row], dtype=np.float32)
        else:
            vector = np.asarray(self.embeddings[row], dtype=np.float32)
        removed = _NO_ROWS if live is None else live.removed_rows
        rows, scores = self.search(vector, min(self._base_size, k + 1 + len(removed)))
        if live is not None and len(live.active):
            at = np.flatnonzero(live.active)
            rows = np.concatenate([rows, live.first_row + at])
            scores = np.concatenate([scores, rowwise_dot(live.vectors[at], vector)])
        other = rows != row
        rows, scores = self.rank(rows[other], scores[other], removed, None)
        return rows[:k], scores[:k]


_NO_ROWS = np.empty(0, dtype=np.int64)
_NO_LOGITS = np.empty(0, dtype=np.float32)

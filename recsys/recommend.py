"""Serving-time recommendation: query tower, candidate index, exact re-scoring and softmax.

:class:`Recommender` loads one artifact version (checksums, vocabularies, query SavedModel,
index, item embeddings, user profiles), checks it with a probe query, and answers
``recommend`` / ``similar_items`` / ``info`` from any number of threads. The gRPC servicer
is a thin layer over it, so tests and notebooks get exactly what the service returns.

A request's query features come from :func:`recsys.context.encode_request`, the code that
built the training contexts; a user_id request served from its stored profile takes the same
features from :class:`~recsys.profile_features.EncodedProfiles` (encoded once at load). The
query embedding's dot product with a video's candidate embedding is the softmax logit
(Covington et al. 2016): the index retrieves candidates and re-scores them exactly (ScaNN's
reordering step computes float32 dot products with the stored embeddings; the load probe
checks them against ``item_embeddings.npy``), they are filtered, and the softmax at the
model's temperature over the scored set gives each probability (see the ``.proto``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recsys.artifacts import ArtifactError, Manifest, verify_artifact
from recsys.config import Config
from recsys.context import RequestContext, encode_request
from recsys.index import Index, IndexLoadError, ScannIndex, load_index
from recsys.profile_features import EncodedProfiles
from recsys.profiles import PROFILES_FILE, ProfileError, Profiles
from recsys.query_tower import (
    TFLITE_FILE,
    QueryTower,
    QueryTowerBatcher,
    TowerLoadError,
    load_query_tower,
)
from recsys.request import (
    MAX_K,
    ModelInfo,
    ModelLoadError,
    RecommendedItem,
    RecommenderOptions,
    RecommendResult,
    SimilarItem,
    StageTimings,
    UnknownItemError,
    UnknownUserError,
    has_context,
    merge_context,
    softmax,
    watched_before,
)
from recsys.served_catalog import CatalogLoadError, ServedCatalog, in_sorted, read_served_catalog
from recsys.vocab import Vocabularies

# The request types are re-exported: callers import everything serving needs from here.
__all__ = [
    "MAX_K",
    "ModelInfo",
    "ModelLoadError",
    "RecommendResult",
    "RecommendedItem",
    "Recommender",
    "RecommenderOptions",
    "SimilarItem",
    "StageTimings",
    "UnknownItemError",
    "UnknownUserError",
    "has_context",
    "merge_context",
    "softmax",
    "watched_before",
]

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocabularies.json"
QUERY_MODEL_DIR = "query_model"
INDEX_DIR = "index"
ITEMS_FILE = "items.parquet"
EMBEDDINGS_FILE = "item_embeddings.npy"


def _ms(seconds: float) -> float:
    return seconds * 1000.0


class Recommender:
    """One loaded, verified artifact version; thread-safe, read-only after :meth:`load`."""

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        config: Config,
        vocabs: Vocabularies,
        query_tower: QueryTower,
        index: Index,
        catalog: ServedCatalog,
        embeddings: np.ndarray,
        profiles: Profiles | None,
        options: RecommenderOptions,
        encoded_profiles: EncodedProfiles | None = None,
    ) -> None:
        """Assemble from loaded parts (profiles are encoded unless given); use :meth:`load`."""
        self.path = path
        self.manifest = manifest
        self.config = config
        self.vocabs = vocabs
        self.index = index
        self.embeddings = embeddings
        self.profiles = profiles
        self.options = options
        self.temperature = float(config.model.temperature)
        self._catalog = catalog
        # Index positions -> catalog rows, once: results then map with one gather, not a
        # dict probe per id (the served index is never mutated, see Index.row_ids).
        self._catalog_row_at = catalog.rows_or_missing(index.row_ids)
        # The Lite tower runs one query at a time: stacking queued queries would only be split
        # again row by row, so it gets batches of one (the batcher still orders the callers).
        batch = options.max_batch if query_tower.runtime == "savedmodel" else 1
        self._tower = QueryTowerBatcher(query_tower, batch)
        self._search_overrides: dict[str, int] = {}
        if isinstance(index, ScannIndex):
            if options.leaves_to_search is not None:
                self._search_overrides["leaves_to_search"] = options.leaves_to_search
            if options.reorder_k is not None:
                self._search_overrides["reorder_k"] = options.reorder_k
        elif options.leaves_to_search is not None or options.reorder_k is not None:
            log.warning(
                "leaves_to_search / reorder_k ignored: the %s index searches exactly", index.kind
            )
        if encoded_profiles is None and profiles is not None:
            encoded_profiles = EncodedProfiles(
                profiles, vocabs, config.features, catalog.rows_or_missing
            )
        self._encoded_profiles = encoded_profiles
        self._no_rows = np.empty(0, dtype=np.int64)
        self.loaded_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def with_options(self, options: RecommenderOptions) -> Recommender:
        """The same loaded model served with other options (shares every loaded part)."""
        return Recommender(
            self.path,
            self.manifest,
            self.config,
            self.vocabs,
            self._tower.fn,  # type: ignore[arg-type]
            self.index,
            self._catalog,
            self.embeddings,
            self.profiles,
            options,
            self._encoded_profiles,
        )

    @property
    def tower_batcher(self) -> QueryTowerBatcher:
        """The query tower behind its batcher (``calls`` / ``queries`` count its work)."""
        return self._tower

    @property
    def name(self) -> str:
        """The model's name (``artifacts/<name>/``)."""
        return self.manifest.name

    @property
    def version(self) -> str:
        """The artifact version, e.g. ``v0003``."""
        return self.manifest.version or self.path.name

    @property
    def catalog(self) -> ServedCatalog:
        """The served videos (ids, titles, categories), row-aligned with the embeddings."""
        return self._catalog

    @property
    def num_items(self) -> int:
        """Videos in the catalog."""
        return len(self._catalog.row_of)

    @classmethod
    def load(
        cls,
        version_dir: str | Path,
        options: RecommenderOptions | None = None,
        verify: bool = True,
    ) -> Recommender:
        """Load and check a version folder; ModelLoadError saying what is wrong otherwise.

        Verifies every file's sha256 against the manifest (unless ``verify`` is False), then
        runs a probe query through every stage.
        """

        path = Path(version_dir)
        options = options or RecommenderOptions()
        started = time.perf_counter()
        try:
            manifest = verify_artifact(path) if verify else _read_manifest_only(path)
        except ArtifactError as exc:
            raise ModelLoadError(str(exc)) from exc
        try:
            raw = json.loads((path / CONFIG_FILE).read_text())
            config = Config.from_dict(raw["config"], source=str(path / CONFIG_FILE))
            dim = int(raw["embedding_dim"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path / CONFIG_FILE}: not a valid model config ({exc})") from exc
        try:
            vocabs = Vocabularies.load(path / VOCAB_FILE)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        try:
            tower = load_query_tower(
                path / QUERY_MODEL_DIR,
                _tower_probes(vocabs, config),
                options.tower_runtime,
                path / TFLITE_FILE,
            )
        except TowerLoadError as exc:
            raise ModelLoadError(str(exc)) from exc
        try:
            index = load_index(path / INDEX_DIR, expected_dim=dim)
        except (IndexLoadError, OSError, ValueError) as exc:
            raise ModelLoadError(f"{path / INDEX_DIR}: {exc}") from exc
        try:
            catalog = read_served_catalog(path / ITEMS_FILE)
        except CatalogLoadError as exc:
            raise ModelLoadError(str(exc)) from exc
        try:
            # In memory, not mapped: scoring a small category or a video's neighbours reads
            # rows all over the file, and a page fault per row costs more than the products.
            embeddings = np.load(path / EMBEDDINGS_FILE, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path / EMBEDDINGS_FILE}: cannot read ({exc})") from exc
        if embeddings.dtype != np.float32 or embeddings.shape != (len(catalog.row_of), dim):
            raise ModelLoadError(
                f"{path / EMBEDDINGS_FILE}: {embeddings.dtype} {embeddings.shape}, expected "
                f"float32 ({len(catalog.row_of)}, {dim}) to match {ITEMS_FILE}"
            )
        if len(index) != len(catalog.row_of):
            raise ModelLoadError(
                f"{path / INDEX_DIR}: {len(index)} live items, {ITEMS_FILE} has "
                f"{len(catalog.row_of)}"
            )
        profiles = None
        if (path / PROFILES_FILE).is_file():
            try:
                profiles = Profiles.load(path / PROFILES_FILE)
            except ProfileError as exc:
                raise ModelLoadError(str(exc)) from exc
        else:
            log.warning("%s: no %s; requests need an explicit context", path, PROFILES_FILE)
        model = cls(
            path, manifest, config, vocabs, tower, index, catalog, embeddings, profiles, options
        )
        model.probe()
        log.info(
            "loaded model %s/%s (%d items, dim %d, %s index, %s query tower, %d profiles) "
            "in %.1f s",
            model.name,
            model.version,
            model.num_items,
            dim,
            index.kind,
            tower.runtime,
            0 if profiles is None else len(profiles),
            time.perf_counter() - started,
        )
        return model

    def probe(self) -> None:
        """Run test queries through every stage; ModelLoadError if any answer is wrong."""
        now = int(time.time())
        first = str(self._catalog.ids[0])
        contexts = [
            RequestContext(request_time=now),  # nothing known: every stage still answers
            RequestContext(watch_history=[first], searches=["probe"], request_time=now),
        ]
        if self.profiles is not None and len(self.profiles):
            profile = self.profiles.context(self.profiles.user_id_at(0), now)
            assert profile is not None
            contexts.append(profile)
        k = min(10, self.num_items)
        self._probe_index_scores(k)
        if self.profiles is not None and len(self.profiles):
            self._probe_profile_path(self.profiles.user_id_at(0), now, k)
        for ctx in contexts:
            try:
                result = self._recommend(ctx, False, k, False, (), None)
            except Exception as exc:
                raise ModelLoadError(f"{self.path}: probe query failed ({exc!r})") from exc
            logits = np.array([i.logit for i in result.items])
            total = sum(i.probability for i in result.items)
            if (
                len(result.items) != k
                or not np.all(np.isfinite(logits))
                or np.any(np.diff(logits) > 1e-6)
                or not 0.0 < total <= 1.0 + 1e-6
            ):
                raise ModelLoadError(
                    f"{self.path}: probe query gave {len(result.items)} items (want {k}), "
                    f"logits {logits[:5]}, probabilities summing to {total}"
                )

    def _probe_index_scores(self, k: int) -> None:
        """The index's scores must be the dot products with ``item_embeddings.npy``'s rows."""
        for row in (0, self.num_items - 1):
            query = np.asarray(self.embeddings[row], dtype=np.float32)
            rows, scores = self._index_search(query, k)
            exact = np.take(self.embeddings, rows, axis=0) @ query
            if len(rows) != k or not np.allclose(scores, exact, rtol=1e-4, atol=1e-4):
                raise ModelLoadError(
                    f"{self.path}: the index's scores are not the dot products with "
                    f"{EMBEDDINGS_FILE} (index {scores[:3]} vs {exact[:3]}): the index and "
                    "the embeddings come from different models"
                )

    def _probe_profile_path(self, user_id: str, now: int, k: int) -> None:
        """The encoded profile must give what the profile's context gives (same features)."""
        ctx = RequestContext(request_time=now)
        fast = self.recommend(ctx, user_id, k)
        profile = self.profiles.context(user_id, now) if self.profiles else None
        assert profile is not None
        slow = self._recommend(profile, True, k, True, (), None)
        if (
            not np.array_equal(fast.rows, slow.rows)
            or not np.allclose(fast.logits, slow.logits, rtol=1e-5, atol=1e-6)
            or fast.unknown_videos != slow.unknown_videos
        ):
            raise ModelLoadError(
                f"{self.path}: the encoded profile of user {user_id!r} recommends differently "
                f"from its context (rows {fast.rows[:5]} vs {slow.rows[:5]})"
            )

    # ------------------------------------------------------------------ requests

    def recommend(
        self,
        ctx: RequestContext | None,
        user_id: str | None,
        k: int,
        exclude_watched: bool = True,
        exclude_ids: Sequence[str] = (),
        category: str | None = None,
    ) -> RecommendResult:
        """The ``k`` videos most likely watched next (see the ``.proto`` for the semantics).

        ``user_id`` alone: the context is the user's stored profile; with ``ctx`` too, the
        fields ``ctx`` sets win. Raises ValueError (naming the field) for ``k`` outside
        ``1..max_k`` or no context at all, UnknownUserError for an unknown ``user_id``
        without context.
        """
        started = time.perf_counter()
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.options.max_k:
            raise ValueError(f"k must be an integer in 1..{self.options.max_k}, got {k!r}")
        explicit = has_context(ctx)
        profile = None
        encoded = self._encoded_profiles
        if (
            user_id
            and encoded is not None
            and (ctx is None or not (ctx.watch_history or ctx.searches))
        ):
            row = encoded.profiles.row_of(user_id)
            if row is not None:  # the stored history: encoded at load, no strings per request
                moment = (
                    int(time.time())
                    if ctx is None or ctx.request_time is None
                    else int(ctx.request_time)
                )
                query = encoded.query(row, moment, ctx)
                excluded = query.watched_rows if exclude_watched else self._no_rows
                if exclude_ids:
                    excluded = np.concatenate([excluded, self._catalog.rows(exclude_ids)])
                return self._score(
                    query.features,
                    np.unique(excluded),
                    query.unknown_videos,
                    True,
                    k,
                    category,
                    started,
                    time.perf_counter(),
                )
        if user_id:
            request_time = None if ctx is None else ctx.request_time
            profile = self.profiles.context(user_id, request_time) if self.profiles else None
            if profile is None and not explicit:
                raise UnknownUserError(
                    f"user_id {user_id!r} has no stored profile in model "
                    f"{self.name}/{self.version}; send a context"
                )
        elif not explicit:
            raise ValueError("context is empty and there is no user_id: send one or the other")
        merged = merge_context(profile, ctx)
        return self._recommend(
            merged, profile is not None, k, exclude_watched, exclude_ids, category, started
        )

    def query_embeddings(
        self, user_ids: Sequence[str], request_time: int | None = None
    ) -> np.ndarray:
        """The query tower's embeddings ``[n, d]`` of stored profiles at ``request_time``.

        What a user_id-only :meth:`recommend` at that time (default: now) scores with.
        UnknownUserError names an id without a stored profile.
        """
        moment = int(time.time()) if request_time is None else int(request_time)
        encoded = self._encoded_profiles
        rows = []
        for user_id in user_ids:
            row = None if encoded is None else encoded.profiles.row_of(user_id)
            if encoded is None or row is None:
                raise UnknownUserError(
                    f"user_id {user_id!r} has no stored profile in model {self.name}/{self.version}"
                )
            rows.append(self._tower(encoded.query(row, moment).features))
        dim = int(self.embeddings.shape[1])
        return np.stack(rows) if rows else np.empty((0, dim), dtype=np.float32)

    def _recommend(
        self,
        ctx: RequestContext,
        used_profile: bool,
        k: int,
        exclude_watched: bool,
        exclude_ids: Sequence[str],
        category: str | None,
        started: float | None = None,
    ) -> RecommendResult:
        t0 = time.perf_counter() if started is None else started
        if ctx.request_time is None:  # one clock for the features and the exclusions
            ctx = dataclasses.replace(ctx, request_time=int(time.time()))
        assert ctx.request_time is not None
        features = encode_request(ctx, self.vocabs, self.config.features)
        excluded = list(exclude_ids)
        if exclude_watched:
            excluded.extend(watched_before(ctx, ctx.request_time))
        excluded_rows = np.unique(self._catalog.rows(excluded))  # sorted, for in_sorted
        return self._score(
            features,
            excluded_rows,
            ctx.unknown_videos,
            used_profile,
            k,
            category,
            t0,
            time.perf_counter(),
        )

    def _score(
        self,
        features: dict[str, np.ndarray],
        excluded_rows: np.ndarray,
        unknown_videos: int,
        used_profile: bool,
        k: int,
        category: str | None,
        t0: float,
        t1: float,
    ) -> RecommendResult:
        """Tower, index (with its exact re-scoring), ranking and softmax for one query.

        ``excluded_rows``: sorted catalog rows never returned; ``t0``/``t1``: perf_counter at
        the request's start and when its features were ready (for the stage timings).
        """
        query = self._tower(features)
        t2 = time.perf_counter()
        candidates, scores, index_s = self._candidates(query, k, excluded_rows, category)
        t3 = time.perf_counter()
        rows, logits = self._rank(candidates, scores, excluded_rows, category)
        size = min(len(rows), self.options.num_candidates(k))
        rows, logits = rows[:size], logits[:size]
        probabilities = softmax(logits, self.temperature)
        t4 = time.perf_counter()
        timings = StageTimings(
            context_ms=_ms(t1 - t0),
            query_tower_ms=_ms(t2 - t1),
            index_ms=_ms(index_s),
            rescoring_ms=_ms(t4 - t3 + (t3 - t2 - index_s)),
            total_ms=_ms(t4 - t0),
        )
        return RecommendResult(
            rows=rows[:k],
            logits=logits[:k],
            probabilities=probabilities[:k],
            catalog=self._catalog,
            model_name=self.name,
            model_version=self.version,
            num_candidates_scored=size,
            unknown_videos=unknown_videos,
            used_profile=used_profile,
            timings=timings,
        )

    def _candidates(
        self, query: np.ndarray, k: int, excluded_rows: np.ndarray, category: str | None
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Candidate rows, their exact logits, and the seconds spent in the index.

        Asks the index for C + |excluded| (C / category share with a category filter),
        doubling while the filters leave fewer than C; a category smaller than that is
        scanned exactly instead (every one of its videos is a candidate).
        """
        num_items = self.num_items
        wanted = self.options.num_candidates(k)
        fetch = wanted + len(excluded_rows)
        in_category: np.ndarray | None = None
        code = -1
        if category is not None:
            in_category = self._catalog.category_rows.get(category)
            if in_category is None or len(in_category) == 0:
                return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32), 0.0
            code = self._catalog.category_names.index(category)
            fetch = math.ceil(wanted * num_items / len(in_category)) + len(excluded_rows)
            if len(in_category) <= fetch:
                logits = np.take(self.embeddings, in_category, axis=0) @ query
                return in_category, np.asarray(logits, dtype=np.float32), 0.0
        spent = 0.0
        fetch = min(fetch, num_items)
        while True:
            t = time.perf_counter()
            rows, logits = self._index_search(query, fetch)
            spent += time.perf_counter() - t
            if fetch >= num_items:
                return rows, logits, spent
            if in_category is None and len(rows) >= wanted + len(excluded_rows):
                return rows, logits, spent  # whatever the exclusions remove, C remain
            eligible = ~in_sorted(rows, excluded_rows)
            if in_category is not None:
                eligible &= self._catalog.category_code[rows] == code
            if int(eligible.sum()) >= wanted:
                return rows, logits, spent
            fetch = min(num_items, 2 * fetch)

    def _index_search(self, query: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """Catalog rows of the index's top ``fetch`` for ``query: [d]`` and their logits.

        The index's scores are exact dot products (its contract, and :meth:`probe` checks
        them against ``item_embeddings.npy``): ScaNN re-scores its candidates in float32.
        """
        positions, scores = self.index.search_rows(query, fetch, **self._search_overrides)
        rows = self._catalog_row_at[positions]
        if len(rows) and rows.min() < 0:
            raise RuntimeError(f"the index returned ids not in {ITEMS_FILE}")
        return rows, np.asarray(scores, dtype=np.float32)

    def _rank(
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
            code = self._catalog.category_names.index(category)
            in_category = self._catalog.category_code[rows] == code
            keep = in_category if keep is None else keep & in_category
        if keep is not None:
            rows, logits = rows[keep], logits[keep]
        steps = np.diff(logits)
        if len(steps) and not (steps < 0).all():  # unsorted, or ties to put in catalog order
            order = np.lexsort((rows, -logits))
            rows, logits = rows[order], logits[order]
        return rows, logits

    def similar_items(self, item_id: str, k: int) -> tuple[SimilarItem, ...]:
        """The ``k`` videos nearest to ``item_id`` by candidate-embedding dot product."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.options.max_k:
            raise ValueError(f"k must be an integer in 1..{self.options.max_k}, got {k!r}")
        row = self._catalog.row_of.get(item_id)
        if row is None:
            raise UnknownItemError(
                f"item_id {item_id!r} is not in the catalog of model {self.name}/{self.version}"
            )
        vector = np.asarray(self.embeddings[row], dtype=np.float32)
        fetch = min(self.num_items, k + 1)
        rows, scores = self._index_search(vector, fetch)
        other = rows != row
        rows, scores = self._rank(rows[other], scores[other], self._no_rows, None)
        rows, scores = rows[:k], scores[:k]
        ids_out, titles, categories = self._catalog.describe(rows)
        return tuple(
            SimilarItem(i, t, c, float(s))
            for i, t, c, s in zip(ids_out, titles, categories, scores, strict=True)
        )

    def info(self) -> ModelInfo:
        """The served model's identity and shape."""
        return ModelInfo(
            model_name=self.name,
            model_version=self.version,
            created_at=self.manifest.created_at,
            loaded_at=self.loaded_at,
            embedding_dim=int(self.embeddings.shape[1]),
            num_items=self.num_items,
            num_profiles=0 if self.profiles is None else len(self.profiles),
            temperature=self.temperature,
            index_kind=self.index.kind,
            index_config=self.index.config.to_dict(),
            data_fingerprint=str(self.manifest.data.get("fingerprint", "")),
            metrics=dict(self.manifest.metrics),
            artifact_path=str(self.path),
        )


def _read_manifest_only(path: Path) -> Manifest:
    from recsys.artifacts import read_manifest

    return read_manifest(path)


def _tower_probes(vocabs: Vocabularies, config: Config) -> list[dict[str, np.ndarray]]:
    """Query features that exercise every input of the tower: empty, typical, a batch."""
    now = int(time.time())
    known = vocabs.items.values[:60]
    contexts = [
        RequestContext(request_time=now),
        RequestContext(
            watch_history=known,
            watch_times=[now - 3600 * (len(known) - i) for i in range(len(known))],
            searches=["probe query", *vocabs.tokens.values[:12]],
            search_times=[now - 7200] + [now - 60 * (13 - i) for i in range(12)],
            country=next(iter(vocabs.countries.values), None),
            region=next(iter(vocabs.regions.values), None),
            age=37,
            gender=next(iter(vocabs.genders.values), None),
            request_time=now,
        ),
        RequestContext(watch_history=known[:3], searches=["x"], age=19, request_time=now),
    ]
    probes = [encode_request(ctx, vocabs, config.features) for ctx in contexts]
    batch = {name: np.concatenate([p[name] for p in probes]) for name in probes[0]}
    return [*probes, batch]

"""Serving-time recommendation: query tower, candidate index, exact re-scoring and softmax.

:class:`Recommender` loads one artifact version (checksums, vocabularies, query SavedModel,
index, item embeddings, user profiles), checks it with a probe query, and answers
``recommend`` / ``similar_items`` / ``info`` from any number of threads. The gRPC servicer
is a thin layer over it, so tests and notebooks get exactly what the service returns.

:mod:`recsys.inference.loading` reads a version's files; :mod:`recsys.inference.retrieval` searches
the
index and ranks. A request's query features come from
:func:`recsys.features.context.encode_request`,
the code that built the training contexts; a user_id request served from its stored profile
takes the same features from :class:`~recsys.inference.profile_features.EncodedProfiles` (encoded
once
at load). The query embedding's dot product with a video's candidate embedding is the softmax
logit (Covington et al. 2016): the index retrieves candidates and re-scores them exactly
(ScaNN's reordering step computes float32 dot products with the stored embeddings; the load
probe checks them against ``item_embeddings.npy``), they are filtered, and the softmax at the
model's temperature over the scored set gives each probability (see the ``.proto``).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.artifact.layout import CANDIDATE_MODEL_DIR, CONFIG_FILE, EMBEDDINGS_FILE
from recsys.artifact.profiles import Profiles
from recsys.artifact.settings import read_settings
from recsys.artifact.versions import Manifest
from recsys.config import Config
from recsys.features.context import RequestContext, encode_request
from recsys.features.vocab import Vocabularies
from recsys.index.base import Index
from recsys.inference.candidate_embedder import STRING_FEATURES, CandidateEmbedder
from recsys.inference.freshness import AgedCatalog
from recsys.inference.live_videos import LiveVideos
from recsys.inference.loading import read_model_files
from recsys.inference.profile_features import EncodedProfiles, ProfileQuery
from recsys.inference.query_tower import QueryTower, QueryTowerBatcher
from recsys.inference.request import (
    LiveCatalogUnavailableError,
    ModelInfo,
    ModelLoadError,
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
from recsys.inference.retrieval import Retriever
from recsys.inference.served_catalog import ServedCatalog
from recsys.live.catalog import LiveCatalogStore, LiveVideo
from recsys.live.profiles import LiveProfile, merge_profile

log = logging.getLogger(__name__)


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
        aged: AgedCatalog | None = None,
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
        # The Lite tower runs one query at a time: stacking queued queries would only be split
        # again row by row, so it gets batches of one (the batcher still orders the callers).
        batch = options.max_batch if query_tower.runtime == "savedmodel" else 1
        self._tower = QueryTowerBatcher(query_tower, batch)
        self.aged = aged
        self.live: LiveVideos | None = None
        self._retriever = Retriever(
            index, catalog, embeddings, options.leaves_to_search, options.reorder_k, aged
        )
        if encoded_profiles is None and profiles is not None:
            encoded_profiles = EncodedProfiles(
                profiles, vocabs, config.features, catalog.rows_or_missing
            )
        self._encoded_profiles = encoded_profiles
        self._no_rows = np.empty(0, dtype=np.int64)
        self.loaded_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def with_options(self, options: RecommenderOptions) -> Recommender:
        """The same loaded model served with other options (shares every loaded part, the
        live catalog included)."""
        model = Recommender(
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
            self.aged,
        )
        # Index positions -> catalog rows as mapped at load (removed ids have left row_of since).
        model._retriever.share_rows(self._retriever)
        if self.live is not None:
            model.live = self.live
            self.live.subscribe(model._retriever.serve_live)
        return model

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
        live_catalog: Path | None = None,
    ) -> Recommender:
        """Load and check a version folder; ModelLoadError saying what is wrong otherwise.

        Verifies every file's sha256 against the manifest (unless ``verify`` is False), then
        runs a probe query through every stage. ``live_catalog``: the live catalog file
        (:func:`recsys.live.catalog.catalog_path`) whose additions and removals are served
        too (None: the export's catalog only).
        """

        path = Path(version_dir)
        options = options or RecommenderOptions()
        started = time.perf_counter()
        files = read_model_files(path, options, verify)
        model = cls(
            path,
            files.manifest,
            files.config,
            files.vocabs,
            files.tower,
            files.index,
            files.catalog,
            files.embeddings,
            files.profiles,
            options,
            aged=files.aged,
        )
        model.probe()
        if live_catalog is not None:
            try:
                store = LiveCatalogStore(live_catalog)
            except (OSError, sqlite3.Error) as exc:  # e.g. the artifacts on a read-only volume
                log.warning(
                    "live catalog %s cannot be opened (%s): serving the export's catalog; "
                    "AddVideos and RemoveVideos are refused",
                    live_catalog,
                    exc,
                )
            else:
                model.attach_live(store)
        log.info(
            "loaded model %s/%s (%d items, dim %d, %s index, %s query tower, %d profiles) "
            "in %.1f s",
            model.name,
            model.version,
            model.num_items,
            files.embeddings.shape[1],
            files.index.kind,
            files.tower.runtime,
            0 if files.profiles is None else len(files.profiles),
            time.perf_counter() - started,
        )
        return model

    # ------------------------------------------------------------------ live catalog

    def attach_live(self, store: LiveCatalogStore) -> None:
        """Serve ``store``'s additions and removals too, applying those logged so far."""
        settings = read_settings(self.path / CONFIG_FILE)
        candidate_model = self.path / CANDIDATE_MODEL_DIR
        content_dim = settings.content_dim

        def load_embedder() -> CandidateEmbedder:
            none = np.zeros(0, dtype=object)
            strings = dict.fromkeys(STRING_FEATURES, none)
            content = None if content_dim is None else np.zeros((0, content_dim), np.float32)
            return CandidateEmbedder(candidate_model, strings, np.zeros(0, np.int64), content)

        live = LiveVideos(
            store,
            f"{self.name}/{self.version}",
            self._catalog,
            load_embedder,
            content_dim,
            settings.reference_time,
            self.aged is not None,
            int(self.embeddings.shape[1]),
            self._retriever.serve_live,
            int(self.manifest.data.get("live_catalog_seq", 0) or 0),
        )
        applied = live.refresh()
        self.live = live
        log.info("live catalog %s: %d changes applied", store.path, applied)

    def add_videos(self, videos: Sequence[LiveVideo]) -> int:
        """Embed, log durably and serve ``videos``; ValueError names a bad video and field."""
        if self.live is None:
            raise LiveCatalogUnavailableError("this server has no live catalog")
        return self.live.add(videos)

    def remove_videos(self, item_ids: Sequence[str]) -> int:
        """Log durably and stop serving ``item_ids``; ValueError names unknown ones."""
        if self.live is None:
            raise LiveCatalogUnavailableError("this server has no live catalog")
        return self.live.remove(item_ids)

    def refresh_live(self) -> int:
        """Apply the live catalog's changes logged by other processes; how many."""
        return 0 if self.live is None else self.live.refresh()

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
            self._probe_live_path(self.profiles.user_id_at(0), now, k)
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
            rows, scores = self._retriever.search(query, k)
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
        self._probe_agree(fast, slow, f"the encoded profile of user {user_id!r}", "its context")

    def _probe_agree(
        self, fast: RecommendResult, slow: RecommendResult, what: str, of: str
    ) -> None:
        """ModelLoadError unless two paths recommend the same videos with the same logits."""
        if (
            not np.array_equal(fast.rows, slow.rows)
            or not np.allclose(fast.logits, slow.logits, rtol=1e-5, atol=1e-6)
            or fast.unknown_videos != slow.unknown_videos
        ):
            raise ModelLoadError(
                f"{self.path}: {what} recommends differently from {of} (rows {fast.rows[:5]} "
                f"vs {slow.rows[:5]})"
            )

    def _probe_live_path(self, user_id: str, now: int, k: int) -> None:
        """Live events appended to the encoded profile must give what the merged context gives."""
        first = str(self._catalog.ids[0])
        live = LiveProfile(watches=((now - 1, first),), searches=((now - 1, "probe search"),))
        fast = self.recommend(RequestContext(request_time=now), user_id, k, live=live)
        profile = self.profiles.context(user_id) if self.profiles else None
        merged = merge_profile(profile, live)
        merged.request_time = now
        slow = self._recommend(merged, True, k, True, (), None)
        what = f"the encoded profile of {user_id!r} with live events appended"
        self._probe_agree(fast, slow, what, "the merged context")

    # ------------------------------------------------------------------ requests

    def recommend(
        self,
        ctx: RequestContext | None,
        user_id: str | None,
        k: int,
        exclude_watched: bool = True,
        exclude_ids: Sequence[str] = (),
        category: str | None = None,
        live: LiveProfile | None = None,
    ) -> RecommendResult:
        """The ``k`` videos most likely watched next (see the ``.proto`` for the semantics).

        ``user_id`` alone: the context is the user's stored profile, with the events of
        ``live`` (the profile store's, recorded since the export) merged in; with ``ctx`` too,
        the fields ``ctx`` sets win. Raises ValueError (naming the field) for ``k`` outside
        ``1..max_k`` or no context at all, UnknownUserError for a ``user_id`` nothing is
        known of, without context.
        """
        started = time.perf_counter()
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.options.max_k:
            raise ValueError(f"k must be an integer in 1..{self.options.max_k}, got {k!r}")
        if user_id and live is not None and not live.empty:
            return self._recommend_live(
                ctx, user_id, live, k, exclude_watched, exclude_ids, category, started
            )
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
                moment = _moment(ctx)
                query = encoded.query(row, moment, ctx)
                return self._score_query(
                    query, moment, exclude_watched, exclude_ids, k, category, started
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

    def _recommend_live(
        self,
        ctx: RequestContext | None,
        user_id: str,
        live: LiveProfile,
        k: int,
        exclude_watched: bool,
        exclude_ids: Sequence[str],
        category: str | None,
        started: float,
    ) -> RecommendResult:
        """A user_id request with live events: the stored profile, merged, then ``ctx``'s fields.

        When the live events all follow the stored ones (recorded after the export, the usual
        case) and ``ctx`` sends no history, they are appended to the profile encoded at load
        (only the live events are encoded per call); otherwise the raw profiles are merged
        and encoded as a request's context. The load probe checks that both agree.
        """
        encoded = self._encoded_profiles
        if encoded is not None and (ctx is None or not (ctx.watch_history or ctx.searches)):
            events = encoded.encode_live(live, self._catalog.rows_or_missing)
            row = encoded.profiles.row_of(user_id)
            if encoded.follows(row, events):
                moment = _moment(ctx)
                query = encoded.query_live(row, moment, events, _demographics(ctx, live))
                result = self._score_query(
                    query, moment, exclude_watched, exclude_ids, k, category, started
                )
                return dataclasses.replace(result, live_events=live.num_events)
        base = self.profiles.context(user_id) if self.profiles is not None else None
        merged = merge_context(merge_profile(base, live), ctx)
        result = self._recommend(merged, True, k, exclude_watched, exclude_ids, category, started)
        return dataclasses.replace(result, live_events=live.num_events)

    def _score_query(
        self,
        query: ProfileQuery,
        moment: int,
        exclude_watched: bool,
        exclude_ids: Sequence[str],
        k: int,
        category: str | None,
        started: float,
    ) -> RecommendResult:
        """A stored profile's query at ``moment`` (features ready) scored with its exclusions."""
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
            moment,
            started,
            time.perf_counter(),
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
            ctx.request_time,
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
        request_time: int,
        t0: float,
        t1: float,
    ) -> RecommendResult:
        """Tower, index (with its exact re-scoring), ranking and softmax for one query.

        ``excluded_rows``: sorted catalog rows never returned; ``request_time``: the moment
        upload ages are taken at; ``t0``/``t1``: perf_counter at the request's start and when
        its features were ready (for the stage timings).
        """
        query = self._tower(features)
        t2 = time.perf_counter()
        candidates, scores, index_s = self._retriever.candidates(
            query, self.options.num_candidates(k), excluded_rows, category, request_time
        )
        t3 = time.perf_counter()
        rows, logits = self._retriever.rank(candidates, scores, excluded_rows, category)
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

    def similar_items(self, item_id: str, k: int) -> tuple[SimilarItem, ...]:
        """The ``k`` videos nearest to ``item_id`` by candidate-embedding dot product."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.options.max_k:
            raise ValueError(f"k must be an integer in 1..{self.options.max_k}, got {k!r}")
        row = self._catalog.row_of.get(item_id)
        if row is None:
            raise UnknownItemError(
                f"item_id {item_id!r} is not in the catalog of model {self.name}/{self.version}"
            )
        rows, scores = self._retriever.similar(row, k)
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


def _moment(ctx: RequestContext | None) -> int:
    """The request's moment: its request_time, else now (Unix s)."""
    return int(time.time()) if ctx is None or ctx.request_time is None else int(ctx.request_time)


def _demographics(ctx: RequestContext | None, live: LiveProfile) -> RequestContext:
    """The demographic fields replacing the stored profile's: the request's, else the live ones."""
    stored = live.demographics

    def pick(name: str) -> Any:
        value = None if ctx is None else getattr(ctx, name)
        return getattr(stored, name) if value is None and stored is not None else value

    return RequestContext(
        country=pick("country"), region=pick("region"), age=pick("age"), gender=pick("gender")
    )

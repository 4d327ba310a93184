"""What a recommendation request and its answer are: options, results, errors, contexts.

The types :class:`~recsys.inference.recommender.Recommender` takes and returns (the gRPC servicer
maps
them to and from the proto), and the request-level rules: which fields of an explicit
context replace a stored profile's, which watches count as watched at a moment, and the
softmax that turns the scored candidates' logits into probabilities.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from recsys.features.context import RequestContext
from recsys.inference.query_tower import RUNTIMES, Runtime
from recsys.inference.served_catalog import ServedCatalog

MAX_K = 1000


class ModelLoadError(Exception):
    """An artifact version cannot be served: names the file and what is wrong."""


class UnknownUserError(LookupError):
    """A request named a user without a profile and gave no context."""


class LiveCatalogUnavailableError(Exception):
    """Videos were to be added or removed, but the model serves no live catalog."""


class UnknownItemError(LookupError):
    """A request named a video that is not in the model's catalog."""


@dataclass(frozen=True)
class RecommenderOptions:
    """Serving knobs; the defaults are what the benchmark measured.

    The scored set's target size is ``C = max(overfetch * k, min_candidates)``; the index is
    asked for C plus the number of excluded videos, more while filters leave fewer than C.
    ``leaves_to_search`` / ``reorder_k`` override the ScaNN index's tuned defaults (None:
    keep them). ``max_batch`` caps how many concurrent queries share one call of the SavedModel
    tower (the Lite tower takes one query per call).
    ``tower_runtime``: see :func:`recsys.inference.query_tower.load_query_tower` ("auto": TensorFlow
    Lite when it gives the SavedModel's embeddings, else the SavedModel).
    """

    overfetch: int = 4
    min_candidates: int = 100
    max_k: int = MAX_K
    leaves_to_search: int | None = None
    reorder_k: int | None = None
    max_batch: int = 32
    tower_runtime: Runtime = "auto"

    def __post_init__(self) -> None:
        for name in ("overfetch", "min_candidates", "max_k", "max_batch"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RecommenderOptions.{name} must be positive")
        if self.tower_runtime not in RUNTIMES:
            raise ValueError(
                f"RecommenderOptions.tower_runtime must be one of {RUNTIMES}, "
                f"got {self.tower_runtime!r}"
            )

    def num_candidates(self, k: int) -> int:
        """C, the target size of the scored set for a request of ``k`` items."""
        return max(self.overfetch * k, self.min_candidates)


class RecommendedItem(NamedTuple):
    """One recommended video: ``logit`` = q·v, ``probability`` over the scored set.

    A NamedTuple rather than a dataclass: a reply holds up to 1000 of them, and a tuple is
    built several times faster.
    """

    item_id: str
    title: str
    category: str
    logit: float
    probability: float


@dataclass(frozen=True)
class StageTimings:
    """Milliseconds spent per stage of one request (inside the library)."""

    context_ms: float = 0.0
    query_tower_ms: float = 0.0
    index_ms: float = 0.0
    rescoring_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True, eq=False)
class RecommendResult:
    """Ranked videos (best first) and how they were obtained.

    The ranking is held as arrays (``rows`` into ``catalog``, ``logits``, ``probabilities``);
    ``items`` builds the Python objects on first use, so a server that encodes its replies
    straight from the arrays never pays for them.
    """

    rows: np.ndarray  # int64 [n]: catalog rows
    logits: np.ndarray  # float32 [n]: q·v
    probabilities: np.ndarray  # float64 [n]: softmax over the scored set (see the .proto)
    catalog: ServedCatalog
    model_name: str
    model_version: str
    num_candidates_scored: int
    unknown_videos: int
    used_profile: bool
    timings: StageTimings
    live_events: int = 0  # events of the user's live profile merged into the context

    @cached_property
    def items(self) -> tuple[RecommendedItem, ...]:
        """The ranked videos as :class:`RecommendedItem` tuples."""
        ids, titles, categories = self.catalog.describe(self.rows)
        return tuple(
            map(
                RecommendedItem,
                ids,
                titles,
                categories,
                self.logits.tolist(),
                self.probabilities.tolist(),
            )
        )


class SimilarItem(NamedTuple):
    """A video near another: ``score`` is the dot product of their candidate embeddings."""

    item_id: str
    title: str
    category: str
    score: float


@dataclass(frozen=True)
class ModelInfo:
    """What is being served."""

    model_name: str
    model_version: str
    created_at: str
    loaded_at: str
    embedding_dim: int
    num_items: int
    num_profiles: int
    temperature: float
    index_kind: str
    index_config: dict[str, Any]
    data_fingerprint: str
    metrics: dict[str, Any]
    artifact_path: str


def has_context(ctx: RequestContext | None) -> bool:
    """Whether ``ctx`` says anything about the user (request_time alone does not)."""
    if ctx is None:
        return False
    return bool(ctx.watch_history or ctx.searches) or any(
        v is not None for v in (ctx.country, ctx.region, ctx.age, ctx.gender)
    )


def merge_context(profile: RequestContext | None, ctx: RequestContext | None) -> RequestContext:
    """The profile with every field the explicit ``ctx`` sets replacing the profile's.

    A non-empty ``watch_history`` replaces the profile's history with its times (likewise
    ``searches``); scalars replace when not None.
    """
    base = profile or RequestContext()
    if ctx is None:
        return dataclasses.replace(base)
    history = bool(ctx.watch_history)
    searches = bool(ctx.searches)
    return RequestContext(
        watch_history=ctx.watch_history if history else base.watch_history,
        watch_times=ctx.watch_times if history else base.watch_times,
        searches=ctx.searches if searches else base.searches,
        search_times=ctx.search_times if searches else base.search_times,
        country=ctx.country if ctx.country is not None else base.country,
        region=ctx.region if ctx.region is not None else base.region,
        age=ctx.age if ctx.age is not None else base.age,
        gender=ctx.gender if ctx.gender is not None else base.gender,
        request_time=ctx.request_time if ctx.request_time is not None else base.request_time,
    )


def watched_before(ctx: RequestContext, moment: int) -> list[str]:
    """History ids that count at ``moment`` (all without times; else strictly before it)."""
    if ctx.watch_times is None:
        return list(ctx.watch_history)
    return [v for v, t in zip(ctx.watch_history, ctx.watch_times, strict=True) if t < moment]


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``exp(logits / T)`` normalised over ``logits: [n]``; float64, stable for any T > 0."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    if scaled.size == 0:
        return scaled
    weights = np.exp(scaled - scaled.max())
    return weights / weights.sum()

"""The candidate index interface: build config, search result, load errors, the `Index` ABC.

Building or loading an index by kind is `recsys.index.registry`'s: it imports the
implementations, which import this module, so the arrows point one way.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, Self

import numpy as np

IndexKind = Literal["exact", "scann", "auto"]
ScoringKind = Literal["ah", "brute_force"]
IdsLike = Sequence[str] | np.ndarray  # item ids: [n] str

_KINDS = ("exact", "scann", "auto")
_SCORINGS = ("ah", "brute_force")

# ScaNN's advice: brute force below ~20k items; about sqrt(n) leaves, at most a few thousand;
# search a few per cent of the leaves; reorder a few hundred candidates exactly.
EXACT_BELOW_NUM_ITEMS = 20_000
MAX_NUM_LEAVES = 2_000
LEAVES_SEARCHED_FRACTION = 0.05
DEFAULT_REORDER_K = 250
DEFAULT_TRAINING_SAMPLE_SIZE = 100_000


class IndexLoadError(Exception):
    """An index directory cannot be loaded: names the file and what is wrong with it."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"cannot load index: {self.path}: {problem}")


class SearchResult(NamedTuple):
    """Top-k items, best first: `ids: [k]` or `[num_queries, k]` str, `scores` likewise float32."""

    ids: np.ndarray
    scores: np.ndarray


def _check_config_int(value: object, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"IndexConfig.{name} must be a positive int or None: got {value!r}")


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """How to build an index; None fields are chosen from the corpus size by `resolve`.

    kind: "exact" (numpy brute force), "scann", or "auto" (exact below 20k items).
    scoring: ScaNN only; "ah" is tree + asymmetric hashing + exact reordering,
        "brute_force" is ScaNN's exact brute force (no tree, no quantisation).
    num_leaves / num_leaves_to_search: the tree's partitions and how many a query visits.
    reorder_k: candidates rescored exactly after asymmetric hashing (pre-reorder neighbours).
    anisotropic_quantization_threshold: ScaNN's AVQ threshold; None turns it off.
    dims_per_block: asymmetric hashing's dimensions per 4-bit code. 1 (16 bytes per video
        per 32 dims) scores closely enough that far fewer candidates need exact rescoring
        for the same recall than with 2 (half the bytes); BENCHMARKS.md measures both.
    """

    kind: IndexKind = "auto"
    scoring: ScoringKind = "ah"
    num_leaves: int | None = None
    num_leaves_to_search: int | None = None
    reorder_k: int | None = None
    anisotropic_quantization_threshold: float | None = 0.2
    dims_per_block: int = 1
    training_sample_size: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"IndexConfig.kind must be one of {_KINDS}: got {self.kind!r}")
        if self.scoring not in _SCORINGS:
            raise ValueError(
                f"IndexConfig.scoring must be one of {_SCORINGS}: got {self.scoring!r}"
            )
        for name in ("num_leaves", "num_leaves_to_search", "reorder_k", "training_sample_size"):
            _check_config_int(getattr(self, name), name)
        _check_config_int(self.dims_per_block, "dims_per_block")
        threshold = self.anisotropic_quantization_threshold
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not math.isfinite(threshold)
            or threshold <= 0
        ):
            raise ValueError(
                "IndexConfig.anisotropic_quantization_threshold must be a positive finite "
                f"number or None: got {threshold!r}"
            )
        if (
            self.num_leaves is not None
            and self.num_leaves_to_search is not None
            and self.num_leaves_to_search > self.num_leaves
        ):
            raise ValueError(
                f"IndexConfig.num_leaves_to_search ({self.num_leaves_to_search}) must not "
                f"exceed num_leaves ({self.num_leaves})"
            )
        if self.scoring == "brute_force" and (
            self.num_leaves is not None
            or self.num_leaves_to_search is not None
            or self.reorder_k is not None
        ):
            raise ValueError(
                "IndexConfig.scoring='brute_force' has no tree and no reordering: leave "
                "num_leaves, num_leaves_to_search and reorder_k as None"
            )

    @classmethod
    def for_corpus_size(cls, num_items: int) -> IndexConfig:
        """ScaNN's advice for `num_items`: exact when small, else tree + AH + exact reorder."""
        return cls().resolve(num_items)

    def resolve(self, num_items: int) -> IndexConfig:
        """Return a copy with kind chosen ("auto" gone) and None tree fields set for `num_items`."""
        if num_items <= 0:
            raise ValueError(f"num_items must be positive: got {num_items}")
        kind = self.kind
        if kind == "auto":
            kind = "exact" if num_items < EXACT_BELOW_NUM_ITEMS else "scann"
        if kind == "exact" or self.scoring == "brute_force":
            return dataclasses.replace(self, kind=kind)
        num_leaves = self.num_leaves or max(1, min(MAX_NUM_LEAVES, round(math.sqrt(num_items))))
        leaves_to_search = self.num_leaves_to_search or max(
            1, math.ceil(LEAVES_SEARCHED_FRACTION * num_leaves)
        )
        return dataclasses.replace(
            self,
            kind=kind,
            num_leaves=num_leaves,
            num_leaves_to_search=min(leaves_to_search, num_leaves),
            reorder_k=self.reorder_k or DEFAULT_REORDER_K,
            training_sample_size=self.training_sample_size or DEFAULT_TRAINING_SAMPLE_SIZE,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> IndexConfig:
        """Build a config from `to_dict` output; unknown keys are an error."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"IndexConfig has no field(s) {unknown}")
        return cls(**values)


class Index(abc.ABC):
    """Maximum inner product search over item embeddings with string ids.

    Scores are exact dot products; results are sorted best first. `add` inserts or replaces
    (an existing id gets the new vector), `remove` deletes; both work without a rebuild.
    """

    kind: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def build(
        cls,
        ids: IdsLike,
        embeddings: np.ndarray,
        config: IndexConfig | None = None,
    ) -> Self:
        """Build from `ids: [num_items]` and `embeddings: [num_items, dim]`."""

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """The embedding dimension."""

    @property
    @abc.abstractmethod
    def config(self) -> IndexConfig:
        """The resolved config the index was built with (and tuned to)."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of live (searchable) items."""

    @abc.abstractmethod
    def __contains__(self, item_id: object) -> bool:
        """Whether `item_id` is a live item."""

    @abc.abstractmethod
    def search_batch(self, queries: np.ndarray, k: int) -> SearchResult:
        """Top-k for `queries: [num_queries, dim]`: ids and scores `[num_queries, min(k, len)]`."""

    def search(self, query: np.ndarray, k: int) -> SearchResult:
        """Top-k for `query: [dim]`: ids and scores `[min(k, len)]`, best first."""
        rows, scores = self.search_rows(query, k)
        return SearchResult(self.row_ids[rows], scores)

    @property
    @abc.abstractmethod
    def row_ids(self) -> np.ndarray:
        """The id at every position `search_rows` may return: `[num_rows]` str.

        Valid until the index is next changed (`add`, `remove`, `compact`): a reader that
        maps positions to its own rows once (a server over a loaded index) must not mutate.
        """

    @abc.abstractmethod
    def search_rows(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`search` as positions into `row_ids` (int64 `[min(k, len)]`) and scores.

        Saves a string per result for callers that map results to their own arrays.
        """

    @abc.abstractmethod
    def add(self, ids: IdsLike, embeddings: np.ndarray) -> None:
        """Insert `ids: [n]` with `embeddings: [n, dim]`; an existing id is replaced."""

    @abc.abstractmethod
    def remove(self, ids: IdsLike) -> None:
        """Delete `ids`; every id must be live."""

    @abc.abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write the index to `directory` (replaced whole, via a temporary sibling)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: str | Path, *, expected_dim: int | None = None) -> Self:
        """Read an index written by `save`; raise IndexLoadError when anything is wrong."""

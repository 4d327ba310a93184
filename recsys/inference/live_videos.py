"""Videos added or removed since the export, served by a loaded model without a new version.

:class:`LiveVideos` keeps a served model in step with the live catalog
(:class:`recsys.live.catalog.LiveCatalogStore`): an addition is checked, embedded by the
artifact's candidate SavedModel (:class:`~recsys.inference.candidate_embedder.CandidateEmbedder`,
the export's own embedding path, ages at the export's reference time as ``recsys index add``
does), logged durably with its vector, and appended to the served catalog; a removal is
logged and hides the video. Other server processes pick the change up from the log
(:meth:`LiveVideos.refresh`), reusing the stored vector of their model version or embedding
the video themselves when their version has none. Retrieval searches the additions exactly
beside the index (:class:`LiveDelta`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from recsys.inference.candidate_embedder import STRING_FEATURES, CandidateEmbedder
from recsys.inference.freshness import age_independent
from recsys.inference.served_catalog import ServedCatalog
from recsys.live.catalog import Change, LiveCatalogStore, LiveVideo, check_video

log = logging.getLogger(__name__)

_NO_ROWS = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class LiveDelta:
    """What retrieval adds to the index: one immutable snapshot, replaced on every change.

    Catalog rows ``first_row + i`` are the additions; ``vectors: [m, d]`` their candidate
    vectors (with a freshness term: the age-independent ``[main, 0]``), ``upload_time: [m]``,
    ``active: [m]`` False once removed or replaced; ``removed_rows`` (sorted int64) the
    export's rows removed since.
    """

    first_row: int
    vectors: np.ndarray
    upload_time: np.ndarray
    active: np.ndarray
    removed_rows: np.ndarray

    @property
    def active_rows(self) -> np.ndarray:
        """Catalog rows of the served additions: int64 ``[a]``."""
        return self.first_row + np.flatnonzero(self.active)


def empty_delta(first_row: int, dim: int) -> LiveDelta:
    """No additions, no removals."""
    return LiveDelta(
        first_row,
        np.zeros((0, dim), np.float32),
        np.zeros(0, np.int64),
        np.zeros(0, bool),
        _NO_ROWS,
    )


class LiveVideos:
    """A loaded model's live additions and removals; thread-safe (one writer at a time)."""

    def __init__(
        self,
        store: LiveCatalogStore,
        model_label: str,
        catalog: ServedCatalog,
        embedder: Callable[[], CandidateEmbedder],
        content_dim: int | None,
        reference_time: int,
        age_independent_vectors: bool,
        dim: int,
        publish: Callable[[LiveDelta], None],
        folded_seq: int = 0,
    ) -> None:
        """Serve ``store``'s changes over ``catalog`` (the export's rows, extended in place).

        ``embedder`` loads the candidate SavedModel (called once, when a video needs it);
        ``age_independent_vectors``: the model has a freshness term, so vectors are stored
        as ``[main, 0]``; ``publish`` hands each new :class:`LiveDelta` to retrieval;
        ``folded_seq``: the last change the export already holds (later ones are applied).
        """
        self._subscribers = [publish]
        self.store = store
        self.model_label = model_label
        self.catalog = catalog
        self._load_embedder = embedder
        self._embedder: CandidateEmbedder | None = None
        self.content_dim = content_dim
        self.reference_time = reference_time
        self._age_independent = age_independent_vectors
        self._lock = threading.Lock()
        self._seq = folded_seq
        self._publish(empty_delta(len(catalog.ids), dim))

    def _publish(self, delta: LiveDelta) -> None:
        self.delta = delta  # the additions and removals served now
        for publish in self._subscribers:
            publish(delta)

    def subscribe(self, publish: Callable[[LiveDelta], None]) -> None:
        """Hand ``publish`` the current :class:`LiveDelta` and every later one."""
        with self._lock:
            self._subscribers.append(publish)
            publish(self.delta)

    # ------------------------------------------------------------------ embedding

    def embed(self, videos: Sequence[LiveVideo]) -> np.ndarray:
        """Candidate vectors ``[n, d]`` of ``videos`` (see :class:`LiveDelta`)."""
        if self._embedder is None:
            self._embedder = self._load_embedder()
        # The raw string features as an items file holds them ("" for unknown).
        strings = {
            name: np.array([getattr(v, name) for v in videos], dtype=object)
            for name in STRING_FEATURES
        }
        content = None
        if self.content_dim is not None:
            content = np.zeros((len(videos), self.content_dim), np.float32)
            for i, video in enumerate(videos):
                if video.content is not None:  # none given: the tower sees zeros
                    content[i] = video.content
        upload = np.array([v.upload_time for v in videos], dtype=np.int64)
        vectors = self._embedder.with_videos(strings, upload, content)(self.reference_time)
        return age_independent(vectors) if self._age_independent else vectors

    # ------------------------------------------------------------------ changes

    def add(self, videos: Sequence[LiveVideo]) -> int:
        """Check, embed, log durably and serve ``videos``; the number added.

        LiveVideoError (a ValueError) names the first bad video and field; nothing is added
        then. An id already served is replaced.
        """
        now = int(time.time())
        checked = [check_video(v, self.content_dim, now) for v in videos]
        ids = [v.item_id for v in checked]
        if len(set(ids)) != len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"videos {repeated[:5]}: item_id given more than once")
        vectors = self.embed(checked)
        self.store.add(checked, self.model_label, vectors)  # acknowledged = fsynced
        self.refresh()
        return len(checked)

    def remove(self, item_ids: Sequence[str]) -> int:
        """Log durably and stop serving ``item_ids``; the number that were served.

        Unknown ids are not logged (ValueError names them, nothing is removed then).
        """
        unknown = [i for i in item_ids if i not in self.catalog.row_of]
        if unknown:
            raise ValueError(f"videos {unknown[:5]}: item_id is not in the served catalog")
        self.store.remove(list(dict.fromkeys(item_ids)))
        self.refresh()
        return len(set(item_ids))

    def refresh(self) -> int:
        """Apply the store's changes not yet applied; the number applied."""
        with self._lock:
            changes = self.store.changes_since(self._seq, self.model_label)
            if not changes:
                return 0
            missing = [c for c in changes if c.video is not None and c.vector is None]
            vectors = {c.seq: c.vector for c in changes if c.vector is not None}
            if missing:  # logged by a replica on another model version: embed them here
                embedded = self.embed([c.video for c in missing if c.video is not None])
                self.store.store_vectors(self.model_label, [c.seq for c in missing], embedded)
                vectors.update(zip([c.seq for c in missing], embedded, strict=True))
            self._apply(changes, vectors)
            self._seq = changes[-1].seq
            return len(changes)

    def _apply(self, changes: Sequence[Change], vectors: dict[int, np.ndarray]) -> None:
        """Extend the catalog and publish a new :class:`LiveDelta` (under the lock)."""
        delta = self.delta
        active = delta.active.copy()
        removed = set(delta.removed_rows.tolist())
        added: list[LiveVideo] = []
        new_vectors: list[np.ndarray] = []
        row_of = self.catalog.row_of
        next_row = delta.first_row + len(active)
        pending: dict[str, int] = {}  # ids added in this batch -> their rows
        hidden: list[str] = []
        for change in changes:
            row = pending.get(change.item_id, row_of.get(change.item_id))
            if row is not None:  # removed, or replaced by a new addition
                if row >= delta.first_row + len(active):
                    added_index = row - delta.first_row - len(active)
                    new_vectors[added_index] = np.full_like(new_vectors[added_index], np.nan)
                elif row >= delta.first_row:
                    active[row - delta.first_row] = False
                else:
                    removed.add(row)
                pending.pop(change.item_id, None)
                hidden.append(change.item_id)
            if change.video is not None:
                pending[change.item_id] = next_row
                added.append(change.video)
                new_vectors.append(np.asarray(vectors[change.seq], np.float32))
                next_row += 1
        keep = np.array([not np.isnan(v).any() for v in new_vectors], dtype=bool)
        if added:
            self.catalog.extend(
                [v.item_id for v in added], [v.title for v in added], [v.category for v in added]
            )
        for item_id in hidden:
            if item_id not in pending:
                row_of.pop(item_id, None)
        for item_id, row in pending.items():
            row_of[item_id] = row
        stacked = np.stack(new_vectors) if new_vectors else delta.vectors[:0]
        self._publish(
            LiveDelta(
                delta.first_row,
                np.concatenate([delta.vectors, np.nan_to_num(stacked)]),
                np.concatenate([delta.upload_time, [v.upload_time for v in added]]).astype(
                    np.int64
                ),
                np.concatenate([active, keep]),
                np.array(sorted(removed), dtype=np.int64),
            )
        )
        log.info(
            "live catalog: %d additions served, %d export videos removed (seq %d)",
            int(self.delta.active.sum()),
            len(removed),
            changes[-1].seq,
        )

"""Online evaluation: the evaluation window replayed into a running service, as it is served.

The events at or after the time split's cut-off are replayed in time order. Before each
held-out watch (a seeded sample of the window's watches) the service is asked twice for
that user at that watch's time: with the live profile (the events recorded so far merged
in) and with the artifact's frozen profile alone; a hit is the watched video among the
first k. Then the event is recorded, as every other event of the window, so the next
request sees it. Recommend's own defaults apply (watched videos excluded, the served index),
so the figures are what users get.

The service is anything with :class:`OnlineService`'s two calls (the command line passes a
gRPC client), so this module needs no network code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from recsys.dataset.io import read_meta
from recsys.dataset.schema import EVENT_WATCH
from recsys.dataset.splits import Split
from recsys.live.event_files import read_events
from recsys.live.events import Demographics, Event
from recsys.logs import ProgressFn

log = logging.getLogger(__name__)

RECORD_BATCH = 1000  # events recorded per call when no held-out watch needs them sooner


@dataclass(frozen=True)
class Served:
    """One Recommend answer: the videos, best first, and whether the store was down."""

    item_ids: Sequence[str]
    store_unavailable: bool = False


class OnlineService(Protocol):
    """What the replay needs of a running service."""

    def recommend(
        self,
        user_id: str,
        k: int,
        request_time: int,
        use_live_profile: bool,
        exclude_watched: bool,
    ) -> Served | None:
        """The user's top ``k`` at ``request_time`` (None: the service knows nothing of them)."""

    def record(self, events: Sequence[Event], users: Sequence[Demographics]) -> None:
        """Record a batch in the service's profile store (durable when it returns)."""


@dataclass
class _Tally:
    ks: tuple[int, ...]
    hits: dict[int, int] = field(default_factory=dict)
    unknown: int = 0

    def add(self, served: Served | None, label: str) -> None:
        if served is None:
            self.unknown += 1
            return
        ids = list(served.item_ids)
        rank = ids.index(label) if label in ids else len(ids) + max(self.ks)
        for k in self.ks:
            self.hits[k] = self.hits.get(k, 0) + int(rank < k)


@dataclass(frozen=True)
class OnlineResult:
    """Recall@k of the live and the frozen profiles over the same held-out watches."""

    ks: tuple[int, ...]
    queries: int
    live_recall: dict[int, float]
    frozen_recall: dict[int, float]
    unknown_live: int  # NOT_FOUND answers (counted as misses)
    unknown_frozen: int
    store_unavailable: int  # live answers served without the store
    events_replayed: int
    cutoff: int
    seconds: float
    exclude_watched: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (recalls keyed by k as strings)."""
        return {
            "ks": list(self.ks),
            "queries": self.queries,
            "recall": {
                "live": {str(k): v for k, v in self.live_recall.items()},
                "frozen": {str(k): v for k, v in self.frozen_recall.items()},
            },
            "unknown_users": {"live": self.unknown_live, "frozen": self.unknown_frozen},
            "store_unavailable": self.store_unavailable,
            "events_replayed": self.events_replayed,
            "cutoff": self.cutoff,
            "seconds": round(self.seconds, 1),
            "rule": (
                "as served (served index), watched videos "
                + ("excluded (Recommend's default)" if self.exclude_watched else "not excluded")
            ),
        }


def held_out(events: Sequence[Event], max_queries: int, seed: int) -> np.ndarray:
    """Positions of the held-out watches: a seeded sample of ``max_queries``, sorted."""
    watches = np.flatnonzero([e.type == EVENT_WATCH for e in events])
    if len(watches) > max_queries:
        rng = np.random.default_rng(seed)
        watches = np.sort(rng.choice(watches, size=max_queries, replace=False))
    return watches


def replay_and_score(
    events: Sequence[Event],
    demographics: dict[str, Demographics],
    queries: np.ndarray,
    service: OnlineService,
    ks: tuple[int, ...],
    progress: ProgressFn | None = None,
    exclude_watched: bool = True,
) -> tuple[_Tally, _Tally, int]:
    """Replay ``events`` in order, scoring the watches at positions ``queries`` first.

    Events are recorded in batches; a batch is sent early when the next held-out watch's
    user has events in it, so every request sees everything before its moment.
    """
    live, frozen = _Tally(ks), _Tally(ks)
    unavailable = 0
    pending: list[Event] = []
    pending_users: set[str] = set()
    new_users: list[Demographics] = []
    introduced: set[str] = set()

    def flush() -> None:
        if pending or new_users:
            service.record(list(pending), list(new_users))
        pending.clear()
        pending_users.clear()
        new_users.clear()

    is_query = np.zeros(len(events), dtype=bool)
    is_query[queries] = True
    k = max(ks)
    done = 0
    for position, event in enumerate(events):
        if is_query[position]:
            if event.user_id in pending_users:
                flush()
            served = service.recommend(event.user_id, k, event.time, True, exclude_watched)
            unavailable += int(served is not None and served.store_unavailable)
            live.add(served, event.video_id)
            served = service.recommend(event.user_id, k, event.time, False, exclude_watched)
            frozen.add(served, event.video_id)
            done += 1
            if progress is not None:
                progress(done, len(queries))
        if event.user_id not in introduced and event.user_id in demographics:
            introduced.add(event.user_id)
            new_users.append(demographics[event.user_id])
        pending.append(event)
        pending_users.add(event.user_id)
        if len(pending) >= RECORD_BATCH:
            flush()
    flush()
    return live, frozen, unavailable


def evaluate_online(
    data: str | Path,
    service: OnlineService,
    ks: Sequence[int] = (10, 100),
    max_queries: int = 5000,
    seed: int = 0,
    cutoff: int | None = None,
    progress: ProgressFn | None = None,
    exclude_watched: bool = True,
) -> OnlineResult:
    """Replay the evaluation window of dataset ``data`` into ``service`` and score it.

    ``cutoff`` (Unix s) starts the window; default: the time split's, as training uses.
    ``exclude_watched``: Recommend's own option (True, its default: watched videos are
    never recommended, so a rewatch is a miss).
    """
    started = time.perf_counter()
    ks = tuple(sorted(set(ks)))
    if not ks or ks[0] <= 0:
        raise ValueError(f"cut-offs must be positive, got {ks}")
    if cutoff is None:
        meta = read_meta(data)
        if not meta.time_range:
            raise ValueError(f"{data}: the dataset has no events")
        cutoff = Split("time").resolve_cutoff(np.array(meta.time_range))
    source = read_events(data, after=cutoff)
    queries = held_out(source.events, max_queries, seed)
    if len(queries) == 0:
        raise ValueError(f"{data}: no watches at or after the cut-off {cutoff}")
    log.info(
        "online evaluation: replaying %d events from %d, scoring %d held-out watches",
        len(source.events),
        cutoff,
        len(queries),
    )
    live, frozen, unavailable = replay_and_score(
        source.events, source.demographics, queries, service, ks, progress, exclude_watched
    )
    n = len(queries)
    return OnlineResult(
        ks=ks,
        queries=n,
        live_recall={k: live.hits.get(k, 0) / n for k in ks},
        frozen_recall={k: frozen.hits.get(k, 0) / n for k in ks},
        unknown_live=live.unknown,
        unknown_frozen=frozen.unknown,
        store_unavailable=unavailable,
        events_replayed=len(source.events),
        cutoff=int(cutoff),
        seconds=time.perf_counter() - started,
        exclude_watched=exclude_watched,
    )

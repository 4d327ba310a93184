"""Events streamed into a service at a paced rate, with progress: ``recsys events send``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from recsys.live.event_files import EventBatch
from recsys.live.events import Demographics, Event
from recsys.logs import ProgressFn

# Records one batch; returns (events stored, exact duplicates ignored).
RecordFn = Callable[[Sequence[Event], Sequence[Demographics]], tuple[int, int]]


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay sent and what the service said of it."""

    events: int
    recorded: int
    duplicates: int
    batches: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        """Events sent per second of wall time."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def replay(
    batches: Iterable[EventBatch],
    total: int,
    record: RecordFn,
    rate: float | None = None,
    progress: ProgressFn | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplaySummary:
    """Send every batch through ``record``, at most ``rate`` events/s (None: as fast as it goes).

    Pacing is by schedule, not by gaps: event n leaves no earlier than ``n / rate`` seconds
    after the start, so a slow call is caught up rather than slowing the whole replay.
    """
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be positive events/s, got {rate}")
    started = clock()
    sent = recorded = duplicates = count = 0
    for batch in batches:
        if rate is not None:
            due = started + sent / rate
            wait = due - clock()
            if wait > 0:
                sleep(wait)
        stored, ignored = record(batch.events, batch.users)
        sent += len(batch.events)
        recorded += stored
        duplicates += ignored
        count += 1
        if progress is not None:
            progress(sent, total)
    return ReplaySummary(sent, recorded, duplicates, count, clock() - started)

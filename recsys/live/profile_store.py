"""The profile store: users' recent events, shared by every serving process, behind one interface.

Two backends, chosen by a URL (:func:`recsys.live.registry.open_profile_store`):

- embedded (the default, no URL): SQLite in WAL mode in a file beside the artifacts
  (:mod:`recsys.live.sqlite_profiles`); durable on local disk, shared by the server
  processes of one host;
- ``redis://host:port/db`` (:mod:`recsys.live.redis_profiles`): shared by every replica on
  every host.

Both keep raw ids, texts and times (never vocabulary ids), so a store outlives model
versions, trimmed to each user's last ``max_history`` watches and ``max_searches`` searches.
``record`` applies a batch whole or not at all and returns only once it is durable; an exact
duplicate (same user, time and video, or time and query) is ignored.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from recsys.live.events import Demographics, Event
from recsys.live.profiles import LiveProfile


class ProfileStoreUnavailableError(Exception):
    """The store cannot be reached now (e.g. Redis is down); the call may be retried."""


class ProfileStoreError(Exception):
    """The store's URL or files are wrong (not a transient outage)."""


@dataclass(frozen=True)
class RecordResult:
    """What a ``record`` call stored: new events, and exact duplicates ignored."""

    recorded: int
    duplicates: int
    users: int  # demographics rows written


@dataclass(frozen=True)
class Caps:
    """How much of each user's activity the store keeps (the model's context windows)."""

    max_history: int = 50
    max_searches: int = 50

    def __post_init__(self) -> None:
        if self.max_history <= 0 or self.max_searches <= 0:
            raise ValueError(f"profile store caps must be positive, got {self}")


class ProfileStore(abc.ABC):
    """Users' live events; safe to call from any number of threads."""

    #: Where the store is, for logs and GetModelInfo (no credentials).
    url: str

    @abc.abstractmethod
    def record(self, events: Sequence[Event], users: Sequence[Demographics]) -> RecordResult:
        """Store a checked batch (see :func:`recsys.live.events.check_batch`) atomically.

        Returns once the batch is durable; ProfileStoreUnavailableError when it was not stored.
        """

    @abc.abstractmethod
    def get(self, user_id: str) -> LiveProfile:
        """The user's live profile (empty when unknown); ProfileStoreUnavailableError on outage."""

    def close(self) -> None:  # noqa: B027  (optional for a backend)
        """Release connections (the store must not be used after)."""

"""The shared profile store: Redis, so every replica on every host reads the same profiles.

Per user, two sorted sets scored by time (``<prefix>:<user>:w`` watches, ``:s`` searches)
whose members are ``"<time>\\x1f<video id or query>"`` (so an exact duplicate is the same
member and ``ZADD NX`` ignores it), and a hash ``:d`` of demographics. A batch is one
``MULTI``/``EXEC`` transaction: Redis runs it whole, and replaying it (a retry after a lost
reply) changes nothing. Trimming to the caps is part of the same transaction.

When Redis cannot be reached, calls raise :class:`ProfileStoreUnavailableError` after a short
timeout and, for :data:`RETRY_AFTER_S`, at once without trying, so a Redis outage costs
serving no more than that; the first call after it tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from recsys.dataset.schema import EVENT_WATCH
from recsys.live.events import Demographics, Event
from recsys.live.profile_store import (
    Caps,
    ProfileStore,
    ProfileStoreError,
    ProfileStoreUnavailableError,
    RecordResult,
)
from recsys.live.profiles import LiveProfile, TimedValue

log = logging.getLogger(__name__)

PREFIX = "recsys:profile"
SEPARATOR = "\x1f"  # never in an id (no control characters) nor in a query
TIMEOUT_S = 0.25  # connect and per-command: a serving call must not hang on Redis
RETRY_AFTER_S = 1.0
_DEMOGRAPHICS = ("country", "region", "age", "gender")


def _member(time_s: int, value: str) -> str:
    return f"{time_s}{SEPARATOR}{value}"


def _timed(members: list[bytes]) -> tuple[TimedValue, ...]:
    out = []
    for member in members:
        time_s, _, value = member.decode().partition(SEPARATOR)
        out.append((int(time_s), value))
    return tuple(out)


def _split_prefix(url: str) -> tuple[str, str | None]:
    """``url`` without its ``prefix`` query parameter (not a redis-py option), and the prefix."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    prefix = query.pop("prefix", [None])[-1]
    rest = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
    return rest, prefix


def _redacted(url: str) -> str:
    """``url`` without a password (for logs and GetModelInfo)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisProfileStore(ProfileStore):
    """Profiles in Redis at ``url`` (``redis://host:port/db``)."""

    def __init__(self, url: str, caps: Caps, prefix: str | None = None) -> None:
        """Connect lazily (the server may start before Redis does); bad URLs fail here.

        The keys' prefix is ``prefix``, else the URL's ``?prefix=`` (several services or test
        runs sharing one Redis database), else :data:`PREFIX`.
        """
        url, url_prefix = _split_prefix(url)
        self.url = _redacted(url)
        self.caps = caps
        self.prefix = prefix or url_prefix or PREFIX
        try:
            self._redis = redis.Redis.from_url(
                url,
                socket_timeout=TIMEOUT_S,
                socket_connect_timeout=TIMEOUT_S,
                retry=Retry(NoBackoff(), 1),  # one retry: a stale pooled connection
                health_check_interval=30,
            )
        except ValueError as exc:
            raise ProfileStoreError(f"profile store {self.url!r}: {exc}") from exc
        self._down_until = 0.0
        self._lock = threading.Lock()
        log.info("profile store: %s (Redis)", self.url)

    def _key(self, user_id: str, kind: str) -> str:
        return f"{self.prefix}:{user_id}:{kind}"

    def _check_up(self) -> None:
        if time.monotonic() < self._down_until:
            raise ProfileStoreUnavailableError(f"{self.url} is unreachable; retrying shortly")

    def _went_down(self, exc: Exception) -> ProfileStoreUnavailableError:
        with self._lock:
            first = time.monotonic() >= self._down_until
            self._down_until = time.monotonic() + RETRY_AFTER_S
        if first:
            log.warning("profile store %s unreachable (%s)", self.url, exc)
        return ProfileStoreUnavailableError(f"{self.url} is unreachable ({exc})")

    def record(self, events: Sequence[Event], users: Sequence[Demographics]) -> RecordResult:
        """Store a checked batch in one MULTI/EXEC transaction (see :class:`ProfileStore`)."""
        self._check_up()
        watches: dict[str, dict[str, int]] = defaultdict(dict)
        searches: dict[str, dict[str, int]] = defaultdict(dict)
        for e in events:
            if e.type == EVENT_WATCH:
                watches[e.user_id][_member(e.time, e.video_id)] = e.time
            else:
                searches[e.user_id][_member(e.time, e.query)] = e.time
        pipe = self._redis.pipeline(transaction=True)
        adds = 0
        for kind, groups, cap in (
            ("w", watches, self.caps.max_history),
            ("s", searches, self.caps.max_searches),
        ):
            for user_id, members in groups.items():
                key = self._key(user_id, kind)
                pipe.zadd(key, members, nx=True)
                pipe.zremrangebyrank(key, 0, -(cap + 1))
                adds += 1
        for user in users:
            fields = {n: getattr(user, n) for n in _DEMOGRAPHICS if getattr(user, n) is not None}
            if fields:
                pipe.hset(self._key(user.user_id, "d"), mapping=fields)  # type: ignore[arg-type]
        try:
            replies = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise self._went_down(exc) from exc
        # Within a batch, an event repeated twice is one member: a duplicate too.
        recorded = sum(int(r) for r in replies[: 2 * adds : 2])
        return RecordResult(recorded, len(events) - recorded, len(users))

    def get(self, user_id: str) -> LiveProfile:
        """The user's last watches and searches (oldest first) and demographics."""
        self._check_up()
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrange(self._key(user_id, "w"), -self.caps.max_history, -1)
        pipe.zrange(self._key(user_id, "s"), -self.caps.max_searches, -1)
        pipe.hgetall(self._key(user_id, "d"))
        try:
            watches, searches, demographics = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise self._went_down(exc) from exc
        return LiveProfile(
            watches=_timed(watches),
            searches=_timed(searches),
            demographics=_demographics(user_id, demographics),
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()


def _demographics(user_id: str, fields: dict[bytes, bytes]) -> Demographics | None:
    if not fields:
        return None
    values = {k.decode(): v.decode() for k, v in fields.items()}
    age = values.get("age")
    return Demographics(
        user_id,
        country=values.get("country"),
        region=values.get("region"),
        age=int(age) if age is not None else None,
        gender=values.get("gender"),
    )

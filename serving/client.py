"""A small typed client for the Recommender service: timeouts, retries, plain results.

``RecommenderClient("127.0.0.1:50051").recommend(user_id="u1", k=10)`` returns frozen
dataclasses, not protobuf messages. Calls that fail with UNAVAILABLE (server starting, no
model loaded yet, connection refused, a replica going away) are retried with exponential
backoff and full jitter; every other status is raised at once as :class:`RecommenderError`
with its code. Importing this module needs neither TensorFlow nor pandas.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.live.events import Demographics, Event
from recsys_serving.proto import SERVICE_NAME, pb2, pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


class RecommenderError(Exception):
    """A call failed: ``code`` is the gRPC status, ``details`` the server's message."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


@dataclass(frozen=True)
class RecommendedItem:
    """One recommended video (``probability``: see the .proto)."""

    item_id: str
    title: str
    category: str
    logit: float
    probability: float


@dataclass(frozen=True)
class StageTimings:
    """Server-side milliseconds per stage."""

    context_ms: float
    query_tower_ms: float
    index_ms: float
    rescoring_ms: float
    total_ms: float


@dataclass(frozen=True)
class Recommendations:
    """A Recommend reply."""

    items: tuple[RecommendedItem, ...]
    model_name: str
    model_version: str
    num_candidates_scored: int
    unknown_videos: int
    used_profile: bool
    timings: StageTimings
    profile_store_unavailable: bool = False  # served from the artifact's profile alone
    live_events: int = 0  # events recorded since the export merged into the context


@dataclass(frozen=True)
class SimilarItem:
    """A video near another; ``score`` is the dot product of their embeddings."""

    item_id: str
    title: str
    category: str
    score: float


@dataclass(frozen=True)
class ModelInfo:
    """The served model."""

    model_name: str
    model_version: str
    created_at: str
    loaded_at: str
    embedding_dim: int
    num_items: int
    num_profiles: int
    temperature: float
    index_kind: str
    index_config_json: str
    data_fingerprint: str
    metrics_json: str
    artifact_path: str
    profile_store: str = ""


@dataclass(frozen=True)
class Recorded:
    """A RecordEvents reply: events stored, and exact duplicates ignored."""

    recorded: int
    duplicates: int
    profile_store: str


@dataclass(frozen=True)
class Context:
    """An explicit user context (every field optional; see the .proto's UserContext)."""

    watch_history: Sequence[str] = ()
    watch_times: Sequence[int] = ()
    searches: Sequence[str] = ()
    search_times: Sequence[int] = ()
    country: str | None = None
    region: str | None = None
    age: int | None = None
    gender: str | None = None

    def to_proto(self) -> pb2.UserContext:
        """The UserContext message."""
        message = pb2.UserContext(
            watch_history=list(self.watch_history),
            watch_times=list(self.watch_times),
            searches=list(self.searches),
            search_times=list(self.search_times),
        )
        for name in ("country", "region", "age", "gender"):
            value = getattr(self, name)
            if value is not None:
                setattr(message, name, value)
        return message


def build_request(
    user_id: str | None = None,
    k: int = 10,
    context: Context | None = None,
    request_time: int | None = None,
    exclude_watched: bool = True,
    exclude_ids: Sequence[str] = (),
    category: str | None = None,
    use_live_profile: bool = True,
) -> pb2.RecommendRequest:
    """A RecommendRequest from Python values (unset fields stay unset)."""
    request = pb2.RecommendRequest(
        user_id=user_id or "", k=k, exclude_watched=exclude_watched, exclude_ids=list(exclude_ids)
    )
    if not use_live_profile:
        request.use_live_profile = False
    if context is not None:
        request.context.CopyFrom(context.to_proto())
    if request_time is not None:
        request.request_time = request_time
    if category is not None:
        request.category = category
    return request


def from_response(reply: pb2.RecommendResponse) -> Recommendations:
    """Plain dataclasses from a RecommendResponse."""
    t = reply.timings
    return Recommendations(
        items=tuple(
            RecommendedItem(i.item_id, i.title, i.category, i.logit, i.probability)
            for i in reply.items
        ),
        model_name=reply.model_name,
        model_version=reply.model_version,
        num_candidates_scored=reply.num_candidates_scored,
        unknown_videos=reply.unknown_videos,
        used_profile=reply.used_profile,
        timings=StageTimings(
            t.context_ms, t.query_tower_ms, t.index_ms, t.rescoring_ms, t.total_ms
        ),
        profile_store_unavailable=reply.profile_store_unavailable,
        live_events=reply.live_events,
    )


def build_record_request(
    events: Sequence[Event], users: Sequence[Demographics] = ()
) -> pb2.RecordEventsRequest:
    """A RecordEventsRequest from the library's event and demographics types."""
    request = pb2.RecordEventsRequest()
    for e in events:
        message = request.events.add(
            user_id=e.user_id, time=e.time, type=e.type, video_id=e.video_id, query=e.query
        )
        if e.watch_fraction is not None:
            message.watch_fraction = e.watch_fraction
    for u in users:
        user = request.users.add(user_id=u.user_id)
        for name in ("country", "region", "age", "gender"):
            value = getattr(u, name)
            if value is not None:
                setattr(user, name, value)
    return request


@dataclass
class RetryPolicy:
    """Retries on UNAVAILABLE: ``retries`` more attempts, backoff ``initial * 2**n`` capped."""

    retries: int = 3
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): full jitter."""
        cap = min(self.max_backoff_s, self.initial_backoff_s * (2**attempt))
        return random.uniform(0.0, cap)


class RecommenderClient:
    """A channel to one target (``host:port``) with typed, retrying calls; a context manager."""

    def __init__(
        self,
        target: str,
        timeout: float = 2.0,
        retries: int = 3,
        channel: grpc.Channel | None = None,
    ) -> None:
        """``timeout``: seconds per attempt; ``retries``: extra attempts on UNAVAILABLE."""
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.target = target
        self.timeout = timeout
        self.policy = RetryPolicy(retries=retries)
        self._own_channel = channel is None
        self._channel = channel or grpc.insecure_channel(target)
        self._stub = pb2_grpc.RecommenderStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel (if this client opened it)."""
        if self._own_channel:
            self._channel.close()

    def _call(self, method: str, fn: Callable[[float], T]) -> T:
        attempt = 0
        while True:
            try:
                return fn(self.timeout)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
                details = (exc.details() if isinstance(exc, grpc.Call) else str(exc)) or ""
                if code not in RETRYABLE or attempt >= self.policy.retries:
                    raise RecommenderError(method, code, details) from exc
                delay = self.policy.delay(attempt)
                log.debug(
                    "%s: %s (%s); retry %d in %.2f s",
                    method,
                    code.name,
                    details,
                    attempt + 1,
                    delay,
                )
                self.policy.sleep(delay)
                attempt += 1

    def recommend_request(self, request: pb2.RecommendRequest) -> Recommendations:
        """Send a prepared RecommendRequest."""
        reply = self._call("Recommend", lambda t: self._stub.Recommend(request, timeout=t))
        return from_response(reply)

    def recommend(
        self,
        user_id: str | None = None,
        k: int = 10,
        context: Context | None = None,
        request_time: int | None = None,
        exclude_watched: bool = True,
        exclude_ids: Sequence[str] = (),
        category: str | None = None,
        use_live_profile: bool = True,
    ) -> Recommendations:
        """The ``k`` videos most likely watched next by the user (profile and/or context).

        ``use_live_profile=False``: the artifact's frozen profile alone, without the events
        recorded since the export.
        """
        return self.recommend_request(
            build_request(
                user_id,
                k,
                context,
                request_time,
                exclude_watched,
                exclude_ids,
                category,
                use_live_profile,
            )
        )

    def record_events(
        self, events: Sequence[Event], users: Sequence[Demographics] = ()
    ) -> Recorded:
        """Record a batch (at most 10,000 events) in the server's profile store.

        Returns once the batch is durable. Retrying is safe: exact duplicates are ignored.
        """
        return self.record_request(build_record_request(events, users))

    def record_request(self, request: pb2.RecordEventsRequest) -> Recorded:
        """Send a prepared RecordEventsRequest."""
        reply = self._call("RecordEvents", lambda t: self._stub.RecordEvents(request, timeout=t))
        return Recorded(reply.recorded, reply.duplicates, reply.profile_store)

    def similar_items(self, item_id: str, k: int = 10) -> tuple[SimilarItem, ...]:
        """The ``k`` videos nearest to ``item_id``."""
        request = pb2.SimilarItemsRequest(item_id=item_id, k=k)
        reply = self._call("SimilarItems", lambda t: self._stub.SimilarItems(request, timeout=t))
        return tuple(SimilarItem(i.item_id, i.title, i.category, i.score) for i in reply.items)

    def model_info(self) -> ModelInfo:
        """What the server is serving."""
        request = pb2.GetModelInfoRequest()
        m = self._call("GetModelInfo", lambda t: self._stub.GetModelInfo(request, timeout=t))
        return ModelInfo(
            model_name=m.model_name,
            model_version=m.model_version,
            created_at=m.created_at,
            loaded_at=m.loaded_at,
            embedding_dim=m.embedding_dim,
            num_items=m.num_items,
            num_profiles=m.num_profiles,
            temperature=m.temperature,
            index_kind=m.index_kind,
            index_config_json=m.index_config_json,
            data_fingerprint=m.data_fingerprint,
            metrics_json=m.metrics_json,
            artifact_path=m.artifact_path,
            profile_store=m.profile_store,
        )

    def add_videos(self, videos: Sequence[pb2.NewVideo]) -> int:
        """Add new videos to the served catalog (durable once this returns); how many."""
        request = pb2.AddVideosRequest(videos=list(videos))
        reply = self._call("AddVideos", lambda t: self._stub.AddVideos(request, timeout=t))
        return int(reply.added)

    def remove_videos(self, item_ids: Sequence[str]) -> int:
        """Stop serving videos (durable once this returns); how many."""
        request = pb2.RemoveVideosRequest(item_ids=list(item_ids))
        reply = self._call("RemoveVideos", lambda t: self._stub.RemoveVideos(request, timeout=t))
        return int(reply.removed)

    def is_serving(self) -> bool:
        """Whether the server's health check says SERVING for the Recommender service."""
        try:
            reply = self._health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=self.timeout
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_until_serving(self, timeout_s: float, poll_s: float = 0.2) -> bool:
        """Poll health until SERVING or ``timeout_s`` passes; True when serving."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.is_serving():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)

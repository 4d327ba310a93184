"""The ``recsys.v1.Recommender`` servicer: checks requests, calls the library, maps errors.

The handlers are business logic; :func:`guarded`, wrapped around each at registration, does
what every call needs (deadlines, error-to-status mapping, per-call logging). Every request
is validated before any work: a bad one gets INVALID_ARGUMENT naming the field, an unknown
user or video NOT_FOUND, a request while no model is loaded UNAVAILABLE, and an expired
deadline DEADLINE_EXCEEDED. Anything unexpected is logged and answered with INTERNAL; no
request can take the service down. The model is read from a :class:`ModelSlot` once per
request, so a hot swap never mixes two versions inside one reply.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from recsys.dataset.schema import MAX_AGE
from recsys.features.context import RequestContext
from recsys.inference.recommender import Recommender
from recsys.inference.request import (
    MAX_K,
    LiveCatalogUnavailableError,
    RecommendResult,
    UnknownItemError,
    UnknownUserError,
)
from recsys.live.catalog import LiveVideo
from recsys_serving.proto import SERVICE_NAME, pb2, pb2_grpc
from recsys_serving.reply import ReplyEncoder

log = logging.getLogger(__name__)

Message = Any  # a generated request message
Handler = Callable[[Message, grpc.ServicerContext], object]

# Ids: printable, no whitespace; generous lengths (the synthetic world's are 8 bytes).
MAX_ID_BYTES = 256
MAX_HISTORY = 1000
MAX_SEARCHES = 100
MAX_SEARCH_BYTES = 1024
MAX_EXCLUDE_IDS = 1000
MAX_SHORT_TEXT_BYTES = 64  # country, region, gender
MAX_TIME = 4_102_444_800  # 2100-01-01: later "Unix seconds" are milliseconds or garbage
GENDERS = ("f", "m", "x")
MAX_LIVE_VIDEOS = (
    10_000  # per AddVideos / RemoveVideos call  # the users table's values (recsys.dataset.schema)
)


class RequestError(Exception):
    """A request the service refuses: a gRPC status code and a message for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


class ModelSlot:
    """The model being served; replaced atomically by the hot-reload watcher."""

    def __init__(self) -> None:
        self._model: Recommender | None = None
        self._lock = threading.Lock()

    def get(self) -> Recommender | None:
        """The current model (None until one is loaded)."""
        return self._model

    def swap(self, model: Recommender) -> Recommender | None:
        """Serve ``model`` from now on; returns the previous one."""
        with self._lock:
            old, self._model = self._model, model
        return old


@dataclass(frozen=True)
class _Checked:
    """A validated Recommend request in library terms."""

    user_id: str | None
    context: RequestContext | None
    k: int
    exclude_watched: bool
    exclude_ids: tuple[str, ...]
    category: str | None


def _check_id(value: str, field: str) -> str:
    if (
        not value
        or len(value.encode()) > MAX_ID_BYTES
        or not value.isprintable()
        or any(c.isspace() for c in value)
    ):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise _invalid(
            f"{field} is malformed ({shown!r}): ids are 1..{MAX_ID_BYTES} bytes of printable "
            "characters without whitespace"
        )
    return value


def _check_ids(values: Sequence[str], field: str, limit: int) -> list[str]:
    if len(values) > limit:
        raise _invalid(f"{field} has {len(values)} ids; at most {limit} are accepted")
    return [_check_id(v, f"{field}[{i}]") for i, v in enumerate(values)]


def _check_times(times: Sequence[int], count: int, field: str, of: str) -> list[int] | None:
    if not times:
        return None
    if len(times) != count:
        raise _invalid(
            f"{field} has {len(times)} entries for {count} {of}: send none or exactly one each"
        )
    for i, t in enumerate(times):
        if not 0 <= t <= MAX_TIME:
            raise _invalid(f"{field}[{i}] = {t} is not Unix seconds in 0..{MAX_TIME}")
    return list(times)


def _check_text(value: str, field: str, limit: int) -> str:
    if len(value.encode()) > limit:
        raise _invalid(f"{field} is {len(value.encode())} bytes; at most {limit} are accepted")
    if not value.isprintable():
        raise _invalid(f"{field} has control characters")
    return value


def _optional_text(message: pb2.UserContext, field: str, limit: int) -> str | None:
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    return _check_text(value, f"context.{field}", limit) or None


def _check_context(c: pb2.UserContext, request_time: int | None) -> RequestContext:
    history = _check_ids(c.watch_history, "context.watch_history", MAX_HISTORY)
    if len(c.searches) > MAX_SEARCHES:
        raise _invalid(
            f"context.searches has {len(c.searches)} queries; at most {MAX_SEARCHES} are accepted"
        )
    searches = [
        _check_text(q, f"context.searches[{i}]", MAX_SEARCH_BYTES) for i, q in enumerate(c.searches)
    ]
    age = None
    if c.HasField("age"):
        if not 1 <= c.age <= MAX_AGE:
            raise _invalid(f"context.age must be in 1..{MAX_AGE} years, got {c.age}")
        age = c.age
    gender = _optional_text(c, "gender", MAX_SHORT_TEXT_BYTES)
    if gender is not None and gender not in GENDERS:
        raise _invalid(
            f"context.gender must be one of {', '.join(GENDERS)} or unset, got {gender!r}"
        )
    return RequestContext(
        watch_history=history,
        watch_times=_check_times(
            c.watch_times, len(history), "context.watch_times", "watch_history ids"
        ),
        searches=searches,
        search_times=_check_times(
            c.search_times, len(searches), "context.search_times", "searches"
        ),
        country=_optional_text(c, "country", MAX_SHORT_TEXT_BYTES),
        region=_optional_text(c, "region", MAX_SHORT_TEXT_BYTES),
        age=age,
        gender=gender,
        request_time=request_time,
    )


def check_recommend(request: pb2.RecommendRequest) -> _Checked:
    """Validate a RecommendRequest; RequestError(INVALID_ARGUMENT) names the bad field."""
    if not 1 <= request.k <= MAX_K:
        raise _invalid(f"k must be in 1..{MAX_K}, got {request.k}")
    user_id = _check_id(request.user_id, "user_id") if request.user_id else None
    request_time = None
    if request.HasField("request_time"):
        request_time = request.request_time
        if not 0 <= request_time <= MAX_TIME:
            raise _invalid(f"request_time = {request_time} is not Unix seconds in 0..{MAX_TIME}")
    ctx: RequestContext | None = None
    if request.HasField("context"):
        ctx = _check_context(request.context, request_time)
    elif request_time is not None:
        ctx = RequestContext(request_time=request_time)
    empty = ctx is None or not (
        ctx.watch_history
        or ctx.searches
        or any(v is not None for v in (ctx.country, ctx.region, ctx.age, ctx.gender))
    )
    if empty and user_id is None:
        raise _invalid("context is empty and user_id is unset: send a user_id, a context, or both")
    category = None
    if request.HasField("category"):
        category = _check_text(request.category, "category", MAX_ID_BYTES)
    return _Checked(
        user_id=user_id,
        context=ctx,
        k=request.k,
        exclude_watched=request.exclude_watched if request.HasField("exclude_watched") else True,
        exclude_ids=tuple(_check_ids(request.exclude_ids, "exclude_ids", MAX_EXCLUDE_IDS)),
        category=category,
    )


class RecommenderServicer(pb2_grpc.RecommenderServicer):
    """Typed handlers of ``recsys.v1.Recommender`` over the model in a :class:`ModelSlot`.

    Handlers hold the business logic only: they raise :class:`RequestError` (or the
    library's errors) and :func:`add_to_server` registers them behind :func:`guarded`, which
    turns every failure into a status. ``Recommend`` answers with the serialised reply
    (bytes, see :mod:`recsys_serving.reply`), which the registration passes through.
    """

    def __init__(self, slot: ModelSlot) -> None:
        """Serve whatever model ``slot`` holds at each request."""
        self._slot = slot
        self._encoder: ReplyEncoder | None = None

    def _reply_encoder(self, model: Recommender) -> ReplyEncoder:
        """The reply encoder of ``model``'s catalog (a new one after a model swap)."""
        encoder = self._encoder
        if encoder is None or encoder.catalog is not model.catalog:
            encoder = self._encoder = ReplyEncoder(model.catalog)
        return encoder

    def _model(self) -> Recommender:
        model = self._slot.get()
        if model is None:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "no model loaded yet; retry shortly")
        return model

    def Recommend(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb2.RecommendRequest, context: grpc.ServicerContext
    ) -> bytes | pb2.RecommendResponse:
        """Ranked videos for a user context (see the .proto): the serialised reply."""
        started = time.perf_counter()  # the reply's total_ms counts from here
        checked = check_recommend(request)
        model = self._model()  # once: a hot swap never mixes two versions in one reply
        result = model.recommend(
            checked.context,
            checked.user_id,
            checked.k,
            exclude_watched=checked.exclude_watched,
            exclude_ids=checked.exclude_ids,
            category=checked.category,
        )
        return self._reply(model, result, started)

    def _reply(
        self, model: Recommender, result: RecommendResult, started: float
    ) -> bytes | pb2.RecommendResponse:
        """Recommend's reply: serialised from each video's cached bytes (see BENCHMARKS.md)."""
        return self._reply_encoder(model).encode(result, started)

    def SimilarItems(  # noqa: N802
        self, request: pb2.SimilarItemsRequest, context: grpc.ServicerContext
    ) -> pb2.SimilarItemsResponse:
        """Videos nearest to a video."""
        if not 1 <= request.k <= MAX_K:
            raise _invalid(f"k must be in 1..{MAX_K}, got {request.k}")
        item_id = _check_id(request.item_id, "item_id")
        model = self._model()
        items = model.similar_items(item_id, request.k)
        return pb2.SimilarItemsResponse(
            items=[
                pb2.SimilarItem(
                    item_id=i.item_id, title=i.title, category=i.category, score=i.score
                )
                for i in items
            ],
            model_name=model.name,
            model_version=model.version,
        )

    def GetModelInfo(  # noqa: N802
        self, request: pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> pb2.ModelInfo:
        """The served model's identity."""
        info = self._model().info()
        return pb2.ModelInfo(
            model_name=info.model_name,
            model_version=info.model_version,
            created_at=info.created_at,
            loaded_at=info.loaded_at,
            embedding_dim=info.embedding_dim,
            num_items=info.num_items,
            num_profiles=info.num_profiles,
            temperature=info.temperature,
            index_kind=info.index_kind,
            index_config_json=json.dumps(info.index_config, sort_keys=True),
            data_fingerprint=info.data_fingerprint,
            metrics_json=json.dumps(info.metrics, sort_keys=True, default=_json_default),
            artifact_path=info.artifact_path,
        )

    # ---------------------------------------------------------------- live catalog

    def AddVideos(  # noqa: N802
        self, request: pb2.AddVideosRequest, context: grpc.ServicerContext
    ) -> pb2.AddVideosResponse:
        """Embed, log durably and serve new videos (see the .proto)."""
        if not 1 <= len(request.videos) <= MAX_LIVE_VIDEOS:
            raise _invalid(f"videos must hold 1..{MAX_LIVE_VIDEOS}, got {len(request.videos)}")
        videos = [
            LiveVideo(
                item_id=_check_id(v.item_id, f"videos[{i}].item_id"),
                title=v.title,
                category=v.category,
                channel=v.channel,
                upload_time=v.upload_time,
                duration=v.duration,
                content=np.asarray(v.content_embedding, dtype=np.float32)
                if len(v.content_embedding)
                else None,
            )
            for i, v in enumerate(request.videos)
        ]
        model = self._model()
        added = model.add_videos(videos)
        return pb2.AddVideosResponse(added=added, model_version=model.version)

    def RemoveVideos(  # noqa: N802
        self, request: pb2.RemoveVideosRequest, context: grpc.ServicerContext
    ) -> pb2.RemoveVideosResponse:
        """Stop serving videos, durably (see the .proto)."""
        ids = _check_ids(request.item_ids, "item_ids", MAX_LIVE_VIDEOS)
        if not ids:
            raise _invalid("item_ids is empty")
        model = self._model()
        unknown = [i for i in ids if i not in model.catalog.row_of]
        if unknown:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"item_ids {unknown[:5]} are not in the served catalog of {model.version}",
            )
        return pb2.RemoveVideosResponse(removed=model.remove_videos(ids))


def _json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _status(method: str, exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status a handler's exception is answered with (anything unexpected: INTERNAL)."""
    if isinstance(exc, RequestError):
        return exc.code, exc.message
    if isinstance(exc, (UnknownUserError, UnknownItemError)):
        return grpc.StatusCode.NOT_FOUND, str(exc.args[0])
    if isinstance(exc, LiveCatalogUnavailableError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, ValueError):  # the library's own argument checks
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    log.error("%s failed", method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"{method} failed; see the server log"


def _past_deadline(context: grpc.ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def guarded(method: str, handler: Handler) -> Handler:
    """``handler`` with what every call needs around it: deadlines, statuses, logging.

    A call whose deadline has passed gets DEADLINE_EXCEEDED without running (and without its
    reply being serialised when it passed meanwhile); an exception becomes its status
    (:func:`_status`); each call is logged with its outcome and time at DEBUG level. Applied
    once per method at registration (:func:`add_to_server`), so a call pays one function
    call for it, not an interceptor's per-call handler lookup.
    """

    def call(request: Message, context: grpc.ServicerContext) -> object:
        started = time.perf_counter()
        try:
            if _past_deadline(context):
                raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
            reply = handler(request, context)
            if _past_deadline(context):  # the caller gave up: do not serialise a reply
                raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        except Exception as exc:
            code, message = _status(method, exc)
        else:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s OK in %.2f ms", method, (time.perf_counter() - started) * 1e3)
            return reply
        if log.isEnabledFor(logging.DEBUG):
            elapsed = (time.perf_counter() - started) * 1e3
            log.debug("%s %s in %.2f ms: %s", method, code.name, elapsed, message)
        context.abort(code, message)  # raises, ending the call with that status
        raise AssertionError("grpc.ServicerContext.abort returned")

    return call


def _serialize(reply: object) -> bytes:
    """Recommend's replies are bytes already; the other methods' are messages."""
    if isinstance(reply, bytes):
        return reply
    return reply.SerializeToString()  # type: ignore[attr-defined]


def add_to_server(servicer: RecommenderServicer, server: grpc.Server) -> None:
    """Register ``servicer``'s methods on ``server``, each behind :func:`guarded`.

    Instead of the generated ``add_RecommenderServicer_to_server``, which serialises every
    reply with the message class's own method (refusing the bytes ``Recommend`` returns) and
    has no place for the wrapper.
    """
    methods: dict[str, tuple[Handler, Any]] = {
        "Recommend": (servicer.Recommend, pb2.RecommendRequest),
        "SimilarItems": (servicer.SimilarItems, pb2.SimilarItemsRequest),
        "GetModelInfo": (servicer.GetModelInfo, pb2.GetModelInfoRequest),
        "AddVideos": (servicer.AddVideos, pb2.AddVideosRequest),
        "RemoveVideos": (servicer.RemoveVideos, pb2.RemoveVideosRequest),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            guarded(name, handler),
            request_deserializer=request_type.FromString,
            response_serializer=_serialize,
        )
        for name, (handler, request_type) in methods.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)

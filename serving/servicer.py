"""The ``recsys.v1.Recommender`` servicer: checks requests, calls the library, maps errors.

The handlers are business logic; :func:`guarded`, wrapped around each at registration, does
what every call needs (deadlines, error-to-status mapping, per-call logging). Every request
is validated before any work: a bad one gets INVALID_ARGUMENT naming the field, an unknown
user or video NOT_FOUND, a request while no model is loaded UNAVAILABLE, and an expired
deadline DEADLINE_EXCEEDED. Anything unexpected is logged and answered with INTERNAL; no
request can take the service down. The model is read from a :class:`ModelSlot` once per
request, so a hot swap never mixes two versions inside one reply.

The profile store (:mod:`recsys.live.profile_store`) outlives model versions: it belongs to
the servicer, not to a model. ``RecordEvents`` writes to it; ``Recommend`` reads a user's
live profile from it and, when the store cannot be reached, serves the artifact's profile
and says so in the reply rather than failing.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from recsys.features.limits import FieldError, check_id, check_ids
from recsys.inference.recommender import Recommender
from recsys.inference.request import (
    MAX_K,
    LiveCatalogUnavailableError,
    RecommendResult,
    UnknownItemError,
    UnknownUserError,
)
from recsys.live.catalog import LiveVideo
from recsys.live.events import check_batch
from recsys.live.profile_store import ProfileStore, ProfileStoreUnavailableError
from recsys.live.profiles import LiveProfile
from recsys_serving.proto import SERVICE_NAME, pb2, pb2_grpc
from recsys_serving.reply import ReplyEncoder
from recsys_serving.validation import CheckedRecommend, check_recommend, events_from_request

log = logging.getLogger(__name__)

Message = Any  # a generated request message
Handler = Callable[[Message, grpc.ServicerContext], object]

MAX_LIVE_VIDEOS = 10_000  # per AddVideos / RemoveVideos call


class RequestError(Exception):
    """A request the service refuses: a gRPC status code and a message for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


class RecommenderServicer(pb2_grpc.RecommenderServicer):
    """Typed handlers of ``recsys.v1.Recommender`` over the model in a :class:`ModelSlot`.

    Handlers hold the business logic only: they raise :class:`RequestError` (or the
    library's errors) and :func:`add_to_server` registers them behind :func:`guarded`, which
    turns every failure into a status. ``Recommend`` answers with the serialised reply
    (bytes, see :mod:`recsys_serving.reply`), which the registration passes through.
    """

    def __init__(self, slot: ModelSlot, store: ProfileStore | None = None) -> None:
        """Serve whatever model ``slot`` holds at each request, with ``store``'s profiles."""
        self._slot = slot
        self._store = store
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
        live, store_unavailable = self._live_profile(checked)
        result = model.recommend(
            checked.context,
            checked.user_id,
            checked.k,
            exclude_watched=checked.exclude_watched,
            exclude_ids=checked.exclude_ids,
            category=checked.category,
            live=live,
        )
        return self._reply(model, result, started, store_unavailable)

    def _live_profile(self, checked: CheckedRecommend) -> tuple[LiveProfile | None, bool]:
        """The user's live profile (None: none to merge) and whether the store was down."""
        if self._store is None or checked.user_id is None or not checked.use_live_profile:
            return None, False
        try:
            profile = self._store.get(checked.user_id)
        except ProfileStoreUnavailableError:
            return None, True  # served from the artifact's profile; the reply says so
        return (None if profile.empty else profile), False

    def _reply(
        self,
        model: Recommender,
        result: RecommendResult,
        started: float,
        store_unavailable: bool = False,
    ) -> bytes | pb2.RecommendResponse:
        """Recommend's reply: serialised from each video's cached bytes (see BENCHMARKS.md)."""
        return self._reply_encoder(model).encode(result, started, store_unavailable)

    def RecordEvents(  # noqa: N802
        self, request: pb2.RecordEventsRequest, context: grpc.ServicerContext
    ) -> pb2.RecordEventsResponse:
        """Store a batch of events in the profile store, whole, before answering."""
        events, users = events_from_request(request)
        check_batch(events, users, int(time.time()))
        if self._store is None:
            raise RequestError(
                grpc.StatusCode.UNAVAILABLE,
                "this server runs without a profile store (--profile-store none)",
            )
        recorded = self._store.record(events, users)
        return pb2.RecordEventsResponse(
            recorded=recorded.recorded,
            duplicates=recorded.duplicates,
            profile_store=self._store.url,
        )

    def SimilarItems(  # noqa: N802
        self, request: pb2.SimilarItemsRequest, context: grpc.ServicerContext
    ) -> pb2.SimilarItemsResponse:
        """Videos nearest to a video."""
        if not 1 <= request.k <= MAX_K:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT, f"k must be in 1..{MAX_K}, got {request.k}"
            )
        item_id = check_id(request.item_id, "item_id")
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
            profile_store="" if self._store is None else self._store.url,
        )

    # ---------------------------------------------------------------- live catalog

    def AddVideos(  # noqa: N802
        self, request: pb2.AddVideosRequest, context: grpc.ServicerContext
    ) -> pb2.AddVideosResponse:
        """Embed, log durably and serve new videos (see the .proto)."""
        if not 1 <= len(request.videos) <= MAX_LIVE_VIDEOS:
            raise FieldError(f"videos must hold 1..{MAX_LIVE_VIDEOS}, got {len(request.videos)}")
        videos = [
            LiveVideo(
                item_id=check_id(v.item_id, f"videos[{i}].item_id"),
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
        ids = check_ids(request.item_ids, "item_ids", MAX_LIVE_VIDEOS)
        if not ids:
            raise FieldError("item_ids is empty")
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
    if isinstance(exc, ProfileStoreUnavailableError):
        return grpc.StatusCode.UNAVAILABLE, f"profile store unavailable: {exc}; retry"
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
        "RecordEvents": (servicer.RecordEvents, pb2.RecordEventsRequest),
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

"""The ``recsys.v1.Recommender`` servicer: checks requests, calls the library, maps errors.

Every request is validated before any work: a bad one gets INVALID_ARGUMENT naming the
field, an unknown user or video NOT_FOUND, a request while no model is loaded UNAVAILABLE,
and an expired deadline DEADLINE_EXCEEDED. Anything unexpected is logged and answered with
INTERNAL; no request can take the service down. The model is read from a :class:`ModelSlot`
once per request, so a hot swap never mixes two versions inside one reply.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import grpc

from recsys.dataset.schema import MAX_AGE
from recsys.features.context import RequestContext
from recsys.inference.recommender import (
    MAX_K,
    Recommender,
    UnknownItemError,
    UnknownUserError,
)
from recsys_serving.proto import SERVICE_NAME, pb2, pb2_grpc
from recsys_serving.reply import ReplyEncoder

log = logging.getLogger(__name__)

T = TypeVar("T")

# Ids: printable, no whitespace; generous lengths (the synthetic world's are 8 bytes).
MAX_ID_BYTES = 256
MAX_HISTORY = 1000
MAX_SEARCHES = 100
MAX_SEARCH_BYTES = 1024
MAX_EXCLUDE_IDS = 1000
MAX_SHORT_TEXT_BYTES = 64  # country, region, gender
MAX_TIME = 4_102_444_800  # 2100-01-01: later "Unix seconds" are milliseconds or garbage


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
        c = request.context
        history = _check_ids(c.watch_history, "context.watch_history", MAX_HISTORY)
        if len(c.searches) > MAX_SEARCHES:
            raise _invalid(
                f"context.searches has {len(c.searches)} queries; at most {MAX_SEARCHES} "
                "are accepted"
            )
        searches = [
            _check_text(q, f"context.searches[{i}]", MAX_SEARCH_BYTES)
            for i, q in enumerate(c.searches)
        ]
        age = None
        if c.HasField("age"):
            if not 1 <= c.age <= MAX_AGE:
                raise _invalid(f"context.age must be in 1..{MAX_AGE} years, got {c.age}")
            age = c.age
        ctx = RequestContext(
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
            gender=_optional_text(c, "gender", MAX_SHORT_TEXT_BYTES),
            request_time=request_time,
        )
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


def _check_deadline(context: grpc.ServicerContext) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")


class RecommenderServicer(pb2_grpc.RecommenderServicer):
    """Typed handlers of ``recsys.v1.Recommender`` over the model in a :class:`ModelSlot`.

    ``Recommend`` answers with the serialised reply (bytes, see :mod:`recsys_serving.reply`):
    register the servicer with :func:`add_to_server`, which passes bytes through.
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

    def _handle(self, method: str, context: grpc.ServicerContext, work: Callable[[], T]) -> T:
        """Run ``work``; turn every failure into a status (abort raises, ending the RPC)."""
        try:
            _check_deadline(context)
            result = work()
            _check_deadline(context)  # the caller gave up: do not serialise a reply
            return result
        except RequestError as exc:
            _abort(context, exc.code, exc.message)
        except (UnknownUserError, UnknownItemError) as exc:
            _abort(context, grpc.StatusCode.NOT_FOUND, str(exc.args[0]))
        except ValueError as exc:  # the library's own argument checks
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception:
            log.exception("%s failed", method)
            _abort(context, grpc.StatusCode.INTERNAL, f"{method} failed; see the server log")

    def Recommend(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb2.RecommendRequest, context: grpc.ServicerContext
    ) -> bytes:
        """Ranked videos for a user context (see the .proto): the serialised reply."""
        started = time.perf_counter()

        def work() -> bytes:
            checked = check_recommend(request)
            model = self._model()
            result = model.recommend(
                checked.context,
                checked.user_id,
                checked.k,
                exclude_watched=checked.exclude_watched,
                exclude_ids=checked.exclude_ids,
                category=checked.category,
            )
            return self._reply_encoder(model).encode(result, started)

        return self._handle("Recommend", context, work)

    def SimilarItems(  # noqa: N802
        self, request: pb2.SimilarItemsRequest, context: grpc.ServicerContext
    ) -> pb2.SimilarItemsResponse:
        """Videos nearest to a video."""

        def work() -> pb2.SimilarItemsResponse:
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

        return self._handle("SimilarItems", context, work)

    def GetModelInfo(  # noqa: N802
        self, request: pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> pb2.ModelInfo:
        """The served model's identity."""

        def work() -> pb2.ModelInfo:
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

        return self._handle("GetModelInfo", context, work)


def _json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("grpc.ServicerContext.abort returned")  # it always raises


def _serialize(reply: object) -> bytes:
    """Recommend's replies are bytes already; the other methods' are messages."""
    if isinstance(reply, bytes):
        return reply
    return reply.SerializeToString()  # type: ignore[attr-defined]


def add_to_server(servicer: RecommenderServicer, server: grpc.Server) -> None:
    """Register ``servicer`` on ``server`` (as the generated function does, bytes passed through).

    The generated ``add_RecommenderServicer_to_server`` serialises every reply with the
    message class's own method, which refuses the bytes ``Recommend`` returns.
    """
    handlers = {
        "Recommend": grpc.unary_unary_rpc_method_handler(
            servicer.Recommend,
            request_deserializer=pb2.RecommendRequest.FromString,
            response_serializer=_serialize,
        ),
        "SimilarItems": grpc.unary_unary_rpc_method_handler(
            servicer.SimilarItems,
            request_deserializer=pb2.SimilarItemsRequest.FromString,
            response_serializer=_serialize,
        ),
        "GetModelInfo": grpc.unary_unary_rpc_method_handler(
            servicer.GetModelInfo,
            request_deserializer=pb2.GetModelInfoRequest.FromString,
            response_serializer=_serialize,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)

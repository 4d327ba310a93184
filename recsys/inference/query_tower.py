"""The query tower at serving time: a TensorFlow Lite copy, checked against the SavedModel.

The artifact's query SavedModel (``serve_ids`` signature) is the reference. Calling it costs
mostly TensorFlow's per-call overhead for a tower whose arithmetic takes microseconds; the
same graph converted to TensorFlow Lite (a flatbuffer of builtin ops: data, it cannot run
code) answers an order of magnitude faster (BENCHMARKS.md has the figures). At load,
:func:`load_query_tower` converts the signature (or reads ``query_model.tflite`` when the
artifact has one), runs probe queries through both, and serves the Lite copy only when
every embedding agrees within ``1e-5``; otherwise it serves the SavedModel itself, through
its flat function when that agrees too, and through the keyword call when not.

:class:`QueryTowerBatcher` runs concurrent queries as one SavedModel call (one TensorFlow
call costs about as much for 16 rows as for 1); the Lite runtime needs no batching.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recsys.features import contract as F

log = logging.getLogger(__name__)

QUERY_IDS_SIGNATURE = "serve_ids"  # recsys.model.signatures.QUERY_IDS_SIGNATURE (kept TF-free here)
OUTPUT = "query_embedding"
MAX_ABS_DIFFERENCE = 1e-5
Runtime = Literal["auto", "tflite", "savedmodel"]
RUNTIMES: tuple[str, ...] = ("auto", "tflite", "savedmodel")


class TowerLoadError(Exception):
    """The query tower cannot be served: names the path and what is wrong."""


class SavedModelTower:
    """The ``serve_ids`` signature as a numpy function: features ``[B, ...]`` to ``[B, d]``.

    :meth:`flat` calls the signature's flat function with tensors in its argument order,
    skipping the keyword binding and casting of a structured call (about a third of a
    single call's cost); :meth:`enable_flat_calls` turns it on once it agrees with the
    keyword call.
    """

    runtime = "savedmodel"

    def __init__(self, loaded: Any, signature: Any, dtypes: dict[str, Any]) -> None:
        """Wrap a loaded SavedModel's ``serve_ids`` signature (input dtypes by name)."""
        self._loaded = loaded  # owns the variables: must live as long as the signature
        self._signature = signature
        self.dtypes = dtypes
        self._order: list[str] | None = None

    def structured(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Through the public keyword-argument signature call (the reference)."""
        # TensorFlow only once a tower is loaded or converted: request types import this module.
        import tensorflow as tf

        tensors = {
            name: tf.constant(np.asarray(value, dtype=self.dtypes[name]))
            for name, value in features.items()
        }
        out = self._signature(**tensors)[OUTPUT].numpy()
        return np.asarray(out, dtype=np.float32)

    def flat(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Through the signature's flat function: inputs positional, in ``_arg_keywords``."""
        # TensorFlow only once a tower is loaded or converted: request types import this module.
        import tensorflow as tf

        assert self._order is not None
        dtypes = self.dtypes
        args = [tf.constant(np.asarray(features[n], dtype=dtypes[n])) for n in self._order]
        out = self._signature._call_flat(args, self._signature.captured_inputs)
        if isinstance(out, dict):
            out = out[OUTPUT]
        elif isinstance(out, list | tuple):
            out = out[0]
        return np.asarray(out.numpy(), dtype=np.float32)

    def enable_flat_calls(self, probes: Sequence[dict[str, np.ndarray]]) -> bool:
        """Use :meth:`flat` if this TensorFlow has it and it equals :meth:`structured`."""
        order = getattr(self._signature, "_arg_keywords", None)
        if not order or set(order) != set(self.dtypes):
            return False
        self._order = list(order)
        try:
            same = all(_agree(self.flat(p), self.structured(p), MAX_ABS_DIFFERENCE) for p in probes)
        except Exception:  # a TensorFlow without this private path: keep the public one
            same = False
        if not same:
            self._order = None
            log.warning("query tower: flat signature calls unavailable; using keyword calls")
        return same

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Embeddings ``[B, d]`` of features ``{name: [B, ...]}``."""
        if self._order is not None:
            return self.flat(features)
        return self.structured(features)


class LiteTower:
    """The tower as a TensorFlow Lite interpreter: one query at a time, under a lock.

    An interpreter is not thread-safe; each call holds the lock for tens of microseconds, less
    than batching would cost. Inputs keep their batch-of-one shapes, so tensors are allocated once:
    the first call goes through the signature runner (which sizes and allocates them), later
    calls with the same shapes only set the inputs and invoke, through the runner's own
    interpreter handle (what the runner does after sizing; the public ``invoke`` refuses to
    run while a runner exists). Without that private handle every call takes the runner.
    """

    runtime = "tflite"

    def __init__(self, model: bytes, dtypes: dict[str, Any]) -> None:
        """An interpreter over the flatbuffer ``model`` (inputs cast to ``dtypes``)."""
        # TensorFlow only once a tower is loaded or converted: request types import this module.
        import tensorflow as tf

        with warnings.catch_warnings():  # tf.lite.Interpreter's notice about LiteRT
            warnings.simplefilter("ignore", UserWarning)
            interpreter = tf.lite.Interpreter(model_content=model, num_threads=1)
        self._runner = interpreter.get_signature_runner(QUERY_IDS_SIGNATURE)
        self._interpreter = interpreter  # the runner needs it alive
        self._input_index = {n: d["index"] for n, d in self._runner.get_input_details().items()}
        self._output_index = self._runner.get_output_details()[OUTPUT]["index"]
        self._shapes: dict[str, tuple[int, ...]] = {}  # input shapes currently allocated
        wrapper = getattr(self._runner, "_interpreter_wrapper", None)
        self._subgraph = getattr(self._runner, "_subgraph_index", None)
        usable = self._subgraph is not None and all(
            hasattr(wrapper, m) for m in ("SetTensor", "Invoke", "GetTensor")
        )
        self._wrapper = wrapper if usable else None
        self.dtypes = dtypes
        self._lock = threading.Lock()
        self.size_bytes = len(model)

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Embeddings ``[B, d]`` of features ``{name: [B, ...]}`` (row by row)."""
        dtypes = self.dtypes
        batch = len(next(iter(features.values())))
        rows = []
        for row in range(batch):
            inputs = {
                name: np.asarray(value[row : row + 1], dtype=dtypes[name])
                for name, value in features.items()
            }
            with self._lock:
                wrapper, subgraph = self._wrapper, self._subgraph
                if wrapper is not None and all(
                    self._shapes.get(n) == v.shape for n, v in inputs.items()
                ):
                    for name, value in inputs.items():
                        wrapper.SetTensor(self._input_index[name], value, subgraph)
                    wrapper.Invoke(subgraph)
                    out = wrapper.GetTensor(self._output_index, subgraph)
                else:
                    out = self._runner(**inputs)[OUTPUT]
                    self._shapes = {n: v.shape for n, v in inputs.items()}
            rows.append(np.asarray(out, dtype=np.float32))
        return np.concatenate(rows) if len(rows) != 1 else rows[0]


QueryTower = SavedModelTower | LiteTower


def convert_to_tflite(saved_model_dir: str | Path) -> bytes:
    """The ``serve_ids`` signature of a query SavedModel as a TensorFlow Lite flatbuffer."""
    # TensorFlow only once a tower is loaded or converted: request types import this module.
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[QUERY_IDS_SIGNATURE]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no TF ops
    return bytes(converter.convert())


def load_query_tower(
    saved_model_dir: Path,
    probes: Sequence[dict[str, np.ndarray]],
    runtime: Runtime = "auto",
    tflite_file: Path | None = None,
) -> QueryTower:
    """The fastest tower that gives the SavedModel's embeddings on every probe (see module).

    ``runtime="tflite"`` makes a failed conversion or a disagreement an error;
    ``"savedmodel"`` skips the Lite copy. ``tflite_file``: a converted copy to use instead of
    converting (checked the same way).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"query tower runtime must be one of {RUNTIMES}, got {runtime!r}")
    reference = _load_saved_model(saved_model_dir)
    reference.enable_flat_calls(probes)
    if runtime == "savedmodel":
        return reference
    started = time.perf_counter()
    try:
        if tflite_file is not None and tflite_file.is_file():
            model = tflite_file.read_bytes()
        else:
            model = convert_to_tflite(saved_model_dir)
        lite = LiteTower(model, reference.dtypes)
        worst = max(float(np.abs(lite(p) - reference(p)).max()) for p in probes)
    except Exception as exc:  # the converter or interpreter refused this graph
        if runtime == "tflite":
            raise TowerLoadError(f"{saved_model_dir}: TensorFlow Lite failed ({exc})") from exc
        log.warning("query tower: TensorFlow Lite failed (%s); serving the SavedModel", exc)
        return reference
    if worst > MAX_ABS_DIFFERENCE:
        message = (
            f"{saved_model_dir}: the TensorFlow Lite tower differs from the SavedModel by "
            f"{worst:.2e} (> {MAX_ABS_DIFFERENCE:.0e}) on a probe query"
        )
        if runtime == "tflite":
            raise TowerLoadError(message)
        log.warning("query tower: %s; serving the SavedModel", message)
        return reference
    log.info(
        "query tower: TensorFlow Lite (%.1f MB, max difference %.1e on %d probes) in %.1f s",
        lite.size_bytes / 1e6,
        worst,
        len(probes),
        time.perf_counter() - started,
    )
    return lite


def _agree(a: np.ndarray, b: np.ndarray, tolerance: float) -> bool:
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= tolerance))


def _load_saved_model(path: Path) -> SavedModelTower:
    """Load the query SavedModel and check its ``serve_ids`` signature takes our features."""
    # TensorFlow only once a tower is loaded or converted: request types import this module.
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures[QUERY_IDS_SIGNATURE]
    except (OSError, KeyError, ValueError, tf.errors.OpError) as exc:
        raise TowerLoadError(
            f"{path}: cannot load the query model's {QUERY_IDS_SIGNATURE} signature ({exc})"
        ) from exc
    _, inputs = signature.structured_input_signature
    if set(inputs) != set(F.QUERY_FEATURES):
        raise TowerLoadError(
            f"{path}: signature {QUERY_IDS_SIGNATURE} takes {sorted(inputs)}, this server "
            f"sends {sorted(F.QUERY_FEATURES)}"
        )
    return SavedModelTower(loaded, signature, {n: inputs[n].dtype.as_numpy_dtype for n in inputs})


class _Pending:
    """One query waiting for, or leading, a batched query-tower call."""

    __slots__ = ("error", "event", "features", "lead", "result")

    def __init__(self, features: dict[str, np.ndarray]) -> None:
        self.features = features
        self.event = threading.Event()
        self.lead = False
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None


class QueryTowerBatcher:
    """Runs a batch function over single queries arriving concurrently, without waiting.

    The first caller when the tower is idle runs at once (no added latency one call at a
    time); callers arriving meanwhile queue up, and the head of the queue then runs them all
    in one call of at most ``max_batch`` rows.
    """

    def __init__(
        self, fn: Callable[[dict[str, np.ndarray]], np.ndarray], max_batch: int = 32
    ) -> None:
        """``fn`` maps features ``{name: [B, ...]}`` to embeddings ``[B, d]``."""
        self.fn = fn
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._busy = False
        self.calls = 0  # tower calls made
        self.queries = 0  # queries they embedded (queries / calls: the mean batch size)

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """The embedding ``[d]`` of one query's features ``{name: [1, ...]}``."""
        if self._max_batch == 1:  # nothing to batch: call straight through (fn orders callers)
            with self._lock:
                self.calls += 1
                self.queries += 1
            return self.fn(features)[0]
        pending = _Pending(features)
        with self._lock:
            self._queue.append(pending)
            pending.lead = not self._busy
            self._busy = True
        if not pending.lead:
            pending.event.wait()
        if pending.lead:
            self._run_batch()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _run_batch(self) -> None:
        with self._lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            self.calls += 1
            self.queries += len(batch)
        try:
            if len(batch) == 1:
                stacked = batch[0].features
            else:
                stacked = {
                    name: np.concatenate([p.features[name] for p in batch])
                    for name in batch[0].features
                }
            out = self.fn(stacked)
            for row, p in enumerate(batch):
                p.result = out[row]
        except BaseException as exc:  # delivered to every caller of the batch
            for p in batch:
                p.error = exc
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].lead = True
                    self._queue[0].event.set()
                else:
                    self._busy = False
            for p in batch:
                p.event.set()

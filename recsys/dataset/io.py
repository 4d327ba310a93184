"""Read and write canonical datasets: a folder of Parquet files plus ``dataset.json``.

Writers build the folder under a temporary name and rename it into place when every file is
complete, so a reader never sees a half-written dataset. The validating read of a whole
dataset, :func:`recsys.dataset.validation.read_dataset`, sits on top of this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.dataset.schema import EVENTS, ITEMS, META_FILE, SCHEMA_VERSION, USERS, Table

log = logging.getLogger(__name__)


class DatasetError(Exception):
    """A dataset folder is missing, malformed or fails validation."""


@dataclass
class DatasetMeta:
    """What ``dataset.json`` records about a dataset."""

    name: str
    source: str
    schema_version: int = SCHEMA_VERSION
    description: str = ""
    created_at: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    modalities: dict[str, bool] = field(default_factory=dict)
    time_range: list[int] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256

    def to_json(self) -> str:
        """The JSON text of ``dataset.json``."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DatasetMeta:
        """Build from a parsed ``dataset.json`` (unknown keys are ignored)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})

    @property
    def fingerprint(self) -> str:
        """A sha256 over every data file's sha256: identifies the exact data a model saw."""
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(f"{name}:{self.files[name]}\n".encode())
        return h.hexdigest()


@dataclass
class CanonicalDataset:
    """A whole dataset in memory.

    ``content_embeddings`` is ``[num_items, dim]`` float32, row-aligned with ``items``, or
    None when the dataset has no content modality (MovieLens).
    """

    users: pd.DataFrame
    items: pd.DataFrame
    events: pd.DataFrame
    meta: DatasetMeta
    content_embeddings: np.ndarray | None = None

    @property
    def has_searches(self) -> bool:
        """Whether any search events exist."""
        return bool((self.events["type"] == "search").any())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_meta(path: str | Path) -> DatasetMeta:
    """Read ``dataset.json`` of the dataset folder ``path``."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise DatasetError(f"{meta_path}: missing; is {path} a canonical dataset folder?")
    try:
        raw = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{meta_path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise DatasetError(f"{meta_path}: expected a JSON object")
    return DatasetMeta.from_dict(raw)


def _table_from_frame(table: Table, frame: pd.DataFrame) -> pa.Table:
    """Convert a pandas frame to Arrow with the schema's column order and types."""
    missing = [c.name for c in table.columns if c.required and c.name not in frame.columns]
    if missing:
        raise DatasetError(f"{table.name}: frame lacks required columns {missing}")
    arrays = []
    fields = []
    for col in table.columns:
        if col.kind == "embedding" or col.name not in frame.columns:
            continue
        arrays.append(pa.array(frame[col.name], type=col.arrow_type, from_pandas=True))
        fields.append(pa.field(col.name, col.arrow_type, nullable=col.nullable))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def embeddings_to_arrow(embeddings: np.ndarray) -> pa.FixedSizeListArray:
    """``embeddings: [n, dim]`` as an Arrow fixed-size list column of float32."""
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])


def embeddings_from_arrow(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list column of equal-length float lists as a ``[n, dim]`` float32 matrix."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, -1)


class DatasetWriter:
    """Writes a canonical dataset atomically: temporary folder, then rename.

    Use as a context manager: ``write_users``, ``write_items``, ``append_events`` (any
    number of chunks, e.g. one per simulated day), and the folder appears at ``out`` only
    when the block exits without an exception.
    """

    def __init__(self, out: str | Path, meta: DatasetMeta, overwrite: bool = False) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise DatasetError(f"{self.out}: already exists (pass overwrite to replace it)")
        self.meta = meta
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{uuid.uuid4().hex[:8]}"
        self._events_writer: pq.ParquetWriter | None = None
        self._counts = {"users": 0, "items": 0, "events": 0, "watches": 0, "searches": 0}
        self._tmin: int | None = None
        self._tmax: int | None = None
        self._started = time.perf_counter()

    def __enter__(self) -> DatasetWriter:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            if self._events_writer is not None:
                self._events_writer.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        self._commit()

    def extra_path(self, relpath: str) -> Path:
        """A path inside the dataset for extra files (e.g. a synthetic world's ground truth).

        Extra files are written inside the temporary folder, so they appear atomically with
        the dataset; they are not part of the data fingerprint.
        """
        target = self.tmp / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_users(self, users: pd.DataFrame) -> None:
        """Write the users table."""
        tbl = _table_from_frame(USERS, users)
        pq.write_table(tbl, self.tmp / USERS.file_name)
        self._counts["users"] = tbl.num_rows

    def write_items(self, items: pd.DataFrame, content_embeddings: np.ndarray | None) -> None:
        """Write the items table; ``content_embeddings: [num_items, dim]`` or None."""
        tbl = _table_from_frame(ITEMS, items)
        if content_embeddings is not None:
            if len(content_embeddings) != tbl.num_rows:
                raise DatasetError(
                    f"content_embeddings has {len(content_embeddings)} rows, items has "
                    f"{tbl.num_rows}"
                )
            tbl = tbl.append_column(
                pa.field("content_embedding", pa.list_(pa.float32(), content_embeddings.shape[1])),
                embeddings_to_arrow(content_embeddings),
            )
        pq.write_table(tbl, self.tmp / ITEMS.file_name)
        self._counts["items"] = tbl.num_rows
        self.meta.modalities["content_embedding"] = content_embeddings is not None

    def append_events(self, events: pd.DataFrame) -> None:
        """Append a chunk of events (a Parquet row group); chunks should be in time order."""
        tbl = _table_from_frame(EVENTS, events)
        if self._events_writer is None:
            self._events_writer = pq.ParquetWriter(self.tmp / EVENTS.file_name, tbl.schema)
        self._events_writer.write_table(tbl)
        n = tbl.num_rows
        self._counts["events"] += n
        if n:
            types = events["type"].to_numpy()
            self._counts["searches"] += int((types == "search").sum())
            self._counts["watches"] += int((types == "watch").sum())
            ts = events["timestamp"].to_numpy()
            lo, hi = int(ts.min()), int(ts.max())
            self._tmin = lo if self._tmin is None else min(self._tmin, lo)
            self._tmax = hi if self._tmax is None else max(self._tmax, hi)

    def _commit(self) -> None:
        if self._events_writer is None:
            self.append_events(pd.DataFrame({c.name: [] for c in EVENTS.columns}))
        assert self._events_writer is not None
        self._events_writer.close()
        for table in (USERS, ITEMS):
            if not (self.tmp / table.file_name).exists():
                shutil.rmtree(self.tmp, ignore_errors=True)
                raise DatasetError(f"{self.out}: {table.file_name} was never written")
        self.meta.counts = dict(self._counts)
        self.meta.modalities.setdefault("content_embedding", False)
        self.meta.modalities["searches"] = self._counts["searches"] > 0
        self.meta.time_range = [] if self._tmin is None else [self._tmin, int(self._tmax or 0)]
        self.meta.created_at = self.meta.created_at or time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime()
        )
        self.meta.files = {
            t.file_name: sha256_file(self.tmp / t.file_name) for t in (USERS, ITEMS, EVENTS)
        }
        (self.tmp / META_FILE).write_text(self.meta.to_json() + "\n")
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.out, old)
        os.rename(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        log.info(
            "wrote dataset %s: %d users, %d items, %d events (%d watches, %d searches) in %.1f s",
            self.out,
            self._counts["users"],
            self._counts["items"],
            self._counts["events"],
            self._counts["watches"],
            self._counts["searches"],
            time.perf_counter() - self._started,
        )


def iter_event_batches(
    path: str | Path, batch_size: int = 1 << 20, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream ``events.parquet`` in record batches (for worlds that do not fit in memory)."""
    pf = pq.ParquetFile(Path(path) / EVENTS.file_name)
    yield from pf.iter_batches(batch_size=batch_size, columns=columns)

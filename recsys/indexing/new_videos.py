"""New videos for a live artifact: read and check their Parquet file, embed them with the model.

The file holds canonical ``items`` rows (see :data:`recsys.dataset.schema.ITEMS`). Every
problem is reported with the file, column and first rows (counted from 0), all at once.
Embedding goes through :class:`recsys.inference.candidate_embedder.CandidateEmbedder`, so a
new video is embedded exactly as the export embedded the catalog.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.dataset.schema import ITEMS, MIN_UPLOAD_TIME
from recsys.dataset.validation import MAX_ROWS_SHOWN, Problem
from recsys.inference.candidate_embedder import (
    CONTENT_COLUMN,
    DEFAULT_EMBED_BATCH,
    STRING_FEATURES,
    CandidateEmbedder,
)
from recsys.logs import ProgressFn

logger = logging.getLogger(__name__)

_TOMORROW_SLACK_S = 86_400


class ItemsFileError(ValueError):
    """A file of new videos cannot be added: names the file, column and rows of each problem."""


@dataclass(frozen=True)
class NewItems:
    """Checked new videos: canonical columns (no embedding) and `content_embedding: [n, dim]`."""

    path: Path
    table: pa.Table
    content_embedding: np.ndarray | None

    @property
    def ids(self) -> list[str]:
        """The new item ids, in file order."""
        return [str(value) for value in self.table.column("item_id").to_pylist()]

    def __len__(self) -> int:
        """The number of new videos."""
        return int(self.table.num_rows)


def _problem(file: str, column: str, message: str, mask: np.ndarray) -> Problem | None:
    """A Problem for the rows where `mask: [n]` is True, or None when there are none."""
    bad = np.flatnonzero(mask)
    if bad.size == 0:
        return None
    rows = [int(row) for row in bad[:MAX_ROWS_SHOWN]]
    return Problem(file, column, message, count=int(bad.size), rows=rows)


def _as_mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array (nulls as False) as numpy `[n]`."""
    filled = pc.fill_null(values, False)
    if isinstance(filled, pa.ChunkedArray):
        filled = filled.combine_chunks()
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)


def _raise_if_any(path: Path, problems: list[Problem | None]) -> None:
    """Raise ItemsFileError listing every problem found in `path`, if any."""
    found = [problem for problem in problems if problem is not None]
    if found:
        lines = "\n".join(f"  - {problem}" for problem in found)
        noun = "problem" if len(found) == 1 else "problems"
        raise ItemsFileError(
            f"new items file {path} is invalid ({len(found)} {noun}; rows count from 0):\n{lines}"
        )


def _read_table(path: Path) -> pa.Table:
    """Read the Parquet file at `path`; ItemsFileError when it is missing or not Parquet."""
    if not path.is_file():
        raise ItemsFileError(f"new items file {path}: no such file")
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise ItemsFileError(
            f"new items file {path}: not a readable Parquet file ({error})"
        ) from error


def _check_columns(path: Path, table: pa.Table, content_dim: int | None) -> None:
    """Check that the required columns are there with usable types, and that there are rows."""
    file, problems = str(path), []
    for column in ITEMS.columns:
        required = column.required or (column.name == CONTENT_COLUMN and content_dim is not None)
        if column.name not in table.column_names:
            if required:
                why = (
                    " (the model uses content embeddings)" if column.name == CONTENT_COLUMN else ""
                )
                problems.append(
                    Problem(
                        file,
                        column.name,
                        f"required column is missing{why} (has: {table.column_names})",
                    )
                )
            continue
        actual = table.schema.field(column.name).type
        if not column.accepts(actual):
            problems.append(
                Problem(file, column.name, f"has type {actual}, expected {column.type_name}")
            )
    _raise_if_any(path, list(problems))
    if table.num_rows == 0:
        raise ItemsFileError(f"new items file {path}: has no rows, so there is nothing to add")


def _check_ids(file: str, ids: pa.Array) -> list[Problem | None]:
    """Null, empty or NUL-holding ids, and ids held by more than one row."""
    values = [value if value is not None else "" for value in ids.to_pylist()]
    blank = np.array([not value or "\x00" in value for value in values], dtype=bool)
    counts = Counter(values)
    repeated = np.array([bool(value) and counts[value] > 1 for value in values], dtype=bool)
    duplicated = sorted(value for value, count in counts.items() if value and count > 1)
    shown = ", ".join(repr(value) for value in duplicated[:MAX_ROWS_SHOWN])
    return [
        _problem(file, "item_id", "null, empty or holding a NUL character", blank),
        _problem(file, "item_id", f"holding an id that another row also holds ({shown})", repeated),
    ]


def _check_values(path: Path, table: pa.Table, now: int) -> list[Problem | None]:
    """Problems of the ids, upload times and durations."""
    file = str(path)
    upload = table.column("upload_time")
    latest = now + _TOMORROW_SLACK_S
    duration = table.column("duration").cast(pa.float64())
    return [
        *_check_ids(file, table.column("item_id").combine_chunks()),
        _problem(file, "upload_time", "with null values", _as_mask(pc.is_null(upload))),
        _problem(
            file,
            "upload_time",
            f"outside {MIN_UPLOAD_TIME}..{latest} (Unix seconds; year 1900 to tomorrow)",
            _as_mask(pc.or_(pc.less(upload, MIN_UPLOAD_TIME), pc.greater(upload, latest))),
        ),
        _problem(
            file,
            "duration",
            "negative or not finite",
            _as_mask(pc.or_(pc.less(duration, 0.0), pc.invert(pc.is_finite(duration)))),
        ),
    ]


def _check_content(
    path: Path, column: pa.ChunkedArray, content_dim: int
) -> tuple[list[Problem | None], np.ndarray | None]:
    """Check `content_embedding` rows; return the problems and, if none, `[n, content_dim]`."""
    file = str(path)
    values = column.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
    null = _as_mask(pc.is_null(values))
    wrong = (lengths != content_dim) & ~null
    flat = pc.list_flatten(values).cast(pa.float64()).to_numpy(zero_copy_only=False)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    not_finite = np.zeros(len(lengths), dtype=bool)
    not_finite[owner[~np.isfinite(flat)]] = True
    problems = [
        _problem(file, CONTENT_COLUMN, "with null values", null),
        _problem(
            file,
            CONTENT_COLUMN,
            f"of the wrong dimension (lengths {sorted(set(lengths[wrong].tolist()))[:5]}; "
            f"the model expects {content_dim}, config.json content_dim)",
            wrong,
        ),
        _problem(file, CONTENT_COLUMN, "holding NaN or infinite values", not_finite),
    ]
    if any(problem is not None for problem in problems):
        return problems, None
    return problems, flat.astype(np.float32).reshape(len(lengths), content_dim)


def read_new_items(path: Path, content_dim: int | None, now: int | None = None) -> NewItems:
    """Read and check a Parquet file of new videos; raise ItemsFileError listing every problem."""
    path = Path(path)
    started = time.perf_counter()
    table = _read_table(path)
    _check_columns(path, table, content_dim)
    problems = _check_values(path, table, int(time.time()) if now is None else now)
    content = None
    if content_dim is not None:
        content_problems, content = _check_content(path, table.column(CONTENT_COLUMN), content_dim)
        problems += content_problems
    elif CONTENT_COLUMN in table.column_names:
        logger.info("%s: the model uses no content embedding: column ignored", path)
    _raise_if_any(path, problems)
    canonical = [column.name for column in ITEMS.columns if column.kind != "embedding"]
    checked = pa.table(
        {
            column.name: table.column(column.name).cast(column.arrow_type)
            for column in ITEMS.columns
            if column.name in canonical
        }
    )
    logger.info(
        "read %d new videos from %s in %.2f s",
        checked.num_rows,
        path,
        time.perf_counter() - started,
    )
    return NewItems(path, checked, content)


def embed_new_items(
    candidate_model: Path,
    items: NewItems,
    reference_time: int,
    *,
    batch_size: int = DEFAULT_EMBED_BATCH,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Candidate embeddings `[n, d]` of `items` from the SavedModel's raw `serving_default`."""
    started = time.perf_counter()
    # Unknown channel, category or title is "" for the model, as at export.
    strings = {
        name: np.asarray(pc.fill_null(items.table.column(name), "").to_pylist(), dtype=object)
        for name in STRING_FEATURES
    }
    embedder = CandidateEmbedder(
        candidate_model,
        strings,
        items.table.column("upload_time").to_numpy(),
        items.content_embedding,
        batch_size,
    )
    loaded_s = time.perf_counter() - started
    embeddings = embedder(reference_time, progress)
    logger.info(
        "embedded %d new videos with %s in %.2f s (model load %.2f s)",
        len(items),
        candidate_model,
        time.perf_counter() - started,
        loaded_s,
    )
    return embeddings

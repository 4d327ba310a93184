"""The canonical dataset's schema: tables, columns, types and the schema version.

A canonical dataset is a folder with ``users.parquet``, ``items.parquet``, ``events.parquet``
and ``dataset.json``. Every stage (training examples, evaluation, serving profiles) reads it
through :mod:`recsys.dataset.io`, which validates it against this schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

SCHEMA_VERSION = 1

ColumnKind = Literal["string", "int", "float", "embedding"]

EVENT_WATCH = "watch"
EVENT_SEARCH = "search"
EVENT_TYPES = (EVENT_WATCH, EVENT_SEARCH)

# Earliest timestamp we accept: older than any video platform's logs (and MovieLens, 1995).
MIN_TIMESTAMP = 631_152_000  # 1990-01-01T00:00:00Z
# Uploads may predate the logs (catalog built up over years), but not the Lumière brothers.
MIN_UPLOAD_TIME = -2_208_988_800  # 1900-01-01T00:00:00Z
MAX_AGE = 120
GENDERS = ("f", "m", "x")  # the users table's gender values (null: unknown)


@dataclass(frozen=True)
class Column:
    """One column of a canonical table."""

    name: str
    kind: ColumnKind
    required: bool = True  # the column must be present in the file
    nullable: bool = False  # rows may hold null
    doc: str = ""

    @property
    def arrow_type(self) -> pa.DataType:
        """The Arrow type our writers use for this column."""
        return {
            "string": pa.string(),
            "int": pa.int64(),
            "float": pa.float32(),
            "embedding": pa.list_(pa.float32()),
        }[self.kind]

    def accepts(self, arrow_type: pa.DataType) -> bool:
        """Whether a file's column of ``arrow_type`` can be read as this column."""
        t = arrow_type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if self.kind == "string":
            return bool(pa.types.is_string(t) or pa.types.is_large_string(t))
        if self.kind == "int":
            return bool(pa.types.is_integer(t))
        if self.kind == "float":
            return bool(pa.types.is_floating(t) or pa.types.is_integer(t))
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            return bool(pa.types.is_floating(t.value_type))
        return False

    @property
    def type_name(self) -> str:
        """A human name of the expected type, for error messages."""
        return {
            "string": "string",
            "int": "integer (int64)",
            "float": "floating point",
            "embedding": "list of float32",
        }[self.kind]


@dataclass(frozen=True)
class Table:
    """A canonical table: its file name, primary key and columns."""

    name: str
    key: str | None
    columns: tuple[Column, ...]

    @property
    def file_name(self) -> str:
        """The Parquet file that holds this table inside a dataset folder."""
        return f"{self.name}.parquet"

    def column(self, name: str) -> Column:
        """The column called ``name``."""
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def arrow_schema(self, present: list[str] | None = None) -> pa.Schema:
        """The Arrow schema our writers use (optional columns only if ``present``)."""
        cols = [c for c in self.columns if c.required or (present and c.name in present)]
        return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in cols])


USERS = Table(
    "users",
    key="user_id",
    columns=(
        Column("user_id", "string", doc="Unique user id."),
        Column("country", "string", nullable=True, doc="ISO 3166-1 alpha-2 code; null if unknown."),
        Column("region", "string", required=False, nullable=True, doc="Region within country."),
        Column("age", "int", nullable=True, doc="Age in years; null if unknown."),
        Column("gender", "string", nullable=True, doc="'f', 'm' or 'x'; null if unknown."),
    ),
)

ITEMS = Table(
    "items",
    key="item_id",
    columns=(
        Column("item_id", "string", doc="Unique video id."),
        Column("channel", "string", nullable=True, doc="Uploading channel; null if unknown."),
        Column("category", "string", nullable=True, doc="Category (topic); null if unknown."),
        Column("title", "string", nullable=True, doc="Title text (tokenised on whitespace)."),
        Column("upload_time", "int", doc="Upload time, Unix seconds UTC."),
        Column("duration", "float", nullable=True, doc="Length in seconds; null if unknown."),
        Column(
            "content_embedding",
            "embedding",
            required=False,
            doc="Content-model embedding, same length on every row (modality may be absent).",
        ),
    ),
)

EVENTS = Table(
    "events",
    key=None,
    columns=(
        Column("user_id", "string", doc="Who acted; must be in users."),
        Column("timestamp", "int", doc="When, Unix seconds UTC."),
        Column("type", "string", doc="'watch' or 'search'."),
        Column("item_id", "string", nullable=True, doc="The watched video (watches only)."),
        Column("query", "string", nullable=True, doc="The search text (searches only)."),
        Column("watch_fraction", "float", nullable=True, doc="Share of the video watched, 0..1."),
    ),
)

TABLES: tuple[Table, ...] = (USERS, ITEMS, EVENTS)
META_FILE = "dataset.json"

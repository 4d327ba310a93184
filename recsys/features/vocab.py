"""Vocabularies: string values to integer ids, built from training data only, saved as JSON.

Index 0 is padding / missing, index 1 is out-of-vocabulary, known values start at 2, in
order of decreasing training frequency (ties by value), so a vocabulary is deterministic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.features.contract import OOV, PAD

RESERVED = ("[PAD]", "[OOV]")
VOCAB_FORMAT = 1
# Plain lists/tuples up to this length are looked up value by value in a dict
# (a serving request's handful of ids: ~50x faster than building pandas objects per call).
_SMALL_LOOKUP = 256


@dataclass
class Vocabulary:
    """A string-to-id mapping with reserved padding (0) and out-of-vocabulary (1) ids."""

    name: str
    values: list[str]
    _index: pd.Index = field(init=False, repr=False)
    _id_of: dict[object, int] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"vocabulary {self.name!r} has duplicate values")
        self._index = pd.Index(self.values, dtype=object)

    def __len__(self) -> int:
        """Number of ids including the two reserved ones."""
        return len(self.values) + len(RESERVED)

    @classmethod
    def build(
        cls, name: str, values: Iterable[str | None] | pd.Series, min_count: int = 1
    ) -> Vocabulary:
        """Count ``values`` (nulls and blanks ignored); keep those seen ``min_count`` times."""
        series = pd.Series(values, dtype=object).dropna()
        series = series[series.astype(str) != ""].astype(str)
        counts = series.value_counts()
        counts = counts[counts >= min_count]
        order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls(name, [str(v) for v, _ in order])

    def lookup(self, values: Iterable[str | None] | pd.Series | np.ndarray) -> np.ndarray:
        """Ids of ``values``: int32 array, 0 for null or empty, 1 for unknown values."""
        if isinstance(values, list | tuple) and len(values) <= _SMALL_LOOKUP:
            return self._lookup_small(values)
        arr = np.asarray(pd.Series(values, dtype=object).to_numpy(), dtype=object)
        ids = self._index.get_indexer(pd.Index(arr, dtype=object)).astype(np.int64)
        out = np.where(ids >= 0, ids + len(RESERVED), OOV).astype(np.int32)
        missing = pd.isna(arr)
        missing[~missing] = arr[~missing] == ""  # after isna: comparing pd.NA raises
        out[missing] = PAD
        return out

    def _lookup_small(self, values: list[str | None] | tuple[str | None, ...]) -> np.ndarray:
        """``lookup`` for a few values: a dict probe each (built on first use; same ids)."""
        id_of = self._id_of
        if id_of is None:  # benign race: two threads may both build the same dict
            first = len(RESERVED)
            id_of = self._id_of = {v: first + i for i, v in enumerate(self.values)}
        get = id_of.get
        return np.fromiter(
            (PAD if _missing(v) else get(v, OOV) for v in values), dtype=np.int32, count=len(values)
        )

    def value(self, idx: int) -> str:
        """The value of id ``idx`` (reserved ids give their markers)."""
        if idx < len(RESERVED):
            return RESERVED[idx]
        return self.values[idx - len(RESERVED)]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form (the reserved ids are implied)."""
        return {"name": self.name, "format": VOCAB_FORMAT, "values": self.values}


def _missing(value: object) -> bool:
    """What pandas' ``isna`` calls null, or the empty string (as the pandas path of lookup)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, str):
        return not value
    return isinstance(value, float | np.floating) and math.isnan(value)


@dataclass
class Vocabularies:
    """All vocabularies a model needs, saved together in one ``vocabularies.json``."""

    items: Vocabulary
    tokens: Vocabulary
    countries: Vocabulary
    regions: Vocabulary
    genders: Vocabulary
    channels: Vocabulary
    categories: Vocabulary

    def as_mapping(self) -> Mapping[str, Vocabulary]:
        """Name to vocabulary."""
        return {
            "items": self.items,
            "tokens": self.tokens,
            "countries": self.countries,
            "regions": self.regions,
            "genders": self.genders,
            "channels": self.channels,
            "categories": self.categories,
        }

    def sizes(self) -> dict[str, int]:
        """Name to number of ids (including reserved ones)."""
        return {name: len(v) for name, v in self.as_mapping().items()}

    def to_json(self) -> str:
        """The text of ``vocabularies.json`` (plain JSON: loading it can never run code)."""
        payload = {name: v.to_dict() for name, v in self.as_mapping().items()}
        return json.dumps(payload, ensure_ascii=False) + "\n"

    def save(self, path: str | Path) -> None:
        """Write ``vocabularies.json`` (:meth:`to_json`)."""
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Vocabularies:
        """Read a ``vocabularies.json`` written by :meth:`save`; clear errors if malformed."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"{path}: not a valid vocabularies file ({exc!r})") from exc
        return cls.from_json(text, source=path)

    @classmethod
    def from_json(cls, text: str, source: object) -> Vocabularies:
        """Parse the text of a ``vocabularies.json`` (``source`` names it in errors)."""
        try:
            raw = json.loads(text)
            vocabs = {}
            for name in cls.__dataclass_fields__:
                entry = raw[name]
                if entry.get("format") != VOCAB_FORMAT:
                    raise ValueError(f"vocabulary {name!r} has format {entry.get('format')!r}")
                vocabs[name] = Vocabulary(name, [str(v) for v in entry["values"]])
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{source}: not a valid vocabularies file ({exc!r})") from exc
        return cls(**vocabs)

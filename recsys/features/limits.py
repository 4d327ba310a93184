"""What a client may send: the size limits of ids, texts, lists and times, and their checks.

One definition for every way in: a Recommend context, a RecordEvents batch and the library
calls behind them. Each check raises :class:`FieldError` (a ValueError) naming the field,
which the service answers with INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Sequence

from recsys.dataset.schema import GENDERS, MAX_AGE

# Ids: printable, no whitespace; generous lengths (the synthetic world's are 8 bytes).
MAX_ID_BYTES = 256
MAX_HISTORY = 1000  # watch_history ids in one request
MAX_SEARCHES = 100  # searches in one request
MAX_SEARCH_BYTES = 1024  # one search query
MAX_EXCLUDE_IDS = 1000
MAX_SHORT_TEXT_BYTES = 64  # country, region, gender
MAX_TIME = 4_102_444_800  # 2100-01-01: later "Unix seconds" are milliseconds or garbage


class FieldError(ValueError):
    """A value a client sent is outside the contract; the message names the field."""


def check_id(value: str, field: str) -> str:
    """``value`` if it is a well-formed id (1..MAX_ID_BYTES printable bytes, no whitespace)."""
    if (
        not value
        or len(value.encode()) > MAX_ID_BYTES
        or not value.isprintable()
        or any(c.isspace() for c in value)
    ):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise FieldError(
            f"{field} is malformed ({shown!r}): ids are 1..{MAX_ID_BYTES} bytes of printable "
            "characters without whitespace"
        )
    return value


def check_ids(values: Sequence[str], field: str, limit: int) -> list[str]:
    """Every id of ``values`` checked (``field[i]`` names a bad one); at most ``limit``."""
    if len(values) > limit:
        raise FieldError(f"{field} has {len(values)} ids; at most {limit} are accepted")
    return [check_id(v, f"{field}[{i}]") for i, v in enumerate(values)]


def check_text(value: str, field: str, limit: int) -> str:
    """``value`` if it is at most ``limit`` UTF-8 bytes without control characters."""
    size = len(value.encode())
    if size > limit:
        raise FieldError(f"{field} is {size} bytes; at most {limit} are accepted")
    if not value.isprintable():
        raise FieldError(f"{field} has control characters")
    return value


def check_time(value: int, field: str) -> int:
    """``value`` if it is Unix seconds in ``0..MAX_TIME``."""
    if not 0 <= value <= MAX_TIME:
        raise FieldError(f"{field} = {value} is not Unix seconds in 0..{MAX_TIME}")
    return value


def check_age(value: int, field: str) -> int:
    """``value`` if it is an age in years, ``1..MAX_AGE``."""
    if not 1 <= value <= MAX_AGE:
        raise FieldError(f"{field} must be in 1..{MAX_AGE} years, got {value}")
    return value


def check_gender(value: str, field: str) -> str:
    """``value`` if it is one of the users table's genders."""
    if value not in GENDERS:
        raise FieldError(f"{field} must be one of {', '.join(GENDERS)} or unset, got {value!r}")
    return value

"""Parsers for the MovieLens file layouts: 100K, 1M and the 20M/25M/32M csv layout.

Each parser turns one GroupLens file into plain records and rejects a malformed line with a
:class:`~recsys.dataset.io.DatasetError` that names the file and the line (counted from 1).
Ratings files (up to 32M lines) are cut into blocks of whole lines that pyarrow's CSV parser
reads; when pyarrow rejects a block, or a value in it is out of range, that block alone is
re-read line by line in Python to name the first bad line.
"""

from __future__ import annotations

import csv
import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from recsys.dataset.io import DatasetError
from recsys.dataset.schema import MAX_AGE, MIN_TIMESTAMP

LAYOUT_100K = "ml-100k"
LAYOUT_1M = "ml-1m"
LAYOUT_LATEST = "ml-latest"

# u.item's 19 genre flags, in column order, when the folder has no u.genre.
GENRES_100K = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# users.dat's Age column is a bucket code; the value is a representative age for the bucket
# (1: under 18, 18: 18-24, 25: 25-34, 35: 35-44, 45: 45-49, 50: 50-55, 56: 56+).
AGE_BUCKETS_1M = {1: 16, 18: 21, 25: 30, 35: 40, 45: 47, 50: 53, 56: 60}
GENDERS = {"F": "f", "M": "m"}

_RELEASE_DATE = re.compile(r"^\d{1,2}-[A-Za-z]{3}-(\d{4})$")  # u.item: 01-Jan-1995


@dataclass(frozen=True)
class LayoutSpec:
    """The files that make up one MovieLens layout."""

    name: str
    title: str  # for logs and the dataset description
    ratings: str
    movies: str
    users: str | None

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the layout needs."""
        return tuple(f for f in (self.ratings, self.movies, self.users) if f is not None)


LAYOUTS: dict[str, LayoutSpec] = {
    LAYOUT_100K: LayoutSpec(LAYOUT_100K, "MovieLens 100K", "u.data", "u.item", "u.user"),
    LAYOUT_1M: LayoutSpec(LAYOUT_1M, "MovieLens 1M", "ratings.dat", "movies.dat", "users.dat"),
    LAYOUT_LATEST: LayoutSpec(
        LAYOUT_LATEST, "MovieLens (20M/25M/32M csv)", "ratings.csv", "movies.csv", None
    ),
}


@dataclass(frozen=True)
class MovieRecord:
    """One line of a movies file, as written (title still carries its year)."""

    movie_id: int
    title: str
    genres: tuple[str, ...]
    release_year: int | None = None  # 100K's release date column


@dataclass(frozen=True)
class UserRecord:
    """One line of a users file: age in years (1M's bucket code mapped), gender 'f'/'m'."""

    user_id: int
    age: int | None
    gender: str | None
    zip_code: str


@dataclass(frozen=True)
class RatingsChunk:
    """A block of ratings in file order; every array is ``[n]``."""

    user: np.ndarray  # int64 MovieLens user ids
    item: np.ndarray  # int64 MovieLens movie ids
    rating: np.ndarray  # float64 stars, 0 < rating <= 5
    timestamp: np.ndarray  # int64 Unix seconds
    bytes_read: int  # of the ratings file so far (for progress)


def detect_layout(source: str | Path) -> str:
    """Which MovieLens layout the folder ``source`` holds: "ml-100k", "ml-1m" or "ml-latest"."""
    folder = Path(source)
    looked_for = ", ".join(f"{s.ratings} ({s.name})" for s in LAYOUTS.values())
    if not folder.is_dir():
        raise DatasetError(
            f"{folder}: not a folder; pass the folder a MovieLens zip unpacks to "
            f"(one holding {looked_for})"
        )
    found = [s for s in LAYOUTS.values() if (folder / s.ratings).is_file()]
    if not found:
        raise DatasetError(
            f"{folder}: not a MovieLens folder: looked for {looked_for} and found none; pass "
            "the folder a MovieLens zip unpacks to (e.g. ml-100k/, ml-1m/ or ml-25m/)"
        )
    if len(found) > 1:
        names = " and ".join(f"{s.ratings} ({s.name})" for s in found)
        raise DatasetError(f"{folder}: holds {names}: ambiguous; keep one MovieLens layout")
    spec = found[0]
    missing = [f for f in spec.files if not (folder / f).is_file()]
    if missing:
        hint = ""
        if spec.name == LAYOUT_1M and "users.dat" in missing:
            hint = " (MovieLens 10M has no users.dat and is not supported)"
        raise DatasetError(
            f"{folder}: has {spec.ratings}, so it looks like the {spec.name} layout, but "
            f"{', '.join(missing)} is missing (the layout needs {', '.join(spec.files)}){hint}"
        )
    return spec.name


def malformed(path: Path, line: int, reason: str, text: str | None = None) -> DatasetError:
    """The error for a bad line of a MovieLens file (lines count from 1)."""
    shown = "" if text is None else f": {text[:200]!r}"
    return DatasetError(f"{path}, line {line}: {reason}{shown}")


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """The non-empty lines of a text file with their numbers (counted from 1)."""
    return ((number, text) for number, text in _all_lines(path, encoding) if text)


def _all_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Every line, without its line end; a line that does not decode is an error."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode(encoding).rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise malformed(path, number, f"not {encoding} text ({exc.reason})") from exc


def _int(value: str, what: str, path: Path, number: int, text: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise malformed(path, number, f"{what} {value!r} is not an integer", text) from None


def _fields(path: Path, number: int, text: str, sep: str, expected: int) -> list[str]:
    fields = text.split(sep)
    if len(fields) != expected:
        raise malformed(
            path, number, f"expected {expected} {sep!r}-separated fields, got {len(fields)}", text
        )
    return fields


def _gender(value: str, path: Path, number: int, text: str) -> str:
    if value not in GENDERS:
        raise malformed(path, number, f"gender {value!r} is not F or M", text)
    return GENDERS[value]


def _unique(records: Iterable[tuple[int, int]], what: str, path: Path) -> None:
    """Reject a repeated id; ``records`` are (id, line) pairs."""
    first: dict[int, int] = {}
    for key, number in records:
        if key in first:
            raise malformed(path, number, f"{what} {key} repeats line {first[key]}")
        first[key] = number


# ---------------------------------------------------------------- movies and users


def read_genres_100k(path: Path) -> tuple[str, ...]:
    """u.genre: ``name|index`` lines, giving the names of u.item's genre flags."""
    names: list[str] = []
    for number, text in _lines(path, "latin-1"):
        name, index = _fields(path, number, text, "|", 2)
        if _int(index, "genre index", path, number, text) != len(names):
            raise malformed(path, number, f"genre index {index} out of order", text)
        names.append(name)
    if not names:
        raise DatasetError(f"{path}: lists no genres")
    return tuple(names)


def read_movies_100k(path: Path, genres: tuple[str, ...]) -> list[MovieRecord]:
    """u.item: ``id|title|release date|video release date|IMDb URL|genre flags`` (latin-1)."""
    movies: list[MovieRecord] = []
    lines: list[tuple[int, int]] = []
    for number, text in _lines(path, "latin-1"):
        fields = _fields(path, number, text, "|", 5 + len(genres))
        movie_id = _int(fields[0], "movie id", path, number, text)
        release_year = None
        if fields[2]:
            match = _RELEASE_DATE.match(fields[2])
            if match is None:
                raise malformed(
                    path, number, f"release date {fields[2]!r} is not like 01-Jan-1995", text
                )
            release_year = int(match.group(1))
        flags = fields[5:]
        if any(flag not in ("0", "1") for flag in flags):
            raise malformed(path, number, "genre flags must be 0 or 1", text)
        listed = tuple(g for g, flag in zip(genres, flags, strict=True) if flag == "1")
        movies.append(MovieRecord(movie_id, fields[1], listed, release_year))
        lines.append((movie_id, number))
    _unique(lines, "movie id", path)
    return movies


def read_movies_1m(path: Path) -> list[MovieRecord]:
    """movies.dat: ``MovieID::Title::Genres`` with genres ``|``-separated (latin-1)."""
    movies: list[MovieRecord] = []
    lines: list[tuple[int, int]] = []
    for number, text in _lines(path, "latin-1"):
        # Titles may hold a single ':' ("Star Wars: Episode IV"), never '::'.
        head, sep, rest = text.partition("::")
        title, sep2, genres = rest.rpartition("::")
        if not (sep and sep2):
            raise malformed(path, number, "expected MovieID::Title::Genres", text)
        movie_id = _int(head, "movie id", path, number, text)
        movies.append(MovieRecord(movie_id, title, tuple(g for g in genres.split("|") if g)))
        lines.append((movie_id, number))
    _unique(lines, "movie id", path)
    return movies


def read_movies_latest(path: Path) -> list[MovieRecord]:
    """movies.csv: ``movieId,title,genres`` with a header; titles may be quoted (UTF-8)."""
    # Empty lines are kept, so that csv's line_num stays the file's line number.
    decoded = (text for _, text in _all_lines(path, "utf-8"))
    reader = csv.reader(decoded)
    movies: list[MovieRecord] = []
    lines: list[tuple[int, int]] = []
    try:
        for row in reader:
            number = reader.line_num
            if number == 1:
                if row != ["movieId", "title", "genres"]:
                    raise malformed(
                        path, 1, "expected the header movieId,title,genres", ",".join(row)
                    )
                continue
            if not row:
                continue
            if len(row) != 3:
                raise malformed(path, number, f"expected 3 fields, got {len(row)}", ",".join(row))
            movie_id = _int(row[0], "movie id", path, number, ",".join(row))
            movies.append(MovieRecord(movie_id, row[1], tuple(g for g in row[2].split("|") if g)))
            lines.append((movie_id, number))
    except csv.Error as exc:
        raise malformed(path, reader.line_num, f"not valid CSV ({exc})") from exc
    _unique(lines, "movie id", path)
    return movies


def read_users_100k(path: Path) -> list[UserRecord]:
    """u.user: ``id|age|gender|occupation|zip`` with the exact age in years."""
    users: list[UserRecord] = []
    lines: list[tuple[int, int]] = []
    for number, text in _lines(path, "latin-1"):
        user_id, age_text, gender, _occupation, zip_code = _fields(path, number, text, "|", 5)
        uid = _int(user_id, "user id", path, number, text)
        age = _int(age_text, "age", path, number, text)
        if not 0 <= age <= MAX_AGE:
            raise malformed(path, number, f"age {age} is outside 0..{MAX_AGE}", text)
        users.append(UserRecord(uid, age, _gender(gender, path, number, text), zip_code))
        lines.append((uid, number))
    _unique(lines, "user id", path)
    return users


def read_users_1m(path: Path) -> list[UserRecord]:
    """users.dat: ``UserID::Gender::Age::Occupation::Zip-code``, Age a bucket code."""
    users: list[UserRecord] = []
    lines: list[tuple[int, int]] = []
    for number, text in _lines(path, "latin-1"):
        user_id, gender, code_text, _occupation, zip_code = _fields(path, number, text, "::", 5)
        uid = _int(user_id, "user id", path, number, text)
        code = _int(code_text, "age code", path, number, text)
        if code not in AGE_BUCKETS_1M:
            codes = ", ".join(str(c) for c in AGE_BUCKETS_1M)
            raise malformed(path, number, f"age code {code} is not one of {codes}", text)
        age = AGE_BUCKETS_1M[code]
        users.append(UserRecord(uid, age, _gender(gender, path, number, text), zip_code))
        lines.append((uid, number))
    _unique(lines, "user id", path)
    return users


# ---------------------------------------------------------------- ratings


@dataclass(frozen=True)
class _RatingsFormat:
    separator: str  # between fields, as the Python re-scan splits them
    header: tuple[str, ...] | None  # the first line of the file, if it has one
    parse: pacsv.ParseOptions
    names: tuple[str, ...]  # every pyarrow column, in file order
    types: dict[str, pa.DataType]
    columns: tuple[str, str, str, str]  # the user, item, rating and time columns

    def read_block(self, block: memoryview) -> pa.Table:
        """Parse whole lines of the file (pyarrow parses and converts in parallel)."""
        return pacsv.read_csv(
            pa.py_buffer(block),
            read_options=pacsv.ReadOptions(column_names=list(self.names)),
            parse_options=self.parse,
            convert_options=pacsv.ConvertOptions(column_types=self.types),
        )


_COLUMNS = ("user", "item", "rating", "timestamp")
_TYPES = dict(zip(_COLUMNS, (pa.int64(), pa.int64(), pa.float64(), pa.int64()), strict=True))
_RATINGS_FORMATS = {
    LAYOUT_100K: _RatingsFormat(
        "\t", None, pacsv.ParseOptions(delimiter="\t"), _COLUMNS, _TYPES, _COLUMNS
    ),
    # '::' is read as ':' with an empty (null-typed) field between the values.
    LAYOUT_1M: _RatingsFormat(
        "::",
        None,
        pacsv.ParseOptions(delimiter=":"),
        ("user", "_1", "item", "_3", "rating", "_5", "timestamp"),
        {**_TYPES, "_1": pa.null(), "_3": pa.null(), "_5": pa.null()},
        _COLUMNS,
    ),
    LAYOUT_LATEST: _RatingsFormat(
        ",",
        ("userId", "movieId", "rating", "timestamp"),
        pacsv.ParseOptions(delimiter=","),
        _COLUMNS,
        _TYPES,
        _COLUMNS,
    ),
}


def _blocks(f: BinaryIO, chunk_bytes: int, line: int) -> Iterator[tuple[memoryview, int]]:
    """The rest of a binary file in blocks of whole lines, about ``chunk_bytes`` each.

    Yields each block with the number of its first line (the file position is on ``line``).
    We cut the blocks ourselves, rather than use pyarrow's streaming reader, because that
    reads many blocks ahead: memory would grow with the thread count, not the chunk size.
    Each block is read once and not copied: we seek back to just after its last line end.
    """
    size = chunk_bytes
    while True:
        start = f.tell()
        data = f.read(size)
        if not data:
            return
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) == size:  # a line longer than the block: read more
            f.seek(start)
            size *= 2
            continue
        cut = cut or len(data)  # the last line, without a line end
        f.seek(start + cut)
        size = chunk_bytes
        yield memoryview(data)[:cut], line
        line += data.count(b"\n", 0, cut)


def iter_ratings(
    path: Path,
    layout: str,
    chunk_bytes: int,
    known_users: np.ndarray | None = None,
    known_items: np.ndarray | None = None,
) -> Iterator[RatingsChunk]:
    """Stream a ratings file in chunks of about ``chunk_bytes``, every value checked.

    ``known_users``/``known_items`` (int64 ids) reject ratings naming ids outside them.
    """
    fmt = _RATINGS_FORMATS[layout]
    newest = int(time.time())
    with path.open("rb") as f:
        first_line = 1
        if fmt.header is not None:
            header = f.readline().decode("latin-1").rstrip("\r\n")
            if tuple(name.strip('"') for name in header.split(",")) != fmt.header:
                raise malformed(path, 1, f"expected the header {','.join(fmt.header)}", header)
            first_line = 2
        for block, line in _blocks(f, chunk_bytes, first_line):
            try:
                table = fmt.read_block(block)
            except pa.ArrowInvalid as exc:
                raise _explain(
                    path, layout, fmt, block, line, known_users, known_items, newest, exc
                ) from exc
            columns = [table.column(name) for name in fmt.columns]
            user, item, rating, ts = (col.to_numpy(zero_copy_only=False) for col in columns)
            bad = np.zeros(len(user), dtype=bool)
            for col in columns:
                bad |= np.asarray(col.is_null(), dtype=bool)
            bad |= ~np.isfinite(rating) | (rating <= 0) | (rating > 5)
            bad |= (ts < MIN_TIMESTAMP) | (ts > newest)
            if known_users is not None:
                bad |= ~np.isin(user, known_users)
            if known_items is not None:
                bad |= ~np.isin(item, known_items)
            if bad.any():
                raise _explain(path, layout, fmt, block, line, known_users, known_items, newest)
            yield RatingsChunk(user, item, rating, ts, f.tell())


def _explain(
    path: Path,
    layout: str,
    fmt: _RatingsFormat,
    block: memoryview,
    first_line: int,
    known_users: np.ndarray | None,
    known_items: np.ndarray | None,
    newest: int,
    exc: Exception | None = None,
) -> DatasetError:
    """Re-read a rejected block line by line: the error naming its first bad line."""
    users = None if known_users is None else set(known_users.tolist())
    items = None if known_items is None else set(known_items.tolist())
    lines = bytes(block).split(b"\n")
    for number, raw in enumerate(lines, start=first_line):
        text = raw.decode("latin-1").rstrip("\r")
        if not text:
            continue
        try:
            _check_rating(text.split(fmt.separator), users, items, newest)
        except _LineError as problem:
            return malformed(path, number, str(problem), text)
    why = f" ({exc})" if exc is not None else ""
    last = first_line + len(lines) - 1
    return DatasetError(
        f"{path}, lines {first_line}..{last}: could not be read as {layout} ratings{why}"
    )


def _parse(value: str, kind: type[int] | type[float], what: str) -> float:
    try:
        return kind(value)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise _LineError(f"{what} {value!r} is not {noun}") from None


class _LineError(Exception):
    """Why one line of a ratings file is malformed."""


def _check_rating(
    fields: list[str], users: set[int] | None, items: set[int] | None, newest: int
) -> None:
    """Raise :class:`_LineError` if one ratings line's fields are malformed."""
    if len(fields) != 4:
        raise _LineError(f"expected 4 fields (user, movie, rating, timestamp), got {len(fields)}")
    values = [f.strip().strip('"') for f in fields]
    user = _parse(values[0], int, "user id")
    item = _parse(values[1], int, "movie id")
    rating = _parse(values[2], float, "rating")
    if not (math.isfinite(rating) and 0 < rating <= 5):
        raise _LineError(f"rating {values[2]} is outside (0, 5]")
    ts = _parse(values[3], int, "timestamp")
    if not MIN_TIMESTAMP <= ts <= newest:
        raise _LineError(
            f"timestamp {values[3]} is outside {MIN_TIMESTAMP}..{newest} (1990 to now)"
        )
    if users is not None and user not in users:
        raise _LineError(f"user {values[0]} is not in the users file")
    if items is not None and item not in items:
        raise _LineError(f"movie {values[1]} is not in the movies file")

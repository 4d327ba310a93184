"""Tests of the MovieLens importer on tiny hand-written folders in each of the three layouts.

MovieLens itself may not be redistributed, so no real MovieLens data is used: every fixture
writes a handful of lines in the GroupLens formats. Timestamps in comments are UTC.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.dataset.io import DatasetError
from recsys.dataset.validation import validate_dataset
from recsys_data.movielens import (
    detect_layout,
    first_genre,
    import_movielens,
    merge_runs,
    split_title_year,
    zip_region,
)
from recsys_data.movielens_formats import GENRES_100K

# Jan 1 of a year, Unix seconds UTC.
Y1977 = 220_924_800
Y1993 = 725_846_400
Y1994 = 757_382_400
Y1995 = 788_918_400
Y1996 = 820_454_400
Y2001 = 978_307_200


def _write(path: Path, lines: list[str], encoding: str = "utf-8") -> None:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))


def _flags(*genres: str) -> str:
    """u.item's 19 genre flags with ``genres`` set."""
    return "|".join("1" if g in genres else "0" for g in GENRES_100K)


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    """A 100K-layout folder: 5 users (one never rates), 7 movies (two never rated)."""
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    _write(folder / "u.genre", [f"{g}|{i}" for i, g in enumerate(GENRES_100K)] + [""])
    url = "http://us.imdb.com/M/title-exact?x"
    toy_story = _flags("Animation", "Children's", "Comedy")
    _write(
        folder / "u.item",
        [
            f"1|Toy Story (1995)|01-Jan-1995||{url}|{toy_story}",
            f"2|Café au lait (1993)|01-Jan-1993||{url}|{_flags('Comedy', 'Romance')}",
            f"3|Future Film (1998)|01-Jan-1998||{url}|{_flags('Action')}",
            f"4|unknown||||{_flags('unknown')}",
            f"5|Never Rated (1996)|01-Jan-1996||{url}|{_flags('Drama')}",
            f"6|No Date Never Rated|||{url}|{_flags()}",
            f"7|Release Only|01-Jan-1994||{url}|{_flags('unknown', 'Thriller')}",
        ],
        encoding="latin-1",
    )
    _write(
        folder / "u.user",
        [
            "1|24|M|technician|85711",
            "2|53|F|other|94043",
            "3|23|M|writer|T8H1N",
            "4|33|F|educator|01002",
            "5|42|M|none|55117",
        ],
    )
    _write(
        folder / "u.data",
        [
            "1\t1\t5\t880000300",
            "2\t1\t3\t880000100",
            "1\t3\t4\t880000000",
            "3\t2\t2\t880000200",
            "4\t4\t1\t880000150",
            "2\t3\t5\t880000300",
            "1\t7\t4\t880000050",
        ],
    )
    return folder


@pytest.fixture
def ml1m(tmp_path: Path) -> Path:
    """A 1M-layout folder: 7 users (one per age bucket), 6 movies (one never rated)."""
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    _write(
        folder / "movies.dat",
        [
            "1::Toy Story (1995)::Animation|Children's|Comedy",
            "2::Café Society (1995)::Comedy|Drama",
            "3::Future Film (2003)::Action|Sci-Fi",
            "4::Untitled Thing::Documentary",
            "5::Never Rated (1996)::Drama",
            "6::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi",
        ],
        encoding="latin-1",
    )
    _write(
        folder / "users.dat",
        [
            "1::F::1::10::48067",
            "2::M::56::16::70072",
            "3::M::25::15::55117",
            "4::F::45::7::02460",
            "5::M::18::4::98107-2117",
            "6::F::35::1::L9G 2B8",
            "7::M::50::2::32067",
        ],
    )
    _write(
        folder / "ratings.dat",
        [
            "1::1::5::978300760",
            "2::3::4::978300100",
            "3::6::3::978300760",
            "4::4::2::978302000",
            "6::2::1::978300100",
            "7::6::4::978299000",
            "5::1::3::978301000",
        ],
    )
    return folder


@pytest.fixture
def mllatest(tmp_path: Path) -> Path:
    """A 25M-style csv folder: 4 raters, 6 movies (one never rated, one without genres)."""
    folder = tmp_path / "ml-25m"
    folder.mkdir()
    _write(
        folder / "movies.csv",
        [
            "movieId,title,genres",
            "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy",
            '2,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",'
            "Adventure|Drama|Fantasy|Mystery|Sci-Fi",
            "3,Future Film (2030),Sci-Fi",
            "4,Some Documentary,(no genres listed)",
            "5,Never Rated (2001),Drama",
            "10,Café Society (2016),Comedy|Drama|Romance",
        ],
    )
    _write(
        folder / "ratings.csv",
        [
            "userId,movieId,rating,timestamp",
            "1,1,4.0,964982703",
            "1,3,4.5,964981247",
            "1,2,0.5,964982224",
            "2,1,2.5,964982703",
            "3,4,3.0,1000000000",
            "3,10,5.0,964981247",
            "15,2,1.0,964982224",
        ],
    )
    return folder


def _read(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return tuple(  # type: ignore[return-value]
        pq.read_table(out / f"{t}.parquet").to_pandas() for t in ("users", "items", "events")
    )


def _import(folder: Path, tmp_path: Path, **kwargs: int) -> Path:
    out = tmp_path / "out" / folder.name
    import_movielens(folder, out, **kwargs)
    report = validate_dataset(out)
    assert report.ok, [str(p) for p in report.problems]
    return out


def _values(column: pd.Series) -> list[object]:
    """A column as a list, nulls (NaN in pandas 3 string columns) as None."""
    return [None if pd.isna(v) else v for v in column.tolist()]


def _table(frame: pd.DataFrame) -> dict[str, list[object]]:
    return {name: _values(frame[name]) for name in frame.columns}


def _events(events: pd.DataFrame) -> list[tuple[int, str, str, float]]:
    return [
        (int(r.timestamp), r.user_id, r.item_id, round(float(r.watch_fraction), 6))
        for r in events.itertuples()
    ]


# ---------------------------------------------------------------- the three layouts


def test_100k(ml100k: Path, tmp_path: Path) -> None:
    out = _import(ml100k, tmp_path)
    users, items, events = _read(out)

    # Sorted by time; the 880000300 tie keeps file order (u.data line 1 before line 6).
    assert _events(events) == [
        (880000000, "1", "3", 0.8),  # 4 stars / 5
        (880000050, "1", "7", 0.8),
        (880000100, "2", "1", 0.6),
        (880000150, "4", "4", 0.2),
        (880000200, "3", "2", 0.4),
        (880000300, "1", "1", 1.0),
        (880000300, "2", "3", 1.0),
    ]
    assert (events["type"] == "watch").all()
    assert events["query"].isna().all()
    assert str(events["watch_fraction"].dtype) == "float32"

    assert items["item_id"].tolist() == ["1", "2", "3", "4", "5", "6", "7"]
    assert items["title"].tolist() == [
        "Toy Story",
        "Café au lait",  # latin-1 in u.item
        "Future Film",
        "unknown",
        "Never Rated",
        "No Date Never Rated",
        "Release Only",
    ]
    # First flagged genre; "unknown" is no genre (item 7: unknown + Thriller -> Thriller).
    assert _values(items["category"]) == [
        "Animation",
        "Comedy",
        "Action",
        None,
        "Drama",
        None,
        "Thriller",
    ]
    assert items["upload_time"].tolist() == [
        Y1995,  # 1995 < first rating 880000100
        Y1993,
        880000000,  # "(1998)" but first rated 1997-11-20: the rating wins
        880000150,  # no year: its first rating
        Y1996,  # never rated: the year
        880000000,  # no year, never rated: the start of the logs
        Y1994,  # no year in the title: u.item's release date 01-Jan-1994
    ]
    assert items["channel"].isna().all()
    assert items["duration"].isna().all()
    assert "content_embedding" not in items.columns

    assert _table(users) == {
        "user_id": ["1", "2", "3", "4", "5"],  # user 5 never rates but is kept
        "country": ["US"] * 5,
        "region": ["US-8", "US-9", None, "US-0", "US-5"],  # T8H1N is not a US ZIP
        "age": [24, 53, 23, 33, 42],
        "gender": ["m", "f", "m", "f", "m"],
    }

    meta = json.loads((out / "dataset.json").read_text())
    assert meta["name"] == "movielens-100k"
    assert meta["source"] == "movielens"
    assert meta["params"] == {"layout": "ml-100k", "source": str(ml100k)}
    assert "redistributed" in meta["description"]
    assert meta["counts"]["watches"] == 7
    assert meta["counts"]["searches"] == 0
    assert meta["modalities"] == {"content_embedding": False, "searches": False}
    assert meta["time_range"] == [880000000, 880000300]


def test_100k_without_u_genre_uses_the_standard_genre_names(ml100k: Path, tmp_path: Path) -> None:
    with_genre = _read(_import(ml100k, tmp_path / "a"))
    (ml100k / "u.genre").unlink()
    without_genre = _read(_import(ml100k, tmp_path / "b"))
    for a, b in zip(with_genre, without_genre, strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_1m(ml1m: Path, tmp_path: Path) -> None:
    out = _import(ml1m, tmp_path)
    users, items, events = _read(out)

    assert _events(events) == [
        (978299000, "7", "6", 0.8),
        (978300100, "2", "3", 0.8),  # tie: ratings.dat line 2 before line 5
        (978300100, "6", "2", 0.2),
        (978300760, "1", "1", 1.0),  # tie: line 1 before line 3
        (978300760, "3", "6", 0.6),
        (978301000, "5", "1", 0.6),
        (978302000, "4", "4", 0.4),
    ]
    assert items["title"].tolist() == [
        "Toy Story",
        "Café Society",
        "Future Film",
        "Untitled Thing",
        "Never Rated",
        "Star Wars: Episode IV - A New Hope",  # ':' inside a '::'-separated line
    ]
    assert _values(items["category"]) == [
        "Animation",
        "Comedy",
        "Action",
        "Documentary",
        "Drama",
        "Action",
    ]
    assert items["upload_time"].tolist() == [
        Y1995,
        Y1995,
        978300100,  # "(2003)" but rated in 2000
        978302000,  # no year: first rating
        Y1996,  # never rated
        Y1977,
    ]
    # Age bucket codes 1, 56, 25, 45, 18, 35, 50 -> representative ages.
    assert _table(users) == {
        "user_id": ["1", "2", "3", "4", "5", "6", "7"],
        "country": ["US"] * 7,
        "region": ["US-4", "US-7", "US-5", "US-0", "US-9", None, "US-3"],  # ZIP+4 is numeric
        "age": [16, 60, 30, 47, 21, 40, 53],
        "gender": ["f", "m", "m", "f", "m", "f", "m"],
    }
    assert json.loads((out / "dataset.json").read_text())["name"] == "movielens-1m"


def test_latest_csv(mllatest: Path, tmp_path: Path) -> None:
    out = _import(mllatest, tmp_path)
    users, items, events = _read(out)

    assert _events(events) == [
        (964981247, "1", "3", 0.9),  # 4.5 / 5; tie: ratings.csv line 3 before line 7
        (964981247, "3", "10", 1.0),
        (964982224, "1", "2", 0.1),  # 0.5 / 5
        (964982224, "15", "2", 0.2),
        (964982703, "1", "1", 0.8),
        (964982703, "2", "1", 0.5),
        (1000000000, "3", "4", 0.6),
    ]
    assert items["item_id"].tolist() == ["1", "2", "3", "4", "5", "10"]
    assert items["title"].tolist() == [
        "Toy Story",
        "City of Lost Children, The (Cité des enfants perdus, La)",  # quoted, commas
        "Future Film",
        "Some Documentary",
        "Never Rated",
        "Café Society",
    ]
    assert _values(items["category"]) == [
        "Adventure",
        "Adventure",
        "Sci-Fi",
        None,
        "Drama",
        "Comedy",
    ]
    assert items["upload_time"].tolist() == [
        Y1995,
        Y1995,
        964981247,  # "(2030)": first rating
        1000000000,  # no year: first rating
        Y2001,  # never rated
        964981247,  # "(2016)" but rated in 2000
    ]
    # No users file: the distinct raters, in id order, demographics unknown.
    assert users["user_id"].tolist() == ["1", "2", "3", "15"]
    for column in ("country", "region", "age", "gender"):
        assert users[column].isna().all(), column
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["name"] == "movielens-25m"
    assert meta["params"]["layout"] == "ml-latest"


@pytest.mark.parametrize("layout", ["ml100k", "ml1m", "mllatest"])
def test_tiny_chunks_give_the_same_dataset(
    layout: str, request: pytest.FixtureRequest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="recsys_data.movielens")
    folder: Path = request.getfixturevalue(layout)
    calls: list[tuple[int, int]] = []
    whole = _read(_import(folder, tmp_path / "whole"))
    chunked_out = tmp_path / "chunked" / "out"
    import_movielens(
        folder, chunked_out, chunk_bytes=64, progress=lambda d, t: calls.append((d, t))
    )
    assert validate_dataset(chunked_out).ok
    for a, b in zip(whole, _read(chunked_out), strict=True):
        pd.testing.assert_frame_equal(a, b)
    # Phase 1 reports bytes read, one call a chunk: u.data is 112 bytes (2 chunks of 64),
    # ratings.dat 133 and ratings.csv 161 bytes (3 chunks each).
    size = (
        (folder / {"ml100k": "u.data", "ml1m": "ratings.dat", "mllatest": "ratings.csv"}[layout])
        .stat()
        .st_size
    )
    assert len([d for d, _ in calls if d <= size]) == -(-size // 64)
    assert f"into {-(-size // 64)} sorted runs" in caplog.text
    assert all(t == 2 * size for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (2 * size, 2 * size)


def test_spill_files_are_removed(ml100k: Path, tmp_path: Path) -> None:
    out = _import(ml100k, tmp_path, chunk_bytes=64)
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset.json",
        "events.parquet",
        "items.parquet",
        "users.parquet",
    ]


def test_overwrite(ml100k: Path, tmp_path: Path) -> None:
    out = _import(ml100k, tmp_path)
    with pytest.raises(DatasetError, match="already exists"):
        import_movielens(ml100k, out)
    import_movielens(ml100k, out, overwrite=True)
    assert validate_dataset(out).ok


# ---------------------------------------------------------------- layout detection and errors


def test_detect_layout(ml100k: Path, ml1m: Path, mllatest: Path) -> None:
    assert detect_layout(ml100k) == "ml-100k"
    assert detect_layout(ml1m) == "ml-1m"
    assert detect_layout(str(mllatest)) == "ml-latest"


def test_unrecognised_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not movielens")
    with pytest.raises(DatasetError, match="not a MovieLens folder") as err:
        import_movielens(tmp_path, tmp_path / "out")
    for name in (str(tmp_path), "u.data", "ratings.dat", "ratings.csv"):
        assert name in str(err.value)
    assert not (tmp_path / "out").exists()


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a folder"):
        detect_layout(tmp_path / "missing")


def test_missing_file_of_the_layout(ml1m: Path) -> None:
    (ml1m / "users.dat").unlink()
    with pytest.raises(DatasetError, match=r"ml-1m layout, but users\.dat is missing"):
        detect_layout(ml1m)


@pytest.mark.parametrize("chunk_bytes", [64, 1 << 20])
def test_malformed_rating_names_file_and_line(
    mllatest: Path, tmp_path: Path, chunk_bytes: int
) -> None:
    lines = (mllatest / "ratings.csv").read_text().splitlines()
    lines[5] = "3,4,abc,1000000000"  # line 6
    _write(mllatest / "ratings.csv", lines)
    with pytest.raises(DatasetError, match=r"ratings\.csv, line 6: rating 'abc' is not a number"):
        import_movielens(mllatest, tmp_path / "out", chunk_bytes=chunk_bytes)
    assert not (tmp_path / "out").exists()


def test_out_of_range_rating(ml100k: Path, tmp_path: Path) -> None:
    lines = (ml100k / "u.data").read_text().splitlines()
    lines[2] = "1\t3\t6\t880000000"  # line 3: 6 stars
    _write(ml100k / "u.data", lines)
    with pytest.raises(DatasetError, match=r"u\.data, line 3: rating 6 is outside \(0, 5\]"):
        import_movielens(ml100k, tmp_path / "out")


def test_rating_of_an_unlisted_movie(ml1m: Path, tmp_path: Path) -> None:
    with (ml1m / "ratings.dat").open("a") as f:
        f.write("1::99::3::978300000\n")  # line 8
    with pytest.raises(DatasetError, match=r"ratings\.dat, line 8: movie 99 is not in the movies"):
        import_movielens(ml1m, tmp_path / "out")


def test_wrong_field_count_in_ratings_dat(ml1m: Path, tmp_path: Path) -> None:
    lines = (ml1m / "ratings.dat").read_text().splitlines()
    lines[1] = "2::3::978300100"  # line 2: the rating is missing
    _write(ml1m / "ratings.dat", lines)
    with pytest.raises(DatasetError, match=r"ratings\.dat, line 2: expected 4 fields"):
        import_movielens(ml1m, tmp_path / "out")


def test_bad_age_code(ml1m: Path, tmp_path: Path) -> None:
    lines = (ml1m / "users.dat").read_text().splitlines()
    lines[1] = "2::M::30::16::70072"  # line 2: 30 is no bucket code
    _write(ml1m / "users.dat", lines)
    with pytest.raises(DatasetError, match=r"users\.dat, line 2: age code 30 is not one of"):
        import_movielens(ml1m, tmp_path / "out")


def test_short_u_item_line(ml100k: Path, tmp_path: Path) -> None:
    lines = (ml100k / "u.item").read_bytes().decode("latin-1").splitlines()
    lines[1] = "2|Café au lait (1993)|01-Jan-1993"  # line 2
    _write(ml100k / "u.item", lines, encoding="latin-1")
    with pytest.raises(DatasetError, match=r"u\.item, line 2: expected 24 '\|'-separated fields"):
        import_movielens(ml100k, tmp_path / "out")


def test_bad_movies_csv_header(mllatest: Path, tmp_path: Path) -> None:
    text = (mllatest / "movies.csv").read_text().replace("movieId,title", "id,title", 1)
    (mllatest / "movies.csv").write_text(text)
    with pytest.raises(DatasetError, match=r"movies\.csv, line 1: expected the header"):
        import_movielens(mllatest, tmp_path / "out")


# ---------------------------------------------------------------- mapping helpers


def test_split_title_year() -> None:
    assert split_title_year("Toy Story (1995)") == ("Toy Story", 1995)
    assert split_title_year("Shichinin no samurai (Seven Samurai) (1954) ") == (
        "Shichinin no samurai (Seven Samurai)",
        1954,
    )
    assert split_title_year("Babylon 5 (1994–1998)") == ("Babylon 5", 1994)
    assert split_title_year("Millions Game, The (Das Millionenspiel)") == (
        "Millions Game, The (Das Millionenspiel)",
        None,
    )


def test_zip_region_and_first_genre() -> None:
    assert zip_region("85711") == "US-8"
    assert zip_region("01002") == "US-0"
    assert zip_region("98107-2117") == "US-9"
    assert zip_region("T8H1N") is None
    assert zip_region("L9G 2B8") is None
    assert first_genre(["unknown", "Thriller"]) == "Thriller"
    assert first_genre(["(no genres listed)"]) is None
    assert first_genre([]) is None


# ---------------------------------------------------------------- the external merge


def test_merge_runs_is_a_stable_sort(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    runs, frames = [], []
    for k in range(7):
        n = int(rng.integers(0, 40))
        ts = np.sort(rng.integers(0, 15, n))  # few distinct times: many ties within/across runs
        frame = pd.DataFrame({"timestamp": ts, "run": k, "row": np.arange(n)})
        frames.append(frame)
        runs.append(tmp_path / f"run-{k}.parquet")
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), runs[-1])
    merged = pa.concat_tables(list(merge_runs(runs, buffer_rows=21))).to_pandas()  # 3 rows/run
    # Expected: all rows sorted by time, ties in (run, row) order, i.e. file order.
    expected = pd.concat(frames).sort_values("timestamp", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(merged, expected)


def test_many_chunks_match_a_stable_sort(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 600
    ratings = pd.DataFrame(
        {
            "userId": rng.integers(1, 30, n),
            "movieId": rng.integers(1, 9, n),
            "rating": rng.integers(1, 11, n) / 2,
            "timestamp": 1_000_000_000 + rng.integers(0, 50, n),
        }
    )
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    _write(
        folder / "movies.csv",
        ["movieId,title,genres"] + [f"{i},M{i} (1999),Drama" for i in range(1, 9)],
    )
    ratings.to_csv(folder / "ratings.csv", index=False)
    out = _import(folder, tmp_path, chunk_bytes=300)  # ~15 rows a chunk: ~40 runs
    events = _read(out)[2]
    expected = ratings.sort_values("timestamp", kind="stable")
    assert events["timestamp"].tolist() == expected["timestamp"].tolist()
    assert events["user_id"].tolist() == expected["userId"].astype(str).tolist()
    assert events["item_id"].tolist() == expected["movieId"].astype(str).tolist()
    assert events["watch_fraction"].tolist() == (expected["rating"] / 5).astype(np.float32).tolist()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["name"] == "movielens-latest-small"


def test_lines_longer_than_a_chunk(ml1m: Path, tmp_path: Path) -> None:
    # 19-byte lines in 5-byte chunks: each block grows until it holds a whole line.
    whole = _read(_import(ml1m, tmp_path / "whole"))
    for a, b in zip(whole, _read(_import(ml1m, tmp_path / "tiny", chunk_bytes=5)), strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_empty_field_in_ratings_csv(mllatest: Path, tmp_path: Path) -> None:
    lines = (mllatest / "ratings.csv").read_text().splitlines()
    lines[7] = "15,,1.0,964982224"  # line 8: no movie id
    _write(mllatest / "ratings.csv", lines)
    with pytest.raises(DatasetError, match=r"ratings\.csv, line 8: movie id '' is not an integer"):
        import_movielens(mllatest, tmp_path / "out", chunk_bytes=64)

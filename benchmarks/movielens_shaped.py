"""A synthetic ratings folder in the MovieLens 1M layout (not MovieLens data) for benchmarks.

``movies.dat``, ``users.dat`` and ``ratings.dat`` as GroupLens writes them (``::``-separated,
latin-1 titles), for ``recsys data import movielens``: 3,000 users and 1,500 movies by
default, each user rating 20-500 distinct movies (log-normal, median about 70), never one
twice. The order carries signal, as in real ratings logs: after a movie, the next is its
sequel (the next movie id) with probability 0.25, else a movie of the same genre with
probability 0.35, else one of the user's preferred genres; within a genre, by a Zipf
popularity. Gaps between ratings are exponential (mean 6 hours).

    .venv/bin/python benchmarks/movielens_shaped.py /tmp/ml-shaped --seed 0
    .venv/bin/recsys data import movielens --source /tmp/ml-shaped --out /tmp/ml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
AGES = (1, 18, 25, 35, 45, 50, 56)  # MovieLens 1M's age buckets
SEQUEL, SAME_GENRE = 0.25, 0.6  # cumulative probabilities of the next rating's source


def _user_ratings(
    rng: np.random.Generator, genre: np.ndarray, popularity: np.ndarray, user: int
) -> list[str]:
    """One user's ``ratings.dat`` lines, in time order."""
    movies = len(genre)
    by_genre = [np.flatnonzero(genre == g) for g in range(len(GENRES))]
    preference = rng.dirichlet(np.full(len(GENRES), 0.3))
    count = int(min(movies // 3, max(20, rng.lognormal(4.2, 0.8))))
    seen = np.zeros(movies, dtype=bool)
    t = int(rng.integers(956_000_000, 1_040_000_000))
    previous, lines = -1, []
    for _ in range(count):
        r = rng.random()
        if previous >= 0 and r < SEQUEL and previous + 1 < movies and not seen[previous + 1]:
            movie = previous + 1
        else:
            same = previous >= 0 and r < SAME_GENRE
            g = genre[previous] if same else rng.choice(len(GENRES), p=preference)
            candidates = by_genre[g][~seen[by_genre[g]]]
            if not len(candidates):
                candidates = np.flatnonzero(~seen)
            weights = popularity[candidates] / popularity[candidates].sum()
            movie = int(rng.choice(candidates, p=weights))
        seen[movie] = True
        previous = movie
        t += int(rng.exponential(6 * 3600)) + 60
        lines.append(f"{user + 1}::{movie + 1}::{int(rng.integers(1, 6))}::{t}\n")
    return lines


def write(out: Path, users: int, movies: int, seed: int) -> int:
    """Write the three files into ``out``; returns the number of ratings."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    genre = rng.integers(0, len(GENRES), movies)
    second = rng.integers(0, len(GENRES), movies)
    popularity = np.minimum(rng.zipf(1.3, movies), 500).astype(np.float64)
    with (out / "movies.dat").open("w", encoding="latin-1") as f:
        for m in range(movies):
            names = GENRES[genre[m]] + (f"|{GENRES[second[m]]}" if second[m] != genre[m] else "")
            f.write(f"{m + 1}::Movie {m + 1} ({1950 + m % 50})::{names}\n")
    with (out / "users.dat").open("w") as f:
        for u in range(users):
            gender, age = "FM"[rng.integers(2)], AGES[rng.integers(len(AGES))]
            f.write(f"{u + 1}::{gender}::{age}::{rng.integers(21)}::{10000 + u}\n")
    total = 0
    with (out / "ratings.dat").open("w") as f:
        for u in range(users):
            lines = _user_ratings(rng, genre, popularity, u)
            f.writelines(lines)
            total += len(lines)
    return total


def main() -> None:
    """Parse the arguments and write the folder."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder to write the three .dat files into")
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--movies", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"{write(args.out, args.users, args.movies, args.seed)} ratings in {args.out}")


if __name__ == "__main__":
    main()

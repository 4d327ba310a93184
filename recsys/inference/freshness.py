"""The freshness term at the request's moment: each candidate's upload age when it is served.

With ``model.freshness`` a candidate embedding is ``v = [cos(psi(age)) * main, sin(psi(age))]``
and a query ``q = [q_main, sin(phi)]`` (:func:`recsys.model.towers.with_freshness`), so the
logit is ``cos(psi(age)) * (q_main . main) + sin(phi) * sin(psi(age))`` and ``main`` does not
depend on age. An index over the export's embeddings holds every age as it was at the
export; :class:`FreshnessTerm` keeps the learned curve ``sin(psi)`` per age bucket and gives
the logits with the ages at any moment, from the age-independent part
(:func:`age_independent`).

The moment a request's ages are taken at is the start of its UTC day (:func:`age_moment`):
the training loss takes each pair's age so (:class:`recsys.model.two_tower.TwoTowerModel`),
so a bucket means what it meant in training. Which videos are served is decided at the
request's own time: one uploaded an hour ago is served, at age 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.features.contract import FRESHNESS_EDGES_DAYS, SECONDS_PER_DAY
from recsys.inference.candidate_embedder import (
    STRING_FEATURES,
    CandidateEmbedder,
    upload_age_days,
)

# Rows per matrix-vector product in rowwise_dot: below the size at which OpenBLAS spreads a
# product over its threads (measured on the 2-core machine: 1,024 x 64 stays on the calling
# thread, 2,048 x 64 does not).
_DOT_CHUNK_ROWS = 1024


def rowwise_dot(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``vectors: [m, d] @ query: [d]`` -> float32 ``[m]``, on the calling thread.

    In blocks of :data:`_DOT_CHUNK_ROWS`: OpenBLAS spreads a product of a few thousand rows
    over its threads, which on a loaded 2-core server took 3-16 ms instead of 0.1 ms for
    10,000 x 64 (measured); each block's product still releases the GIL.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    query = np.asarray(query, dtype=np.float32)
    out = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), _DOT_CHUNK_ROWS):
        stop = start + _DOT_CHUNK_ROWS
        np.matmul(vectors[start:stop], query, out=out[start:stop])
    return out


def age_moment(request_time: int) -> int:
    """The moment upload ages are taken at for a request at ``request_time``: its day start."""
    day = int(SECONDS_PER_DAY)
    return int(request_time) // day * day


def age_independent(embeddings: np.ndarray) -> np.ndarray:
    """``[n, d]`` candidate embeddings -> ``[main, 0]`` ``[n, d]`` float32 (unit ``main``).

    ``v[:-1] / cos(psi)`` recovers ``main`` (``cos(psi) = sqrt(1 - v[-1]^2)`` > 0 because the
    curve's sines are tanh values); the zero last coordinate makes ``q . [main, 0]`` the
    age-independent ``q_main . main`` for a full query ``q: [d]``.
    """
    v = np.asarray(embeddings, dtype=np.float32)
    cosine = np.sqrt(np.maximum(1.0 - np.square(v[:, -1:]), 1e-12))
    out = np.zeros_like(v)
    out[:, :-1] = v[:, :-1] / cosine
    return out


class FreshnessTerm:
    """The learned freshness curve: ``sines: [len(FRESHNESS_EDGES_DAYS) + 1]``, one per bucket."""

    def __init__(self, sines: np.ndarray) -> None:
        """``sines``: ``sin(psi)`` of bucket 0 ([0, 1 day)) up to the last (730 days and more)."""
        self.sines = np.asarray(sines, dtype=np.float32)
        self.edges = np.asarray(FRESHNESS_EDGES_DAYS, dtype=np.float32)
        if self.sines.shape != (len(self.edges) + 1,) or not np.all(np.abs(self.sines) < 1):
            raise ValueError(
                f"freshness sines must be {len(self.edges) + 1} values in (-1, 1), got "
                f"{self.sines.shape} {self.sines[:4]}"
            )

    def sine(self, age_days: np.ndarray) -> np.ndarray:
        """``sin(psi(age))`` for ``age_days: [n]`` (the towers' buckets): float32 ``[n]``."""
        return self.sines[np.searchsorted(self.edges, age_days, side="right")]

    def logits(
        self,
        query: np.ndarray,
        main: np.ndarray,
        upload_time: np.ndarray,
        request_time: int,
    ) -> np.ndarray:
        """Exact logits ``[m]`` of ``query: [d]`` with videos ``main: [m, d]`` (from
        :func:`age_independent`) uploaded at ``upload_time: [m]``, aged at ``request_time``."""
        sine = self.sine(upload_age_days(upload_time, request_time))
        cosine = np.sqrt(1.0 - np.square(sine))
        return (cosine * (main @ query) + query[-1] * sine).astype(np.float32)

    def embeddings(self, main: np.ndarray, upload_time: np.ndarray, moment: int) -> np.ndarray:
        """Candidate embeddings ``[m, d]`` at ``moment``: ``[cos(psi) * main, sin(psi)]``."""
        sine = self.sine(upload_age_days(upload_time, moment))
        out = main * np.sqrt(1.0 - np.square(sine))[:, None]
        out[:, -1] = sine
        return out.astype(np.float32)


def read_freshness_term(
    candidate_model: Path, content_dim: int | None, reference_time: int
) -> FreshnessTerm:
    """The curve of ``candidate_model`` (a candidate SavedModel with freshness on).

    Embeds one featureless video at one age per bucket through the one embedding path
    (:class:`~recsys.inference.candidate_embedder.CandidateEmbedder`); the last coordinate of
    each embedding is that bucket's sine, whatever the other features.
    """
    ages = np.array([0.0, *FRESHNESS_EDGES_DAYS])
    upload = reference_time - (ages * SECONDS_PER_DAY).astype(np.int64)
    strings = {name: np.full(len(ages), "", dtype=object) for name in STRING_FEATURES}
    content = None if content_dim is None else np.zeros((len(ages), content_dim), np.float32)
    embedded = CandidateEmbedder(candidate_model, strings, upload, content)(reference_time)
    return FreshnessTerm(embedded[:, -1])


_CACHED_DAYS = 8


class AgedCatalog:
    """A catalog's age-independent part and upload times: its logits at any moment.

    ``main: [n, d]`` (:func:`age_independent`), ``upload_time: [n]`` Unix s, row-aligned with
    the served catalog; :meth:`young` finds the videos uploaded shortly before a moment by
    binary search over the upload times.
    """

    def __init__(self, term: FreshnessTerm, main: np.ndarray, upload_time: np.ndarray) -> None:
        """Hold ``main`` and ``upload_time`` (row-aligned) with the curve ``term``."""
        if len(main) != len(upload_time):
            raise ValueError(f"{len(main)} embeddings but {len(upload_time)} upload times")
        self.term = term
        self.main = main
        self.upload_time = np.asarray(upload_time, dtype=np.int64)
        self._by_upload = np.argsort(self.upload_time, kind="stable")
        self._sorted_upload = self.upload_time[self._by_upload]
        # Day start -> (cos, sin) of every row: ages change once a day, so a request gathers
        # its candidates' terms instead of bucketing their ages (a few recent days kept).
        self._terms: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def day_terms(self, request_time: int) -> tuple[np.ndarray, np.ndarray]:
        """``cos(psi)``, ``sin(psi)`` float32 ``[n]`` of every row for a request then."""
        day = age_moment(request_time)
        terms = self._terms.get(day)
        if terms is None:
            sine = self.term.sine(upload_age_days(self.upload_time, day))
            terms = (np.sqrt(1.0 - np.square(sine)).astype(np.float32), sine)
            if len(self._terms) >= _CACHED_DAYS:
                self._terms.pop(min(self._terms), None)
            self._terms[day] = terms
        return terms

    def logits(self, query: np.ndarray, rows: np.ndarray, request_time: int) -> np.ndarray:
        """Exact logits ``[m]`` of ``query: [d]`` with catalog ``rows: [m]`` for a request at
        ``request_time`` (ages at :func:`age_moment`)."""
        cosine, sine = self.day_terms(request_time)
        dots = rowwise_dot(np.take(self.main, rows, axis=0), query)
        return (cosine[rows] * dots + query[-1] * sine[rows]).astype(np.float32)

    def uploaded(self, rows: np.ndarray, request_time: int) -> np.ndarray:
        """Which ``rows`` were uploaded by ``request_time`` (the others are not served yet)."""
        return self.upload_time[rows] <= request_time

    def young(self, request_time: int, horizon_days: float, limit: int) -> np.ndarray:
        """Rows uploaded in the ``horizon_days`` up to ``request_time``, the newest ``limit``."""
        start = np.searchsorted(
            self._sorted_upload, request_time - int(horizon_days * SECONDS_PER_DAY), "left"
        )
        stop = np.searchsorted(self._sorted_upload, request_time, "right")
        return self._by_upload[max(start, stop - limit) : stop]

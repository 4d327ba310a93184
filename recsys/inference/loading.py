"""The files of a served model version, each read and checked into the part it serves.

:func:`read_model_files` reads a version folder (checksums first, unless the caller has just
checked them) into a :class:`ModelFiles`: config, vocabularies, the query tower (checked on
probe features against its SavedModel), the index, the served catalog, the item embeddings
and the stored profiles. Anything missing or inconsistent raises ModelLoadError naming the
file; :class:`recsys.inference.recommender.Recommender` assembles the parts and probes the whole.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from recsys.artifact.catalog import read_catalog
from recsys.artifact.layout import (
    CANDIDATE_MODEL_DIR,
    INDEX_DIR,
    ITEMS_FILE,
    PROFILES_FILE,
    QUERY_MODEL_DIR,
    TFLITE_FILE,
    VOCAB_FILE,
)
from recsys.artifact.profiles import ProfileError, Profiles
from recsys.artifact.reader import open_version
from recsys.artifact.versions import ArtifactError, Manifest
from recsys.config import Config
from recsys.features.context import RequestContext, encode_request
from recsys.features.vocab import Vocabularies
from recsys.index.base import Index, IndexLoadError
from recsys.index.registry import load_index
from recsys.inference.freshness import AgedCatalog, age_independent, read_freshness_term
from recsys.inference.query_tower import QueryTower, TowerLoadError, load_query_tower
from recsys.inference.request import ModelLoadError, RecommenderOptions
from recsys.inference.served_catalog import (
    SERVED_COLUMNS,
    CatalogLoadError,
    ServedCatalog,
    served_catalog,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """A version's parts, read and checked one by one (not yet probed together)."""

    path: Path
    manifest: Manifest
    config: Config
    vocabs: Vocabularies
    tower: QueryTower
    index: Index
    catalog: ServedCatalog
    embeddings: np.ndarray
    profiles: Profiles | None
    aged: AgedCatalog | None  # the freshness term at any moment; None: the model has none


def read_model_files(path: Path, options: RecommenderOptions, verify: bool = True) -> ModelFiles:
    """Read version folder ``path``; ModelLoadError naming the file when one is wrong.

    Verifies every file's sha256 against the manifest first, unless ``verify`` is False
    (the caller has just verified this folder).
    """
    try:
        version = open_version(path, verify=verify)
    except ArtifactError as exc:
        raise ModelLoadError(str(exc)) from exc
    path, config, dim = version.path, version.settings.config, version.settings.embedding_dim
    try:
        vocabs = Vocabularies.load(path / VOCAB_FILE)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
    try:
        tower = load_query_tower(
            path / QUERY_MODEL_DIR,
            _tower_probes(vocabs, config),
            options.tower_runtime,
            path / TFLITE_FILE,
        )
    except TowerLoadError as exc:
        raise ModelLoadError(str(exc)) from exc
    try:
        index = load_index(path / INDEX_DIR, expected_dim=dim)
    except (IndexLoadError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{path / INDEX_DIR}: {exc}") from exc
    try:
        files = read_catalog(version, columns=(*SERVED_COLUMNS, "upload_time"))
        catalog = served_catalog(files.items, path / ITEMS_FILE)
    except (ArtifactError, CatalogLoadError) as exc:
        raise ModelLoadError(str(exc)) from exc
    embeddings = files.embeddings
    if len(index) != len(catalog.row_of):
        raise ModelLoadError(
            f"{path / INDEX_DIR}: {len(index)} live items, {ITEMS_FILE} has {len(catalog.row_of)}"
        )
    profiles = None
    if (path / PROFILES_FILE).is_file():
        try:
            profiles = Profiles.load(path / PROFILES_FILE)
        except ProfileError as exc:
            raise ModelLoadError(str(exc)) from exc
    else:
        log.warning("%s: no %s; requests need an explicit context", path, PROFILES_FILE)
    aged = None
    if config.model.freshness:
        try:
            term = read_freshness_term(
                path / CANDIDATE_MODEL_DIR,
                version.settings.content_dim,
                version.settings.reference_time,
            )
        except (ArtifactError, ValueError) as exc:
            raise ModelLoadError(f"{path / CANDIDATE_MODEL_DIR}: {exc}") from exc
        upload_time = files.items.column("upload_time").to_numpy().astype(np.int64)
        aged = AgedCatalog(term, age_independent(embeddings), upload_time)
    return ModelFiles(
        path, version.manifest, config, vocabs, tower, index, catalog, embeddings, profiles, aged
    )


def _tower_probes(vocabs: Vocabularies, config: Config) -> list[dict[str, np.ndarray]]:
    """Query features that exercise every input of the tower: empty, typical, a batch."""
    now = int(time.time())
    known = vocabs.items.values[:60]
    contexts = [
        RequestContext(request_time=now),
        RequestContext(
            watch_history=known,
            watch_times=[now - 3600 * (len(known) - i) for i in range(len(known))],
            searches=["probe query", *vocabs.tokens.values[:12]],
            search_times=[now - 7200] + [now - 60 * (13 - i) for i in range(12)],
            country=next(iter(vocabs.countries.values), None),
            region=next(iter(vocabs.regions.values), None),
            age=37,
            gender=next(iter(vocabs.genders.values), None),
            request_time=now,
        ),
        RequestContext(watch_history=known[:3], searches=["x"], age=19, request_time=now),
    ]
    probes = [encode_request(ctx, vocabs, config.features) for ctx in contexts]
    batch = {name: np.concatenate([p[name] for p in probes]) for name in probes[0]}
    return [*probes, batch]

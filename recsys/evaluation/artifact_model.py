"""An exported model version as the evaluation uses it: query embeddings, exact ranking.

:class:`ArtifactModel` reads an artifact version, its checksums verified (config, catalog,
item embeddings, vocabularies), and embeds queries with the query SavedModel's ``serve_ids``;
:func:`model_features` maps evaluation examples to the features that signature takes,
remapping ids when the examples were built with other vocabularies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.artifact.catalog import read_catalog
from recsys.artifact.layout import (
    CANDIDATE_MODEL_DIR,
    INDEX_DIR,
    ITEMS_FILE,
    QUERY_MODEL_DIR,
    VOCAB_FILE,
)
from recsys.artifact.reader import open_version
from recsys.evaluation.exclusion import Watched
from recsys.evaluation.ranking import rank_by_day
from recsys.features import contract as F
from recsys.features.vocab import Vocabularies, Vocabulary
from recsys.index.registry import load_index
from recsys.inference.candidate_embedder import STRING_FEATURES, CandidateEmbedder
from recsys.inference.freshness import AgedCatalog, age_independent, read_freshness_term
from recsys.inference.retrieval import Retriever
from recsys.inference.served_catalog import served_catalog

log = logging.getLogger(__name__)


class ArtifactModel:
    """An exported model version: query SavedModel, item embeddings, vocabularies, index."""

    def __init__(self, path: str | Path, verify: bool = True) -> None:
        """Open version or model folder ``path``, its checksums verified unless ``verify`` is
        False (the caller has just verified it); ArtifactError naming what is wrong."""
        version = open_version(path, verify=verify)
        self.version_dir = version.path
        self.manifest = version.manifest
        self.config = version.settings.config
        self.reference_time = version.settings.reference_time
        self.content_dim = version.settings.content_dim  # None: no content input
        self.temperature = float(self.config.model.temperature)
        catalog = read_catalog(version)
        self.items = catalog.items.to_pandas()
        self.item_embeddings = catalog.embeddings
        self.vocabularies = Vocabularies.load(self.version_dir / VOCAB_FILE)
        self._serve_ids: Any = None

    @property
    def label(self) -> str:
        """``name/version`` of the artifact."""
        return f"{self.manifest.name}/{self.manifest.version}"

    def _signature(self) -> Any:
        if self._serve_ids is None:
            import tensorflow as tf  # TensorFlow: only once queries are embedded

            loaded = tf.saved_model.load(str(self.version_dir / QUERY_MODEL_DIR))
            self._loaded = loaded  # keep the module alive while the signature is used
            self._serve_ids = loaded.signatures["serve_ids"]
        return self._serve_ids

    def input_specs(self) -> dict[str, Any]:
        """``serve_ids``' input ``tf.TensorSpec`` by feature name."""
        return dict(self._signature().structured_input_signature[1])

    def query_embeddings(
        self,
        features: Mapping[str, np.ndarray],
        batch_size: int = 4096,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Query embeddings ``[n, d]`` from id features ``[n, ...]`` through ``serve_ids``."""
        import tensorflow as tf  # TensorFlow: only once queries are embedded

        fn = self._signature()
        specs = self.input_specs()
        n = len(features[F.HISTORY])
        chunks = []
        for start in range(0, n, batch_size):
            args = {
                name: tf.constant(
                    np.asarray(features[name][start : start + batch_size]), spec.dtype
                )
                for name, spec in specs.items()
            }
            chunks.append(fn(**args)["query_embedding"].numpy())
            if progress:
                progress(min(start + batch_size, n), n)
        if not chunks:
            return np.zeros((0, self.item_embeddings.shape[1]), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32)

    def rank_exact(
        self,
        query_embeddings: np.ndarray,
        query_times: np.ndarray,
        items: pd.DataFrame,
        content: np.ndarray | None,
        k: int,
        excluded: Watched | None = None,
    ) -> np.ndarray:
        """Exact top-``k`` catalog rows ``[n, k]``, the catalog as it stood each query's day.

        Every video is embedded by the candidate SavedModel with its upload age at the start
        of the query's UTC day, and videos uploaded after that are left out
        (:func:`recsys.evaluation.ranking.rank_by_day`): what an index rebuilt daily would serve,
        and
        the training job's validation protocol. (``item_embeddings.npy`` holds the catalog
        at the training cut-off only: it would give every later upload age 0 and rank
        videos not yet uploaded.) ``excluded``: each query's rows left out (watched videos).
        """
        strings = {
            name: items[name].fillna("").astype(str).to_numpy(dtype=object)
            for name in STRING_FEATURES
        }
        upload = items["upload_time"].to_numpy(np.int64)
        wants_content = self.content_dim is not None and content is not None
        embed = CandidateEmbedder(
            self.version_dir / CANDIDATE_MODEL_DIR,
            strings,
            upload,
            content if wants_content else None,
            batch_size=8192,
        )
        return rank_by_day(query_embeddings, query_times, embed, upload, k, excluded)

    def rank_served(
        self, query_embeddings: np.ndarray, query_times: np.ndarray, k: int
    ) -> tuple[np.ndarray, str] | None:
        """Top-``k`` rows ``[n, k]`` as serving retrieves them at each query's time (Unix s,
        ``[n]``), and the index's kind; None without an index. Slots past the catalog: -1."""
        index_dir = self.version_dir / INDEX_DIR
        if not index_dir.is_dir():
            return None
        index = load_index(index_dir, expected_dim=self.item_embeddings.shape[1])
        table = pa.Table.from_pandas(self.items, preserve_index=False)
        catalog = served_catalog(table, self.version_dir / ITEMS_FILE)
        aged = None
        if self.config.model.freshness:
            term = read_freshness_term(
                self.version_dir / CANDIDATE_MODEL_DIR, self.content_dim, self.reference_time
            )
            upload = self.items["upload_time"].to_numpy(np.int64)
            aged = AgedCatalog(term, age_independent(self.item_embeddings), upload)
        retriever = Retriever(index, catalog, self.item_embeddings, aged=aged)
        out = np.full((len(query_embeddings), k), -1, dtype=np.int64)
        none = np.empty(0, dtype=np.int64)
        for i, (query, moment) in enumerate(zip(query_embeddings, query_times, strict=True)):
            rows, logits, _ = retriever.candidates(query, k, none, None, int(moment))
            rows, _ = retriever.rank(rows, logits, none, None)
            out[i, : min(k, len(rows))] = rows[:k]
        return out, str(index.config.kind)


def _vocab_map(src: Vocabulary, dst: Vocabulary) -> np.ndarray:
    """``[len(src)]`` ids in ``dst`` of every id of ``src`` (PAD and OOV map to themselves)."""
    mapped = dst.lookup(src.values) if src.values else np.zeros(0, np.int32)
    return np.concatenate([[F.PAD, F.OOV], mapped]).astype(np.int32)


def remap_query_ids(
    features: Mapping[str, np.ndarray], src: Vocabularies, dst: Vocabularies
) -> dict[str, np.ndarray]:
    """Query id features encoded with ``src`` re-encoded with ``dst`` (unknown history dropped).

    Used when the examples' vocabularies are not the model's (another split or version).
    """
    out = dict(features)
    for name, attr in (
        (F.HISTORY, "items"),
        (F.SEARCH_TOKENS, "tokens"),
        (F.LAST_SEARCH_TOKENS, "tokens"),
        (F.COUNTRY, "countries"),
        (F.REGION, "regions"),
        (F.GENDER, "genders"),
    ):
        table = _vocab_map(getattr(src, attr), getattr(dst, attr))
        out[name] = table[np.asarray(features[name], dtype=np.int64)]
    # History keeps known videos only, packed to the front (as the serving path does).
    hist = out[F.HISTORY]
    keep = hist > F.OOV
    order = np.argsort(~keep, axis=1, kind="stable")
    packed = np.take_along_axis(hist, order, axis=1)
    packed[~np.take_along_axis(keep, order, axis=1)] = F.PAD
    out[F.HISTORY] = packed.astype(np.int32)
    return out


def _same_vocabularies(a: Vocabularies, b: Vocabularies) -> bool:
    return all(
        getattr(a, name).values == getattr(b, name).values
        for name in ("items", "tokens", "countries", "regions", "genders")
    )


def model_features(
    queries: Mapping[str, np.ndarray], examples_vocab: Vocabularies, model: ArtifactModel
) -> dict[str, np.ndarray]:
    """The query features of ``queries`` as ``model`` reads them."""
    feats = {name: queries[name] for name in F.QUERY_FEATURES}
    if _same_vocabularies(examples_vocab, model.vocabularies):
        return feats
    log.info("re-encoding query ids with the vocabularies of %s", model.label)
    return remap_query_ids(feats, examples_vocab, model.vocabularies)

"""Candidate embeddings of videos from an artifact's candidate SavedModel, at any reference time.

The SavedModel's raw-feature signature takes the features an items file holds (ids, channel,
category, title, upload age, content embedding), so a video embedded here is embedded exactly
as the export embedded the catalog: used to add new videos to an index and to rank the
catalog as it stood on each day of an evaluation.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from recsys.artifact.versions import ArtifactError
from recsys.features.contract import SECONDS_PER_DAY
from recsys.logs import ProgressFn

CONTENT_COLUMN = "content_embedding"
STRING_FEATURES = ("item_id", "channel", "category", "title")
UPLOAD_AGE = "upload_age"
OUTPUT = "candidate_embedding"
DEFAULT_EMBED_BATCH = 1024


def upload_age_days(upload_time: np.ndarray, reference_time: int) -> np.ndarray:
    """Days from `upload_time: [n]` (Unix s) to `reference_time`, clipped at 0: float32 `[n]`."""
    age_s = np.int64(reference_time) - np.asarray(upload_time, dtype=np.int64)
    return (np.maximum(age_s, 0) / SECONDS_PER_DAY).astype(np.float32)


class CandidateEmbedder:
    """A catalog embedded by the candidate SavedModel's raw signature, at any reference time.

    The string features (``item_id``, ``channel``, ``category``, ``title``; "" for unknown),
    upload times and content embeddings are fixed; :meth:`__call__` gives the embeddings with
    each video's upload age at ``reference_time`` (the model is loaded once).
    """

    def __init__(
        self,
        candidate_model: Path,
        strings: dict[str, np.ndarray],
        upload_time: np.ndarray,
        content_embedding: np.ndarray | None,
        batch_size: int = DEFAULT_EMBED_BATCH,
    ) -> None:
        """Load ``candidate_model``; ArtifactError unless it takes exactly the features given."""
        # TensorFlow: only when a model is loaded, so that importing this module stays light.
        import tensorflow as tf

        from recsys.model.signatures import CANDIDATE_SIGNATURE

        self._loaded = tf.saved_model.load(str(candidate_model))
        self._serve = self._loaded.signatures[CANDIDATE_SIGNATURE]
        self._wanted = sorted(self._serve.structured_input_signature[1])
        wants_content = CONTENT_COLUMN in self._wanted
        if wants_content != (content_embedding is not None):
            raise ArtifactError(
                f"{candidate_model}: the candidate model "
                f"{'takes' if wants_content else 'has no'} content_embedding input, but "
                "config.json content_dim says otherwise: the artifact is inconsistent"
            )
        unknown = sorted(set(self._wanted) - set(STRING_FEATURES) - {CONTENT_COLUMN, UPLOAD_AGE})
        if unknown:
            raise ArtifactError(
                f"{candidate_model}: the candidate model's {CANDIDATE_SIGNATURE} signature "
                f"takes inputs {unknown} that a canonical items file does not provide"
            )
        self._batch_size = batch_size
        self._bind(strings, upload_time, content_embedding)

    def _bind(
        self,
        strings: dict[str, np.ndarray],
        upload_time: np.ndarray,
        content_embedding: np.ndarray | None,
    ) -> None:
        self._inputs: dict[str, np.ndarray] = {n: strings[n] for n in STRING_FEATURES}
        if content_embedding is not None:
            self._inputs[CONTENT_COLUMN] = np.asarray(content_embedding, dtype=np.float32)
        self._upload_time = np.asarray(upload_time, dtype=np.int64)

    def with_videos(
        self,
        strings: dict[str, np.ndarray],
        upload_time: np.ndarray,
        content_embedding: np.ndarray | None,
    ) -> CandidateEmbedder:
        """Another catalog embedded by the same loaded model (no second load)."""
        if (CONTENT_COLUMN in self._wanted) != (content_embedding is not None):
            raise ValueError("content_embedding must be given exactly when the model takes it")
        other = copy.copy(self)
        other._bind(strings, upload_time, content_embedding)
        return other

    def __len__(self) -> int:
        """Videos in the catalog."""
        return len(self._upload_time)

    def __call__(self, reference_time: int, progress: ProgressFn | None = None) -> np.ndarray:
        """Candidate embeddings ``[n, d]`` with upload ages at ``reference_time``."""
        # TensorFlow: already imported by __init__; named here for the tensors it builds.
        import tensorflow as tf

        ages = upload_age_days(self._upload_time, reference_time)
        inputs = dict(self._inputs, **{UPLOAD_AGE: ages})
        outputs = []
        total = len(self)
        for start in range(0, total, self._batch_size):
            stop = min(total, start + self._batch_size)
            feeds = {name: tf.constant(inputs[name][start:stop]) for name in self._wanted}
            outputs.append(self._serve(**feeds)[OUTPUT].numpy().astype(np.float32))
            if progress is not None:
                progress(stop, total)
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)

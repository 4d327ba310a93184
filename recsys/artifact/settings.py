"""A version's ``config.json``: the model's Config and the facts its readers need, checked.

Written by the export, read by every reader (serving, evaluation, index operations) through
:func:`read_settings`, which refuses a file whose fields are missing or of the wrong type
with an :class:`~recsys.artifact.versions.ArtifactError` naming the file and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.artifact.versions import ArtifactError
from recsys.config import Config


@dataclass(frozen=True)
class ModelSettings:
    """What ``config.json`` records about a model version."""

    config: Config
    embedding_dim: int  # length of the query and candidate embeddings
    content_dim: int | None  # length of the content embedding input; None: no content input
    reference_time: int  # Unix seconds the item embeddings' upload ages are measured to
    vocabulary_sizes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        """The text of ``config.json``."""
        raw = {
            "config": self.config.to_dict(),
            "vocabulary_sizes": self.vocabulary_sizes,
            "content_dim": self.content_dim,
            "reference_time": self.reference_time,
            "embedding_dim": self.embedding_dim,
        }
        return json.dumps(raw, indent=2) + "\n"


def _positive_int(raw: dict[str, Any], key: str, path: Path, may_be_none: bool = False) -> Any:
    value = raw.get(key)
    if may_be_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ArtifactError(f"{path}: {key} must be a positive int: {value!r}")
    return value


def read_settings(path: Path) -> ModelSettings:
    """Read and check ``config.json`` at ``path``; ArtifactError naming what is wrong."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: unreadable ({error})") from error
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    embedding_dim = _positive_int(raw, "embedding_dim", path)
    content_dim = _positive_int(raw, "content_dim", path, may_be_none=True)
    reference_time = raw.get("reference_time")
    if isinstance(reference_time, bool) or not isinstance(reference_time, int):
        raise ArtifactError(
            f"{path}: reference_time must be Unix seconds (int): {reference_time!r}"
        )
    try:
        config = Config.from_dict(raw["config"], source=str(path))
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactError(f"{path}: not a valid model config ({error})") from error
    sizes = raw.get("vocabulary_sizes") or {}
    return ModelSettings(config, embedding_dim, content_dim, reference_time, dict(sizes))

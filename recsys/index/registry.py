"""Build or load an index by kind: the one place that knows every `Index` implementation.

A new index kind is a subclass of `recsys.index.base.Index` plus an entry in `_CLASSES`.
Importing this module does not import ScaNN or TensorFlow; building or loading a ScaNN
index does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recsys.index._storage import read_kind
from recsys.index.base import IdsLike, Index, IndexConfig
from recsys.index.exact import ExactIndex
from recsys.index.scann_index import ScannIndex

logger = logging.getLogger(__name__)

_CLASSES: dict[str, type[Index]] = {"exact": ExactIndex, "scann": ScannIndex}


def build_index(ids: IdsLike, embeddings: np.ndarray, config: IndexConfig | None = None) -> Index:
    """Build the kind `config` asks for ("auto": by corpus size) over `embeddings: [n, dim]`."""
    config = config or IndexConfig()
    num_items = np.shape(embeddings)[0] if np.ndim(embeddings) >= 1 else 0
    kind = config.resolve(num_items).kind if num_items > 0 else config.kind
    logger.info("building a %s index over %d items", kind, num_items)
    # "auto" over no items stays "auto": an empty exact index, as before any kind is known.
    return _CLASSES.get(kind, ExactIndex).build(ids, embeddings, config)


def load_index(directory: str | Path, *, expected_dim: int | None = None) -> Index:
    """Load an index of whatever kind its own `index.json` names."""
    return _CLASSES[read_kind(directory)].load(directory, expected_dim=expected_dim)

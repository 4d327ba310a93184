"""ScaNN itself: build a searcher from a config, load one from its files, check its dataset.

The only module that imports `scann` (which imports TensorFlow, ~7 s), always lazily.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from recsys.index.base import IndexConfig, IndexLoadError

logger = logging.getLogger(__name__)

_BUILD_NUM_NEIGHBORS = 10  # only a default: every search passes its own k
# Asymmetric hashing trains 16 centres per block and fails below 16 items; a tree over a few
# hundred items saves nothing over brute force anyway.
MIN_TREE_ITEMS = 256


def build_searcher(embeddings: np.ndarray, config: IndexConfig) -> tuple[Any, int | None]:
    """Build a ScaNN searcher over `embeddings: [n, dim]`; return it and its number of leaves."""
    import scann  # imports TensorFlow (~7 s): only when an index is really built

    num_items = embeddings.shape[0]
    builder = scann.scann_ops_pybind.builder(embeddings, _BUILD_NUM_NEIGHBORS, "dot_product")
    num_leaves: int | None = None
    if config.scoring == "brute_force" or num_items < MIN_TREE_ITEMS:
        if config.scoring != "brute_force":
            logger.info("only %d items: ScaNN brute force instead of a tree", num_items)
        builder = builder.score_brute_force()
    else:
        wanted_leaves = required_field(config.num_leaves, "num_leaves")
        num_leaves = min(wanted_leaves, num_items)
        if num_leaves < wanted_leaves:
            logger.info(
                "only %d items: building %d leaves, not %d", num_items, num_leaves, wanted_leaves
            )
        sample = min(required_field(config.training_sample_size, "training_sample_size"), num_items)
        threshold = config.anisotropic_quantization_threshold
        builder = (
            builder.tree(
                num_leaves=num_leaves,
                num_leaves_to_search=min(
                    required_field(config.num_leaves_to_search, "num_leaves_to_search"), num_leaves
                ),
                training_sample_size=sample,
            )
            .score_ah(
                config.dims_per_block,
                anisotropic_quantization_threshold=math.nan if threshold is None else threshold,
                training_sample_size=sample,
            )
            .reorder(required_field(config.reorder_k, "reorder_k"))
        )
    started = time.perf_counter()
    searcher = builder.build()
    logger.info(
        "built ScaNN (%s) over %d x %d in %.1f s",
        "brute force" if num_leaves is None else f"{num_leaves} leaves, AH, reorder",
        num_items,
        embeddings.shape[1],
        time.perf_counter() - started,
    )
    return searcher, num_leaves


def required_field(value: int | None, name: str) -> int:
    """Return a config field that `IndexConfig.resolve` has set; raise ValueError if None."""
    if value is None:
        raise ValueError(f"IndexConfig.{name} is None: call config.resolve(num_items) first")
    return value


def dataset_matches(path: Path, embeddings: np.ndarray) -> bool:
    """Whether ScaNN's serialized `dataset.npy` holds `embeddings` row for row."""
    if not path.is_file():
        return False
    stored = np.load(path, allow_pickle=False, mmap_mode="r")
    if stored.shape != embeddings.shape or stored.dtype != np.float32:
        return False
    sample = np.unique(np.linspace(0, embeddings.shape[0] - 1, 1024).astype(np.int64))
    return bool(np.array_equal(stored[sample], embeddings[sample]))


def load_searcher(scann_dir: Path, main_rows: int) -> Any:
    """Load ScaNN's files from `scann_dir`, checking it holds `main_rows` rows."""
    import scann  # imports TensorFlow (~7 s): only when an index is really loaded

    # read_manifest has refused any file not written by save(), so there is no
    # scann_docids.pkl here for load_searcher to unpickle.
    try:
        searcher = scann.scann_ops_pybind.load_searcher(
            str(scann_dir), assets_backcompat_shim=False
        )
    except (RuntimeError, ValueError) as error:
        raise IndexLoadError(scann_dir, f"ScaNN cannot load it: {error}") from error
    if searcher.size() != main_rows:
        raise IndexLoadError(
            scann_dir, f"ScaNN searcher holds {searcher.size()} rows, index.json {main_rows}"
        )
    return searcher

"""Candidate indexes for retrieval: exact numpy search and ScaNN, one interface, safe files.

Importing this package does not import ScaNN or TensorFlow; building or loading a ScaNN
index does.
"""

from recsys.index.base import (
    Index,
    IndexConfig,
    IndexLoadError,
    SearchResult,
    build_index,
    load_index,
)
from recsys.index.exact import ExactIndex, exact_top_k
from recsys.index.scann_index import ScannIndex
from recsys.index.tuning import TuneResult, TuneTrial, per_query_recall, recall_at_k, tune_scann

__all__ = [
    "ExactIndex",
    "Index",
    "IndexConfig",
    "IndexLoadError",
    "ScannIndex",
    "SearchResult",
    "TuneResult",
    "TuneTrial",
    "build_index",
    "exact_top_k",
    "load_index",
    "per_query_recall",
    "recall_at_k",
    "tune_scann",
]

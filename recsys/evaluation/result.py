"""What ``metrics.json`` holds: its file name and format, its precision, the methods' labels.

The evaluation writes the result and the report renders it; both read these definitions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

METRICS_FILE = "metrics.json"
METRICS_FORMAT = 1
DECIMALS = 4  # every metric in metrics.json and in the reports has this many decimals
METHOD_LABELS = {
    "model_exact": "Model (exact search)",
    "model_index": "Model (served index)",
    "compare_exact": "Compared model (exact search)",
    "most_popular": "Most popular",
    "trending": "Trending",
    "co_watch": "Item-to-item co-watch",
    "tfrs_basic": "TFRS basic (id-only two-tower)",
    "ease": "EASE (closed-form item-item)",
    "item_knn": "Item-kNN (cosine, 100 neighbours)",
    "oracle": "Oracle (true probabilities)",
}


def rounded(value: Any) -> Any:
    """Floats rounded to DECIMALS places, recursively (ints, strings and None unchanged).

    Non-finite floats become None (JSON has no NaN); numpy scalars become Python numbers.
    """
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, DECIMALS)
    if isinstance(value, np.floating):
        return rounded(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [rounded(v) for v in value]
    return value

"""recsys_data: dataset tooling (synthetic world, importers, oracle); installed from ``data/``."""

import recsys as _recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

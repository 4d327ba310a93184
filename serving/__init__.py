"""recsys_serving: the gRPC recommendation service; installed from ``serving/``."""

import recsys as _recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

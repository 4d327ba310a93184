"""recsys: a YouTube-style two-tower recommender (Covington et al. 2016; Yi et al. 2019).

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` so that TensorFlow, when it is first
imported anywhere in the process, loads tf-keras 2 (TensorFlow Recommenders refuses Keras 3).
TensorFlow itself is imported lazily, only by the modules that train or serve models.
"""

import os as _os

_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if _os.environ["TF_USE_LEGACY_KERAS"] != "1":  # pragma: no cover - depends on the caller's env
    raise ImportError(
        "recsys needs TF_USE_LEGACY_KERAS=1 (TensorFlow Recommenders does not support Keras 3); "
        f"the environment sets it to {_os.environ['TF_USE_LEGACY_KERAS']!r}."
    )
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

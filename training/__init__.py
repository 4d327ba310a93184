"""recsys_training: the training job (strategy, fit loop, checkpoints, export), from training/."""

import recsys as _recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

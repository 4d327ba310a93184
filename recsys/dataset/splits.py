"""Train/evaluation splits of watch events: ``time`` (a cut-off) and ``last`` (final watch).

Both splits hold out *watches*; contexts for a held-out watch are always built from events
strictly before it, exactly as a serving request at that moment would see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from recsys.dataset.schema import EVENT_WATCH

SplitName = Literal["time", "last"]
SPLITS: tuple[SplitName, ...] = ("time", "last")


@dataclass(frozen=True)
class Split:
    """How to split a dataset's watches into training and evaluation.

    ``time``: watches at or after ``cutoff`` (Unix seconds) are evaluated, earlier ones
    train; with no cutoff, the last ``eval_fraction`` of the time range is held out.
    ``last``: each user's final watch is evaluated (users with at least two watches).
    """

    name: SplitName = "time"
    cutoff: int | None = None
    eval_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.name!r}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")

    def resolve_cutoff(self, timestamps: np.ndarray) -> int:
        """The time cut-off for ``timestamps`` (Unix seconds): given, or from eval_fraction."""
        if self.cutoff is not None:
            return int(self.cutoff)
        if len(timestamps) == 0:
            raise ValueError("cannot split an empty event log")
        lo, hi = int(timestamps.min()), int(timestamps.max())
        return int(hi - (hi - lo) * self.eval_fraction)


def holdout_mask(events: pd.DataFrame, split: Split) -> np.ndarray:
    """Boolean mask over ``events`` rows: True for the watches held out for evaluation.

    ``events`` needs columns user_id, timestamp and type; ties in time keep row order.
    """
    is_watch = (events["type"] == EVENT_WATCH).to_numpy()
    ts = events["timestamp"].to_numpy()
    if split.name == "time":
        return is_watch & (ts >= split.resolve_cutoff(ts))
    watches = events.loc[is_watch, ["user_id", "timestamp"]]
    watches = watches.assign(_row=np.flatnonzero(is_watch))
    watches = watches.sort_values(["user_id", "timestamp", "_row"], kind="stable")
    last = ~watches["user_id"].duplicated(keep="last").to_numpy()
    counts = watches.groupby("user_id", sort=False)["_row"].transform("size").to_numpy()
    mask = np.zeros(len(events), dtype=bool)
    mask[watches["_row"].to_numpy()[last & (counts >= 2)]] = True
    return mask

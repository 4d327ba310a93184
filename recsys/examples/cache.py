"""Example builds reused across runs: one folder per (data, split, feature config, seed).

Training and evaluation both need the example shards of a dataset and split; building them
is the slow part, so :func:`prepare_examples` keys a build by what it is made from and
:func:`find_examples` looks for a matching build in other work folders.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from recsys.config import Config
from recsys.dataset.io import DatasetError, read_meta
from recsys.dataset.splits import Split
from recsys.examples.building import EXAMPLES_META, ExampleSet, build_examples
from recsys.logs import Progress, step

log = logging.getLogger(__name__)


def short_digest(payload: Any) -> str:
    """12 hex digits of the SHA-256 of ``payload`` as sorted JSON: a folder-name key."""
    raw = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:12]


def examples_key(fingerprint: str, split: Split, config: Config) -> str:
    """The key of the examples of a dataset (its fingerprint), split and config."""
    return short_digest(
        {
            "data": fingerprint,
            "split": [split.name, split.cutoff, split.eval_fraction],
            "features": config.features,
            "seed": config.train.seed,
        }
    )


def prepare_examples(
    data: Path,
    work: Path,
    split: Split,
    config: Config,
    progress: bool = True,
    runner: str | None = None,
    beam_args: Sequence[str] = (),
) -> tuple[Path, ExampleSet]:
    """Build the example shards for (dataset, split, feature config) in ``work``, or reuse them.

    ``runner`` None builds with the local builder; else with the Apache Beam pipeline on that
    runner ("local" or a Beam runner name, ``beam_args`` passed to Beam). Both write the same
    examples, so either reuses the other's. Returns the examples folder
    (``work/examples-<key>``) and what its ``examples.json`` says.
    """
    out = work / f"examples-{examples_key(read_meta(data).fingerprint, split, config)}"
    if (out / EXAMPLES_META).is_file():
        log.info("reusing examples in %s", out)
        return out, ExampleSet.load(out)
    if runner is not None:
        # Apache Beam takes seconds to import: only when a Beam runner is asked for.
        from recsys.examples.beam_building import build_examples_beam

        with step(f"building {split.name}-split examples from {data} on Beam ({runner})"):
            result = build_examples_beam(
                data,
                out,
                split,
                config.features,
                seed=config.train.seed,
                runner=runner,
                beam_args=beam_args,
            )
        return out, result
    with step(f"building {split.name}-split examples from {data}"):
        result = build_examples(
            data,
            out,
            split,
            config.features,
            seed=config.train.seed,
            progress=Progress("building examples", "partitions", enabled=progress),
        )
    return out, result


def check_examples(
    folder: str | Path, fingerprint: str, split: Split, config: Config
) -> ExampleSet:
    """What a given examples folder records, if it was built from this data, split and config.

    ``folder``: a path or URI (:func:`~recsys.examples.building.open_example_file`), e.g.
    where a Beam pipeline wrote. Raises ValueError naming each mismatch.
    """
    try:
        found = ExampleSet.load(folder)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{folder}: not a readable examples folder ({exc})") from exc
    wanted = {
        "data_fingerprint": fingerprint,
        "split": split.name,
        "feature_config": asdict(config.features),
        "seed": config.train.seed,
    }
    if split.cutoff is not None:
        wanted["cutoff"] = split.cutoff
    wrong = [key for key, value in wanted.items() if getattr(found, key) != value]
    if wrong:
        raise ValueError(
            f"{folder}: examples built with another {', '.join(wrong)} than this run's "
            "(rebuild them from this dataset with this config and split)"
        )
    return found


def find_examples(
    folders: Iterable[Path], fingerprint: str, split: Split, config: Config
) -> Path | None:
    """An existing examples folder under ``folders`` built from this data, split, features, seed.

    Matched by what each folder's ``examples.json`` records (not by folder name), so builds
    with another key for the same split are found too; unreadable folders are skipped.
    """
    want_features = asdict(config.features)
    for root in folders:
        if not root.is_dir():
            continue
        for meta_path in sorted(root.glob(f"examples-*/{EXAMPLES_META}")):
            try:
                found = ExampleSet.load(meta_path.parent)
            except (DatasetError, TypeError, ValueError, OSError):
                continue
            if (
                found.data_fingerprint == fingerprint
                and found.split == split.name
                and found.cutoff == split.cutoff
                and found.feature_config == want_features
                and found.seed == config.train.seed
            ):
                return meta_path.parent
    return None

"""Tests for recsys.examples.cache: one build per (data, split, features, seed), found again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from recsys.config import Config
from recsys.dataset.io import read_meta
from recsys.dataset.splits import Split
from recsys.examples.building import EXAMPLES_META
from recsys.examples.cache import find_examples, prepare_examples


def test_examples_are_built_once_and_found_by_what_they_were_built_from(
    tiny_world: Path, tmp_path: Path
) -> None:
    config = Config()
    work = tmp_path / "work"
    path, built = prepare_examples(tiny_world, work, Split("time"), config, progress=False)
    stamp = (path / EXAMPLES_META).stat().st_mtime_ns
    again, reused = prepare_examples(tiny_world, work, Split("time"), config, progress=False)
    assert (again, reused) == (path, built)
    assert (path / EXAMPLES_META).stat().st_mtime_ns == stamp  # reused, not rebuilt

    fingerprint = read_meta(tiny_world).fingerprint
    resolved = Split("time", cutoff=built.cutoff)  # as an artifact records its split
    assert find_examples([tmp_path / "missing", work], fingerprint, resolved, config) == path
    other_seed = dataclasses.replace(
        config, train=dataclasses.replace(config.train, seed=config.train.seed + 1)
    )
    assert find_examples([work], fingerprint, resolved, other_seed) is None
    assert find_examples([work], fingerprint, Split("last"), config) is None
    assert find_examples([work], "0" * 64, resolved, config) is None

"""Tests for recsys.examples.cache: one build per (data, split, features, seed), found again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from recsys.config import Config
from recsys.dataset.io import read_meta
from recsys.dataset.splits import Split
from recsys.examples.building import EXAMPLES_META
from recsys.examples.cache import check_examples, find_examples, prepare_examples


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


def test_a_given_examples_folder_is_checked_against_the_run(
    tiny_world: Path, tmp_path: Path
) -> None:
    config = Config()
    path, built = prepare_examples(tiny_world, tmp_path, Split("time"), config, progress=False)
    fingerprint = read_meta(tiny_world).fingerprint
    assert check_examples(str(path), fingerprint, Split("time"), config) == built
    other_seed = dataclasses.replace(
        config, train=dataclasses.replace(config.train, seed=config.train.seed + 1)
    )
    with pytest.raises(ValueError, match="another seed than this run's"):
        check_examples(path, fingerprint, Split("time"), other_seed)
    with pytest.raises(ValueError, match="another data_fingerprint, split than"):
        check_examples(path, "0" * 64, Split("last"), config)
    with pytest.raises(ValueError, match="not a readable examples folder"):
        check_examples(tmp_path / "missing", fingerprint, Split("time"), config)

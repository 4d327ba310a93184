"""The Apache Beam pipeline writes what the local builder writes, row for row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recsys.dataset.io import DatasetError
from recsys.dataset.splits import Split
from recsys.examples.beam_building import build_examples_beam
from recsys.examples.building import EXAMPLES_META, VOCAB_FILE, ExampleSet, build_examples
from recsys.features.contract import FeatureConfig
from tests.examples.test_building import CONFIG, random_world


def assert_same_examples(local: Path, beam: Path) -> ExampleSet:
    """Both folders hold the same examples.json, vocabularies and shards, row for row."""
    a, b = ExampleSet.load(local), ExampleSet.load(beam)
    assert a == b
    assert (local / VOCAB_FILE).read_text() == (beam / VOCAB_FILE).read_text()
    for name in a.train_shards + a.eval_shards:
        ta, tb = pq.read_table(local / name), pq.read_table(beam / name)
        assert ta.schema == tb.schema, name
        assert ta.num_rows == tb.num_rows, name
        assert ta.equals(tb), name  # every column, every row, in order
    assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in beam.iterdir())
    return a


def test_beam_equals_the_local_builder_on_the_tiny_world(tiny_world: Path, tmp_path: Path) -> None:
    capped = FeatureConfig(max_history=8, max_examples_per_user=20)
    split = Split("time")
    build_examples(tiny_world, tmp_path / "local", split, capped, seed=5, partitions=3)
    built = build_examples_beam(tiny_world, tmp_path / "beam", split, capped, seed=5, partitions=3)
    result = assert_same_examples(tmp_path / "local", tmp_path / "beam")
    assert built == result
    # Three partitions, each with its own shards: the comparison covered all of them.
    assert {name.split("-")[1] for name in result.train_shards} == {"00000", "00001", "00002"}
    assert result.counts["train"] > 1000
    assert result.counts["eval"] > 100
    assert not list(tmp_path.glob(".beam.tmp-*"))  # the temporary folder was renamed


def test_beam_equals_the_local_builder_with_same_second_ties(tmp_path: Path) -> None:
    """A world on an hourly grid: a user's events tie often, so their order must match."""
    world = random_world(tmp_path / "world")
    build_examples(world, tmp_path / "local", Split("last"), CONFIG, seed=3, partitions=2)
    build_examples_beam(world, tmp_path / "beam", Split("last"), CONFIG, seed=3, partitions=2)
    result = assert_same_examples(tmp_path / "local", tmp_path / "beam")
    assert result.counts["eval"] > 0


def test_beam_replaces_an_older_build(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "ex"
    build_examples_beam(tiny_world, out, Split("time"), CONFIG, partitions=2)
    (out / "stale.parquet").write_bytes(b"old")
    again = build_examples_beam(tiny_world, out, Split("time"), CONFIG, partitions=1)
    assert not (out / "stale.parquet").exists()
    assert ExampleSet.load(out) == again
    assert again.train_shards == ["train-00000-00000.parquet"]


def test_beam_names_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"dataset\.json: missing"):
        build_examples_beam(tmp_path, tmp_path / "out", Split("time"))
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def _recsys(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recsys.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_builds_on_beam_and_keeps_beams_noise_out(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "ex"
    proc = _recsys(
        "examples",
        "build",
        "--data",
        str(tiny_world),
        "--out",
        str(out),
        "--runner",
        "local",
        "--beam-arg=--direct_num_workers=1",
        "--partitions",
        "2",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / EXAMPLES_META).is_file()
    assert '"train_shards"' in proc.stdout
    assert "Beam runner local" in proc.stderr
    assert "apitools" not in proc.stderr  # Beam's import warning is filtered
    assert "apache_beam" not in proc.stderr  # Beam's INFO lines only with -v


def test_cli_refuses_beam_options_without_a_runner(tiny_world: Path, tmp_path: Path) -> None:
    proc = _recsys(
        "examples",
        "build",
        "--data",
        str(tiny_world),
        "--out",
        str(tmp_path / "ex"),
        "--beam-arg=--project=p",
    )
    assert proc.returncode == 2
    assert "--beam-arg needs --runner" in proc.stderr
    assert not (tmp_path / "ex").exists()


def test_train_refuses_a_runner_for_examples_already_built(tmp_path: Path) -> None:
    proc = _recsys(
        "train",
        "--data",
        str(tmp_path / "data"),
        "--artifacts",
        str(tmp_path / "artifacts"),
        "--examples",
        str(tmp_path / "examples"),
        "--runner",
        "local",
    )
    assert proc.returncode == 2
    assert "--examples trains on examples already built: drop --runner" in proc.stderr

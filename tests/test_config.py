"""Tests for recsys.config: defaults, TOML loading, dotted overrides, errors, round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.config import Config, ModelConfig, TrainConfig, load_config
from recsys.features.contract import FeatureConfig


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_design() -> None:
    config = load_config(None, [])
    assert config == Config()
    assert config.model.query_layers == (256, 128)
    assert config.model.embedding_dim == 128  # the last layer of both towers
    assert config.model.temperature == 0.05
    assert config.model.logq_correction is True
    assert config.model.remove_accidental_hits is True
    assert config.model.num_uniform_negatives == 0
    assert config.model.dropout == 0.0
    assert config.train.batch_size == 1024
    assert config.train.optimizer == "adagrad"
    assert config.train.mixed_precision is False
    assert config.features == FeatureConfig()


def test_toml_file_and_typed_overrides(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[model]
query_layers = [64, 32]
candidate_layers = [48, 32]
temperature = 0.1
use_searches = false

[train]
batch_size = 256
optimizer = "adam"

[features]
max_history = 20
""",
    )
    config = load_config(
        path,
        [
            "model.temperature=0.2",  # overrides the file's 0.1
            "train.optimizer=adagrad",  # a bare word is a string
            "train.learning_rate=1",  # an int where a float is declared becomes 1.0
            "model.num_uniform_negatives=128",
            "features.max_examples_per_user=none",  # int | None
            "train.recall_ks=5,10",  # comma list for a tuple
            "model.use_demographics=False",
        ],
    )
    assert config.model.query_layers == (64, 32)
    assert config.model.candidate_layers == (48, 32)
    assert config.model.temperature == 0.2
    assert config.model.use_searches is False
    assert config.model.use_demographics is False
    assert config.model.num_uniform_negatives == 128
    assert config.train.batch_size == 256
    assert config.train.optimizer == "adagrad"
    assert config.train.learning_rate == 1.0
    assert isinstance(config.train.learning_rate, float)
    assert config.train.recall_ks == (5, 10)
    assert config.features.max_history == 20
    assert config.features.max_examples_per_user is None


def test_overrides_are_checked_together() -> None:
    # Changing both towers' widths takes two overrides; the first alone would disagree with
    # the default candidate_layers, which must not be an error.
    config = load_config(None, ["model.query_layers=[32,16]", "model.candidate_layers=[16]"])
    assert config.model.embedding_dim == 16


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.temprature=0.1", "unknown key model.temprature"),
        ("modle.temperature=0.1", "unknown section 'modle'"),
        ("temperature=0.1", "must look like section.key=value"),
        ("model.temperature", "must look like section.key=value"),
        ("model.temperature=hot", "expected a finite number, got 'hot'"),
        ("model.temperature=nan", "expected a finite number, got nan"),
        ("train.batch_size=1.5", "expected an integer, got 1.5"),
        ("model.use_searches=maybe", "expected true or false"),
        ("model.query_layers=7", "expected a list"),
        ("train.optimizer=sgd", "train.optimizer must be one of"),
        ("model.temperature=0", "model.temperature must be positive"),
        ("model.query_layers=[64]", "must end in the same width"),
    ],
)
def test_bad_overrides_name_the_problem(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(None, [override])


def test_bad_file_names_file_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "[model]\nwidth = 3\n")
    with pytest.raises(ValueError, match=r"config\.toml.*unknown key\(s\) \['model\.width'\]"):
        load_config(path, [])
    path = _write(tmp_path, "[trainer]\nepochs = 3\n")
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['trainer'\]"):
        load_config(path, [])
    path = _write(tmp_path, "[model\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(path, [])
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.toml", [])


def test_to_dict_round_trips_through_json() -> None:
    config = Config(
        model=ModelConfig(query_layers=(8, 4), candidate_layers=(4,), use_content=False),
        train=TrainConfig(epochs=2, intra_op_threads=1),
        features=FeatureConfig(max_examples_per_user=None),
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert data["model"]["query_layers"] == [8, 4]  # tuples become lists
    assert Config.from_dict(data) == config


def test_configs_are_frozen() -> None:
    config = ModelConfig()
    with pytest.raises(AttributeError):
        config.temperature = 1.0  # type: ignore[misc]

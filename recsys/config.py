"""Model and training configuration: frozen dataclasses, loaded from TOML, overridable by flags.

A config file has up to three tables, ``[model]``, ``[train]`` and ``[features]``; every key is
optional and defaults to the values below, which work on the embedded synthetic world.
Command-line overrides use dotted keys, ``model.temperature=0.1`` or
``model.query_layers=[128,64]``; values are parsed as TOML (falling back to the bare text, so
``train.optimizer=adam`` works) and converted to the field's declared type.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.features.contract import FeatureConfig

OPTIMIZERS = ("adagrad", "adam")
PROFILES_UNTIL = ("end", "cutoff")


def _check_positive(owner: str, **values: float) -> None:
    """Raise ValueError naming the first non-positive value."""
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{owner}.{name} must be positive, got {value}")


def _check_layers(owner: str, name: str, layers: tuple[int, ...]) -> None:
    """Raise ValueError unless ``layers`` is a non-empty tuple of positive widths."""
    if not layers or any(w <= 0 for w in layers):
        raise ValueError(
            f"{owner}.{name} must be a non-empty list of positive widths, got {layers}"
        )


@dataclass(frozen=True)
class ModelConfig:
    """The two towers and the retrieval loss (Covington et al. 2016; Yi et al. 2019).

    ``query_layers`` / ``candidate_layers`` are the widths of each tower's dense stack: ReLU
    layers, then a linear last layer whose width is the embedding dimension (the two must
    agree). The ``use_*`` toggles drop groups of inputs for ablations. ``frequency_*`` set the
    streaming item-frequency estimate used for the logQ correction.

    ``freshness`` keeps the embeddings' last coordinate for a learned function of a video's
    upload age *at the query's time*: in training every (query, candidate) pair of the batch
    gets the candidate's age at the start of that query's day, and candidates not yet
    uploaded then are masked out, so in-batch negatives teach how watch odds fall with age
    (the candidate's age at its own watch would carry no such signal).
    """

    item_embedding_dim: int = 64
    token_embedding_dim: int = 32
    geo_embedding_dim: int = 16
    gender_embedding_dim: int = 4
    channel_embedding_dim: int = 32
    category_embedding_dim: int = 16
    content_projection_dim: int = 64
    query_layers: tuple[int, ...] = (256, 128)
    candidate_layers: tuple[int, ...] = (256, 128)
    dropout: float = 0.0
    # Share of training candidates whose video id is replaced by out-of-vocabulary, so the
    # candidate tower learns to embed a video from its content alone (fresh uploads).
    item_id_dropout: float = 0.0
    temperature: float = 0.05
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    num_uniform_negatives: int = 0
    frequency_alpha: float = 0.01
    frequency_buckets: int = 1 << 20
    frequency_hashes: int = 1
    use_searches: bool = True
    use_demographics: bool = True
    use_example_age: bool = True
    use_recency: bool = True
    use_content: bool = True
    use_content_embedding: bool = True
    freshness: bool = False

    def __post_init__(self) -> None:
        _check_positive(
            "model",
            item_embedding_dim=self.item_embedding_dim,
            token_embedding_dim=self.token_embedding_dim,
            geo_embedding_dim=self.geo_embedding_dim,
            gender_embedding_dim=self.gender_embedding_dim,
            channel_embedding_dim=self.channel_embedding_dim,
            category_embedding_dim=self.category_embedding_dim,
            content_projection_dim=self.content_projection_dim,
            temperature=self.temperature,
            frequency_buckets=self.frequency_buckets,
            frequency_hashes=self.frequency_hashes,
        )
        _check_layers("model", "query_layers", self.query_layers)
        _check_layers("model", "candidate_layers", self.candidate_layers)
        if self.query_layers[-1] != self.candidate_layers[-1]:
            raise ValueError(
                "model.query_layers and model.candidate_layers must end in the same width "
                f"(the embedding dimension), got {self.query_layers[-1]} and "
                f"{self.candidate_layers[-1]}"
            )
        if self.freshness and self.query_layers[-1] < 2:
            raise ValueError(
                "model.freshness keeps one embedding coordinate for upload age: the embedding "
                f"dimension must be at least 2, got {self.query_layers[-1]}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.item_id_dropout < 1.0:
            raise ValueError(f"model.item_id_dropout must be in [0, 1), got {self.item_id_dropout}")
        if not 0.0 < self.frequency_alpha <= 1.0:
            raise ValueError(f"model.frequency_alpha must be in (0, 1], got {self.frequency_alpha}")
        if self.num_uniform_negatives < 0:
            raise ValueError(
                f"model.num_uniform_negatives must be >= 0, got {self.num_uniform_negatives}"
            )

    @property
    def embedding_dim(self) -> int:
        """Width of the query and candidate embeddings (the towers' last layer)."""
        return self.query_layers[-1]


@dataclass(frozen=True)
class TrainConfig:
    """The training loop: batch size, epochs, optimizer, seed and performance switches.

    The loss is the mean over the global batch, so ``learning_rate`` does not depend on the
    batch size or the number of replicas. ``recall_ks`` are the K of the recall@K computed on
    the validation queries after every epoch. ``profiles_until``: the exported user profiles
    hold every event of the dataset ("end"), or only those before the time split's cut-off
    ("cutoff": the artifact is a snapshot at the cut-off, and later events reach serving
    through the live profile store, as in an online evaluation of the window).
    """

    batch_size: int = 1024
    epochs: int = 5
    learning_rate: float = 0.1
    optimizer: str = "adagrad"
    seed: int = 42
    mixed_precision: bool = False
    steps_per_execution: int = 1
    recall_ks: tuple[int, ...] = (10, 50, 100)
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    profiles_until: str = "end"

    def __post_init__(self) -> None:
        if self.profiles_until not in PROFILES_UNTIL:
            raise ValueError(
                f"train.profiles_until must be one of {PROFILES_UNTIL}, got {self.profiles_until!r}"
            )
        _check_positive(
            "train",
            batch_size=self.batch_size,
            epochs=self.epochs,
            learning_rate=self.learning_rate,
            steps_per_execution=self.steps_per_execution,
        )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        _check_layers("train", "recall_ks", self.recall_ks)
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(
                    f"train.{name} must be >= 0 (0 = TensorFlow's choice), got {value}"
                )


@dataclass(frozen=True)
class Config:
    """Everything a training run needs besides the data: model, training loop, feature windows."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """A JSON- and TOML-friendly nested dict (tuples become lists); inverse of from_dict."""
        return {
            name: {
                f.name: _plain(getattr(getattr(self, name), f.name))
                for f in dataclasses.fields(getattr(self, name))
            }
            for name in _SECTIONS
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> Config:
        """Build a Config from a nested dict such as ``to_dict()``'s or a parsed TOML file."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a table of sections, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise ValueError(
                f"{source}: unknown section(s) {unknown}; valid sections are {list(_SECTIONS)}"
            )
        sections: dict[str, Any] = {}
        for name, section_cls in _SECTIONS.items():
            values = data.get(name, {})
            if not isinstance(values, Mapping):
                raise ValueError(f"{source}: [{name}] must be a table, got {values!r}")
            sections[name] = _build_section(section_cls, name, values, source)
        return cls(**sections)


_SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig, "features": FeatureConfig}


def load_config(path: Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read ``path`` (TOML; None for the defaults) and apply ``section.key=value`` overrides.

    Raises ValueError naming the file or override, the key and the accepted values when
    something is unknown or has the wrong type.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError as exc:
            raise ValueError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {path} is not valid TOML: {exc}") from exc
    for override in overrides:
        section, key, value = _parse_override(override)
        fields = [f.name for f in dataclasses.fields(_SECTIONS[section])]
        if key not in fields:
            raise ValueError(
                f"override {override!r}: unknown key {section}.{key}; "
                f"valid keys in [{section}] are {fields}"
            )
        # Convert now so that a type error names this override; cross-field checks (such as
        # the two towers' output widths) run once all overrides are in.
        hint = typing.get_type_hints(_SECTIONS[section])[key]
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ValueError(f"{source}: [{section}] must be a table, got {table!r}")
        table[key] = _convert(value, hint, f"override {override!r}")
    if overrides:
        source = f"{source} with overrides {list(overrides)}"
    return Config.from_dict(data, source)


def _parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value`` into its parts; the value is parsed as TOML if it can be."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ValueError(
            f"override {text!r} must look like section.key=value, e.g. model.temperature=0.1"
        )
    if section not in _SECTIONS:
        raise ValueError(
            f"override {text!r}: unknown section {section!r}; valid sections are {list(_SECTIONS)}"
        )
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # bare words: train.optimizer=adam, features.max_examples_per_user=none
    return section, name, value


def _build_section(cls: type, section: str, values: Mapping[str, Any], source: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values``, converting each to its declared type."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {[f'{section}.{k}' for k in unknown]}; "
            f"valid keys in [{section}] are {names}"
        )
    kwargs = {
        key: _convert(value, hints[key], f"{source}: {section}.{key}")
        for key, value in values.items()
    }
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a TOML or command-line value to type ``tp``; ValueError says what was expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))
        ):
            return None
        (inner,) = [a for a in args if a is not type(None)]  # only `X | None` is used
        return _convert(value, inner, where)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list like [256, 128], got {value!r}")
        return tuple(_convert(v, args[0], where) for v in value)
    if tp not in _SCALARS:
        raise TypeError(f"{where}: unsupported config field type {tp!r}")  # a bug in this module
    converted = _SCALARS[tp](value)
    if converted is None:
        raise ValueError(f"{where}: expected {_EXPECTED[tp]}, got {value!r}")
    return converted


_BOOLS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _to_bool(value: Any) -> bool | None:
    """A bool, or None when ``value`` is not one (strings: true/false, yes/no, 1/0)."""
    if isinstance(value, str):
        value = _BOOLS.get(value.strip().lower())
    return value if isinstance(value, bool) else None


def _to_int(value: Any) -> int | None:
    """An int, or None when ``value`` is not one (bools and fractions are not)."""
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        value = int(value.strip())
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _to_float(value: Any) -> float | None:
    """A finite float, or None when ``value`` is not one (ints are widened)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(value)


def _to_str(value: Any) -> str | None:
    """``value`` if it is a string, else None."""
    return value if isinstance(value, str) else None


_SCALARS: dict[Any, Any] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}
_EXPECTED = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, for JSON and TOML."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
